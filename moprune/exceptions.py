"""The exceptions moprune raises.

Every error the library raises on purpose derives from :class:`MopruneError`, so callers can
catch all of them at once; bad arguments also derive from :class:`ValueError`.
"""


class MopruneError(Exception):
    """Base class of every error moprune raises on purpose."""


class MopruneValueError(ValueError, MopruneError):
    """An argument has a value outside what is allowed."""


class ConflictingArgumentsError(MopruneValueError, TypeError):
    """Arguments that are each valid but cannot be given together (e.g. ``n_gen`` and ``n_evals``).

    It is also a ``TypeError``, as Python raises for a call whose arguments do not fit together.
    Built by :func:`moprune.validation.conflict`.
    """


class TrainingDivergedError(MopruneError, FloatingPointError):
    """Training's loss became non-finite or exploded (usually: the learning rate is too high)."""


class DataError(MopruneError):
    """A data file is missing, corrupt or malformed."""


def invalid_value(name: str, allowed: str, received: object) -> MopruneValueError:
    """Build the standard "bad argument" error.

    Args:
        name: Name of the argument, as the user wrote it.
        allowed: Human-readable description of the allowed values.
        received: The value that came.

    Returns:
        A :class:`MopruneValueError` naming the argument, what is allowed and what came.
    """
    return MopruneValueError(f"{name} must be {allowed}; got {received!r}")
