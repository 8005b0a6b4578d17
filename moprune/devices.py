"""Where networks run: device names, what this machine has, and mixed precision.

Every function that runs a network takes ``device=`` (default ``"auto"``) and resolves it here:
``"auto"`` (CUDA if available, then Apple's MPS, then the CPU), ``"cpu"``, ``"cuda"``,
``"cuda:N"``, ``"mps"`` or a ``torch.device``. A device this machine does not have is refused
with an error naming the argument and the devices that are available.

Example:
    >>> resolve_device("auto")
    device(type='cpu')
    >>> available_devices()
    ['cpu']
"""

from typing import List, Optional, Union

import torch

from moprune.exceptions import invalid_value

__all__ = ["AMP_CHOICES", "DEVICE_CHOICES", "Device", "available_devices", "check_amp", "resolve_device"]

Device = Union[str, torch.device]
"""What a ``device=`` argument accepts: one of :data:`DEVICE_CHOICES` or a ``torch.device``."""

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""The device names accepted (``cuda:N`` stands for ``cuda:0``, ``cuda:1``, ...)."""

AMP_CHOICES = (None, "bf16", "fp16")
"""Mixed-precision modes of evaluation (CUDA only)."""

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> List[str]:
    """The devices this machine can run networks on: ``cuda:0`` ... then ``mps``, then ``cpu``."""
    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(device: Optional[Device] = "auto", name: str = "device") -> torch.device:
    """The ``torch.device`` a ``device=`` argument names, checked against this machine.

    Args:
        device: ``"auto"`` or ``None`` (CUDA if available, then MPS, then the CPU), ``"cpu"``,
            ``"cuda"`` (the current CUDA device), ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        name: The argument's name, for the error message.

    Returns:
        A ``torch.device`` (``cuda`` always with its index).

    Raises:
        MopruneValueError: an unknown name, or a device this machine does not have (the
            message names the argument and lists the available devices).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, str):
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            raise invalid_value(name, f"one of {list(DEVICE_CHOICES)} or a torch.device", device) from None
    elif isinstance(device, torch.device):
        parsed = device
    else:
        raise invalid_value(name, f"one of {list(DEVICE_CHOICES)} or a torch.device", device)
    here = available_devices()
    if parsed.type == "cpu":
        return torch.device("cpu")
    if parsed.type == "cuda":
        if torch.cuda.is_available():
            index = torch.cuda.current_device() if parsed.index is None else parsed.index
            if index < torch.cuda.device_count():
                return torch.device("cuda", index)
        raise invalid_value(name, f"a device this machine has ({', '.join(here)}) or 'auto'",
                            str(device) if isinstance(device, torch.device) else device)
    if parsed.type == "mps":
        if _mps_available():
            return torch.device("mps")
        raise invalid_value(name, f"a device this machine has ({', '.join(here)}) or 'auto'",
                            str(device) if isinstance(device, torch.device) else device)
    raise invalid_value(name, f"one of {list(DEVICE_CHOICES)} or a torch.device", device)


def check_amp(amp: Optional[str], device: torch.device, name: str = "amp") -> Optional[torch.dtype]:
    """The autocast dtype of an ``amp=`` argument on ``device`` (``None``: full precision).

    Raises:
        MopruneValueError: ``amp`` is not one of :data:`AMP_CHOICES`, or is set for a device
            other than CUDA.
    """
    if amp is None:
        return None
    if not isinstance(amp, str) or amp not in _AMP_DTYPES:
        raise invalid_value(name, f"one of {list(AMP_CHOICES)}", amp)
    if device.type != "cuda":
        raise invalid_value(name, f"None on device {str(device)!r} (mixed precision is for CUDA devices)", amp)
    return _AMP_DTYPES[amp]
