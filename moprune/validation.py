"""Argument checks: one rule per kind of value, one message format, one error for conflicts.

Every ``check_*`` function returns the value normalised (``int``, ``float``, ``bool``, ``dict``)
or raises :class:`moprune.exceptions.MopruneValueError` with the one message format of the
library, ``"<name> must be <what is allowed>; got <what came>"``. Arguments that are each fine
but cannot be given together raise :class:`moprune.exceptions.ConflictingArgumentsError`
(built by :func:`conflict`), whatever the module.

The rules:

- an **int** is an ``int`` or a numpy integer, never a ``bool``;
- a **real number** is any real (int, float, numpy), never a ``bool``, and always finite;
- a **probability** is a real number in ``[0, 1]`` (or ``(0, 1]``);
- a **seed** is an int >= 0 (what ``numpy.random.default_rng`` and pymoo accept), everywhere;
- a **population size** is an int >= 1, or more where an algorithm needs pairs to mate;
- a **flag** is ``True`` or ``False``, nothing truthy;
- a **choice** is one of a listed set of values.

Example:
    >>> check_int("n_gen", 3, low=1)
    3
    >>> check_real("lr", 0, low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    moprune.exceptions.MopruneValueError: lr must be a finite real number > 0.0; got 0
"""

import numbers
from typing import Any, Callable, Collection, Dict, Optional, Sequence, TypeVar

import numpy as np

from moprune.exceptions import ConflictingArgumentsError, invalid_value

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_dict",
    "check_int",
    "check_pop_size",
    "check_probability",
    "check_real",
    "check_seed",
    "conflict",
]

T = TypeVar("T")


def _or_none(allowed: str, allow_none: bool) -> str:
    return f"None or {allowed}" if allow_none else allowed


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, *, low: Optional[int] = None, high: Optional[int] = None,
              allow_none: bool = False) -> Optional[int]:
    """An int in ``[low, high]`` (either bound optional), as a Python ``int``.

    Args:
        name: The argument's name, as the user wrote it.
        value: The value received.
        low: Smallest allowed value (``None``: no bound).
        high: Largest allowed value (``None``: no bound).
        allow_none: Accept ``None`` (returned as is).

    Returns:
        ``int(value)``, or ``None``.

    Raises:
        MopruneValueError: Not an int (bools are not), or out of bounds.
    """
    if value is None and allow_none:
        return None
    if low is not None and high is not None:
        allowed = f"an int in [{low}, {high}]"
    elif low is not None:
        allowed = f"an int >= {low}"
    elif high is not None:
        allowed = f"an int <= {high}"
    else:
        allowed = "an int"
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise invalid_value(name, _or_none(allowed, allow_none), value)
    return int(value)


def check_real(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
               low_open: bool = False, high_open: bool = False, allow_none: bool = False,
               unit: Optional[str] = None) -> Optional[float]:
    """A finite real number within optional (open or closed) bounds, as a Python ``float``.

    Args:
        name: The argument's name.
        value: The value received.
        low: Lower bound (``None``: none).
        high: Upper bound (``None``: none).
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.
        allow_none: Accept ``None`` (returned as is).
        unit: What the number counts, said in the message (e.g. ``"accuracy points"``).

    Returns:
        ``float(value)``, or ``None``.

    Raises:
        MopruneValueError: Not a real number (bools are not), not finite, or out of bounds.
    """
    if value is None and allow_none:
        return None
    if low is not None and high is not None:
        allowed = f"a real number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"a finite real number {'>' if low_open else '>='} {low}"
    elif high is not None:
        allowed = f"a finite real number {'<' if high_open else '<='} {high}"
    else:
        allowed = "a finite real number"
    if unit:
        allowed += f" ({unit})"
    allowed = _or_none(allowed, allow_none)
    if not _is_real(value) or not np.isfinite(float(value)):
        raise invalid_value(name, allowed, value)
    x = float(value)
    if low is not None and (x < low or (low_open and x == low)):
        raise invalid_value(name, allowed, value)
    if high is not None and (x > high or (high_open and x == high)):
        raise invalid_value(name, allowed, value)
    return x


def check_probability(name: str, value: Any, *, allow_zero: bool = True,
                      allow_none: bool = False) -> Optional[float]:
    """A probability: a real number in ``[0, 1]`` (``(0, 1]`` without ``allow_zero``).

    Raises:
        MopruneValueError: Not a real number or outside the interval.
    """
    if value is None and allow_none:
        return None
    allowed = _or_none(f"a probability in {'[' if allow_zero else '('}0, 1]", allow_none)
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0 or (not allow_zero and float(value) == 0.0):
        raise invalid_value(name, allowed, value)
    return float(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: an int >= 0, the same rule for every seed of the library.

    Raises:
        MopruneValueError: Not an int, or negative.
    """
    return check_int(name, value, low=0)


def check_pop_size(value: Any, *, minimum: int = 1) -> int:
    """A population size: an int >= ``minimum`` (1; algorithms that mate pairs ask for 2).

    Raises:
        MopruneValueError: Not an int, or below ``minimum``.
    """
    return check_int("pop_size", value, low=minimum)


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy bools too; not ``1``, ``"yes"`` or ``None``).

    Raises:
        MopruneValueError: Anything else.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise invalid_value(name, "True or False", value)
    return bool(value)


def check_choice(name: str, value: T, choices: Collection[Any]) -> T:
    """``value`` if it is one of ``choices`` (compared with ``==``; bools only match bools).

    Raises:
        MopruneValueError: Not one of them; the message lists them.
    """
    for choice in choices:
        if isinstance(value, (bool, np.bool_)) == isinstance(choice, bool) and value == choice:
            return value
    raise invalid_value(name, f"one of {list(choices)}", value)


def check_callable(name: str, value: Any, signature: str, *, allow_none: bool = True) -> Optional[Callable]:
    """A callable (``None`` allowed by default); ``signature`` says how it is called.

    Raises:
        MopruneValueError: Not callable.
    """
    if value is None and allow_none:
        return None
    if not callable(value):
        raise invalid_value(name, _or_none(f"a callable {signature}", allow_none), value)
    return value


def check_dict(name: str, value: Any, *, allow_none: bool = True) -> Dict[str, Any]:
    """A dict of keyword arguments, returned as a new dict (``None`` gives ``{}``).

    Raises:
        MopruneValueError: Not a dict (or ``None`` when not allowed).
    """
    if value is None and allow_none:
        return {}
    if not isinstance(value, dict):
        raise invalid_value(name, _or_none("a dict", allow_none), value)
    return dict(value)


def conflict(names: Sequence[str], allowed: str, received: Any) -> ConflictingArgumentsError:
    """Build the error for arguments that cannot be given together.

    Args:
        names: The arguments involved.
        allowed: What is allowed, e.g. ``"exactly one of them set"``.
        received: What came (usually the tuple of their values).

    Returns:
        A :class:`~moprune.exceptions.ConflictingArgumentsError` (a ``MopruneValueError`` and a
        ``TypeError``), with the standard message naming the arguments.
    """
    return ConflictingArgumentsError(f"{', '.join(names)} must be {allowed}; got {received!r}")
