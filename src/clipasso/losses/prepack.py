"""Convolution weights reordered once for oneDNN, instead of on every call (CPU).

On a CPU, PyTorch runs a convolution through oneDNN, which first reorders the weight from PyTorch's
plain layout into its own blocked layout, on every call: for CLIP RN101 about a tenth of a forward
pass. A frozen tower can keep the reordered weight: :class:`PackedConv2d` reorders it once per input
shape (``torch.ops.mkldnn._reorder_convolution_weight``, the op that inductor's freezing uses) and
runs the forward pass with ``torch.ops.mkldnn._convolution_pointwise`` on it. Its backward pass
(to the input only: the weights are frozen) is ``aten.convolution_backward`` on the plain weight,
as before. The same oneDNN kernels on the same numbers: on the machines measured the outputs and
input gradients are bit for bit those of ``nn.Conv2d`` (docs/performance.md); the tests hold them
to rounding.

It applies where it can and falls back to ``nn.Conv2d`` otherwise: CPU tensors, the input in the
weight's dtype (bf16 or fp32), weights that do not require grad, zero padding, a PyTorch built with
oneDNN (:func:`prepack_available`).

Example:
    >>> conv = nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)
    >>> tower = prepack_convolutions(nn.Sequential(conv))
    >>> type(tower[0]).__name__, tower[0].weight is conv.weight
    ('PackedConv2d', True)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PackedConv2d", "prepack_available", "prepack_convolutions"]


def prepack_available() -> bool:
    """True where this PyTorch has oneDNN and the prepacked-weight convolution ops."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(
        torch.backends.mkldnn.is_available()
        and mkldnn is not None
        and hasattr(mkldnn, "_convolution_pointwise")
        and hasattr(mkldnn, "_reorder_convolution_weight")
    )


def _pointwise(x: Tensor, packed: Tensor, bias: Tensor | None, conf: tuple[Any, ...]) -> Tensor:
    padding, stride, dilation, groups = conf
    op = torch.ops.mkldnn._convolution_pointwise
    return op(x, packed, bias, padding, stride, dilation, groups, "none", [], "")


class _PackedConvFunction(torch.autograd.Function):
    """The forward pass on the prepacked weight; the backward to the input on the plain weight."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, packed: Tensor, weight: Tensor, bias: Tensor | None, conf: tuple[Any, ...]
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = conf
        return _pointwise(x, packed, bias, conf)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        x, weight = ctx.saved_tensors
        padding, stride, dilation, groups = ctx.conf
        grad = (
            grad.contiguous(memory_format=torch.channels_last)
            if x.is_contiguous(memory_format=torch.channels_last)
            else grad.contiguous()
        )
        grad_input, _, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
        )
        return grad_input, None, None, None, None


class PackedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` of frozen weights that keeps them reordered for oneDNN (one reordered copy
    per input shape ``[C, H, W]`` and dtype it has seen), made from a ``Conv2d`` by
    :meth:`from_conv` (sharing its parameters). Falls back to ``nn.Conv2d.forward`` where the
    prepacked path does not apply (module notes).

    Example:
        >>> conv = PackedConv2d.from_conv(nn.Conv2d(3, 4, 3).requires_grad_(False))
        >>> conv(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 4, 6, 6])
    """

    _packs: dict[tuple[object, ...], Tensor]

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PackedConv2d:
        """A ``PackedConv2d`` sharing ``conv``'s parameters and settings (``conv`` is unchanged)."""
        out = copy.copy(conv)
        out.__class__ = cls
        out._parameters = dict(conv._parameters)  # the same tensors, its own tables
        out._buffers = dict(conv._buffers)
        out._modules = dict(conv._modules)
        out.__dict__["_packs"] = {}
        return out  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        """The module without its packs (oneDNN's reordered weights are opaque tensors that cannot
        be copied or pickled; a copy makes its own on first use)."""
        state = dict(self.__dict__)
        state["_packs"] = {}
        return state

    def _applies(self, x: Tensor) -> bool:
        w = self.weight
        return (
            x.device.type == "cpu"
            and w.device.type == "cpu"
            and x.dim() == 4
            and x.dtype == w.dtype
            and w.dtype in (torch.float32, torch.bfloat16)
            and not w.requires_grad
            and not (self.bias is not None and self.bias.requires_grad)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )

    def _packed(self, x: Tensor) -> Tensor:
        key = (tuple(x.shape[1:]), x.dtype, self.weight._version)
        packed = self._packs.get(key)
        if packed is None:
            self._packs = {k: v for k, v in self._packs.items() if k[2] == self.weight._version}
            conf = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
            packed = torch.ops.mkldnn._reorder_convolution_weight(self.weight, *conf, list(x.shape))
            self._packs[key] = packed
        return packed

    def forward(self, x: Tensor) -> Tensor:
        if not self._applies(x):
            return super().forward(x)
        conf = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        packed = self._packed(x)
        if torch.is_grad_enabled() and x.requires_grad:
            out: Tensor = _PackedConvFunction.apply(x, packed, self.weight, self.bias, conf)
            return out
        return _pointwise(x, packed, self.bias, conf)


def prepack_convolutions(tower: nn.Module) -> nn.Module:
    """``tower`` with each ``nn.Conv2d`` replaced, in place, by a :class:`PackedConv2d` sharing its
    parameters (returns ``tower``; nothing changes where :func:`prepack_available` is False).

    Meant for a tower's private frozen copy (the loss's bf16 or BatchNorm-folded copy): the
    replacement changes the module tree of what it is given.
    """
    if not prepack_available():
        return tower
    for module in list(tower.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Conv2d:
                setattr(module, name, PackedConv2d.from_conv(child))
    return tower
