"""Name -> object registries for the edges of the library (CLI, config files).

Strings such as ``"nsga2"`` or ``"mnist_cnn"`` are resolved here and nowhere else, so an unknown
name always gets the same clear error listing the choices.
"""

from moprune.exceptions import MopruneValueError


class Registry:
    """A named mapping from strings to factories.

    Args:
        kind: What is registered, used in error messages (e.g. ``"model"``).
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name=None):
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""

        def decorator(obj):
            key = name or obj.__name__
            if key in self._entries:
                raise MopruneValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name):
        """Return the entry registered as ``name``; unknown names raise listing the choices."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise MopruneValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self):
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries
