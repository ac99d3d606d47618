"""Which device a run uses.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else MPS if available, else CPU; anything else as given."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(spec, str):
        raise InputError(f"device must be a string or torch.device, got {type(spec).__name__}")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"invalid device {spec!r}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {spec!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {spec!r}: this machine has {count} CUDA device(s) (0 to {count - 1})")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device {spec!r}: MPS is not available on this machine (use 'cpu' or 'auto')")
    return device
