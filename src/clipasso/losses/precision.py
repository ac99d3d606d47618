"""The arithmetic of the CLIP passes: where bf16 is fast, and the accuracy guard of ``"auto"``.

``precision="auto"`` uses bf16 autocast only where the device has fast bf16 (CUDA with bf16
support, or a CPU with AVX512-BF16/AMX) and only after a check: on the first call, the input
gradients of the un-augmented loss are computed in fp32 and in bf16, and bf16 is kept only if their
cosine is at least ``min_cosine`` for every sketch; otherwise fp32, with a warning. Every CLIP loss
that offers ``precision`` shares this rule (:func:`choose_precision`).

Example:
    >>> choose_precision("fp32", torch.device("cpu"), lambda: [1.0], 0.97)
    ('fp32', [])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch

__all__ = ["Precision", "bf16_supported", "check_precision", "choose_precision"]

Precision = Literal["fp32", "bf16", "auto"]


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 autocast is fast: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def check_precision(precision: object) -> Precision:
    """``precision`` if it is ``"fp32"``, ``"bf16"`` or ``"auto"``; else :class:`~clipasso.InputError`."""
    from ..errors import InputError

    if precision not in ("fp32", "bf16", "auto"):
        raise InputError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    return precision


def choose_precision(
    requested: Precision,
    device: torch.device,
    cosines: Callable[[], list[float]],
    min_cosine: float,
    owner: str = "CLIPConvLoss",
) -> tuple[Literal["fp32", "bf16"], list[float]]:
    """The precision to run in, and the guard's per-sketch cosines (empty when no check ran).

    Args:
        requested: ``"fp32"``, ``"bf16"`` (taken as asked) or ``"auto"``.
        device: Where the loss runs.
        cosines: Computes the per-sketch cosines between fp32 and bf16 input gradients (called only
            for ``"auto"`` on a device with fast bf16).
        min_cosine: The least cosine for bf16 to be kept.
        owner: The loss named in the warning.
    """
    if requested != "auto":
        return requested, []
    if not bf16_supported(device):
        return "fp32", []
    found = cosines()
    if all(c >= min_cosine for c in found):
        return "bf16", found
    warnings.warn(
        f"{owner}(precision='auto'): bf16 input gradients agree with fp32 only to a cosine of "
        f"{min(found):.4f} (< bf16_min_cosine={min_cosine}); using fp32",
        RuntimeWarning,
        stacklevel=4,
    )
    return "fp32", found
