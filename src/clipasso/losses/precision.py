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

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

__all__ = [
    "BF16Tower",
    "Precision",
    "bf16_supported",
    "check_precision",
    "choose_precision",
    "tensor_key",
    "weight_copy",
]

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


#: Modules whose weights bf16 autocast casts to bf16 on every call (their ops are on autocast's
#: lower-precision list: convolutions and linear layers).
_CAST_MODULES = (nn.Conv2d, nn.Linear)


def weight_copy(
    tower: nn.Module, dtype: torch.dtype | None, replace: Mapping[int, torch.Tensor] | None = None
) -> nn.Module:
    """A deep copy of ``tower`` that shares every parameter and buffer with it except the
    convolution and linear weights and biases: those are frozen copies in ``dtype`` (None: their
    own; shared where already in it), and a weight whose ``id`` is in ``replace`` takes those values
    instead (cast to the same dtype).

    Example:
        >>> tower = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> out = weight_copy(tower, torch.bfloat16)
        >>> out[0].weight.dtype, out[1].weight is tower[1].weight
        (torch.bfloat16, True)
    """
    replace = replace or {}
    memo: dict[int, object] = {}
    for p in tower.parameters():  # shared unless converted below
        memo[id(p)] = p
    for b in tower.buffers():
        memo[id(b)] = b
    for mod in tower.modules():
        if not isinstance(mod, _CAST_MODULES):
            continue
        for t in (mod.weight, mod.bias):
            if t is None or not t.is_floating_point():
                continue
            want = dtype or t.dtype
            if id(t) in replace:
                memo[id(t)] = nn.Parameter(replace[id(t)].detach().to(want), requires_grad=False)
            elif t.dtype != want:
                memo[id(t)] = nn.Parameter(t.detach().to(want), requires_grad=False)
    return copy.deepcopy(tower, memo)


def tensor_key(tower: nn.Module, tensors: list[torch.Tensor]) -> tuple[object, ...]:
    """What a cached copy of ``tower`` made from ``tensors`` depends on: the tower, the tensors'
    identities and versions (in-place changes), and their device and dtype."""
    key: tuple[object, ...] = (id(tower), tuple(id(t) for t in tensors), tuple(t._version for t in tensors))
    return key + tuple((t.device, t.dtype) for t in tensors[:1])


class BF16Tower:
    """A copy of a frozen tower whose convolution and linear weights are bf16 already, for passes
    under bf16 autocast: autocast would cast those fp32 weights to the same bf16 values on every
    call (its cast cache only serves weights that require grad), so the copy computes bit for bit
    what the tower computes under autocast, without the casts. The other parameters and buffers
    (BatchNorm, LayerNorm, embeddings) are shared with the tower, not copied; the copy is rebuilt
    when a weight of the tower changes (in place or replaced) or the tower moves. A tower with
    trainable weights is returned as it is (its weight gradients need its own weights).

    Example:
        >>> tower = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval().requires_grad_(False)
        >>> shadow = BF16Tower()
        >>> shadow.get(tower)[0].weight.dtype, shadow.get(tower)[1].weight is tower[1].weight
        (torch.bfloat16, True)
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._copy: nn.Module | None = None

    @staticmethod
    def _sources(tower: nn.Module) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for mod in tower.modules():
            if isinstance(mod, _CAST_MODULES):
                out.extend(t for t in (mod.weight, mod.bias) if t is not None and t.is_floating_point())
        return out

    def get(self, tower: nn.Module) -> nn.Module:
        """The bf16-weight copy of ``tower`` (built on first use, reused while the weights stand)."""
        sources = self._sources(tower)
        if any(t.requires_grad for t in sources):  # trainable weights: the gradients need the tower
            return tower
        key = tensor_key(tower, sources)
        if self._copy is None or key != self._key:
            self._copy = weight_copy(tower, torch.bfloat16)
            self._key = key
        return self._copy

    def clear(self) -> None:
        """Drop the copy (it is rebuilt on the next :meth:`get`)."""
        self._key, self._copy = None, None
