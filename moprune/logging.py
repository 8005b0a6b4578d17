"""The library's logger: moprune never prints, it logs.

Example:
    >>> import moprune
    >>> moprune.set_verbosity("INFO")
"""

import logging as _logging
import sys
from typing import Optional, Union

from moprune.exceptions import invalid_value

_LOGGER_NAME = "moprune"
_LEVELS = {
    "DEBUG": _logging.DEBUG,
    "INFO": _logging.INFO,
    "WARNING": _logging.WARNING,
    "ERROR": _logging.ERROR,
}


def get_logger(name: Optional[str] = None) -> _logging.Logger:
    """Return the library logger or one of its children (``moprune.<name>``)."""
    logger = _logging.getLogger(_LOGGER_NAME if name is None else f"{_LOGGER_NAME}.{name}")
    return logger


def set_verbosity(level: Union[str, int]) -> None:
    """Set the verbosity of moprune's logger and attach a stderr handler once.

    Args:
        level: One of ``"DEBUG"``, ``"INFO"``, ``"WARNING"``, ``"ERROR"`` or a ``logging`` level int.
    """
    if isinstance(level, str):
        if level.upper() not in _LEVELS:
            raise invalid_value("level", f"one of {sorted(_LEVELS)}", level)
        level = _LEVELS[level.upper()]
    elif not isinstance(level, int) or isinstance(level, bool):
        raise invalid_value("level", f"one of {sorted(_LEVELS)} or a logging level int", level)
    logger = get_logger()
    logger.setLevel(level)
    if not any(getattr(h, "_moprune", False) for h in logger.handlers):
        handler = _logging.StreamHandler(sys.stderr)
        handler.setFormatter(_logging.Formatter("[moprune %(levelname)s] %(message)s"))
        handler._moprune = True
        logger.addHandler(handler)
