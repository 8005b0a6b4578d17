"""The single version string of moprune (read by setup.cfg)."""

__version__ = "0.1.0"
