"""Convolution weights reordered once for oneDNN, instead of on every call (CPU).

On a CPU, PyTorch runs a convolution through oneDNN, which first reorders the weight from PyTorch's
plain layout into its own blocked layout, on every call: for CLIP RN101 about a tenth of a forward
pass. A frozen tower can keep the reordered weight: :class:`PackedConv2d` reorders it once per input
shape (``torch.ops.mkldnn._reorder_convolution_weight``, the op that inductor's freezing uses) and
runs the forward pass with ``torch.ops.mkldnn._convolution_pointwise`` on it. Its backward pass
(to the input only: the weights are frozen) is, for a stride-1 ungrouped convolution (all of CLIP
ResNet's but the stem's first), the forward convolution of the gradient with the flipped,
transposed weight, packed once too (``PackedConv2d.pack_backward``); otherwise
``aten.convolution_backward`` on the plain weight, which reorders it on every call. The same
sums: on the machines measured the outputs and input gradients were bit for bit those of
``nn.Conv2d`` (docs/performance.md); the tests hold them to rounding.

It applies where it can and falls back to ``nn.Conv2d`` otherwise: CPU tensors, the input in the
weight's dtype (bf16 or fp32), weights that do not require grad, zero padding, a PyTorch built with
oneDNN (:func:`prepack_available`).

A packed convolution can also run the ReLU after it (``post_op="relu"``) and a residual addition
followed by a ReLU (:meth:`PackedConv2d.add_relu`) as oneDNN post-ops, inside the convolution's
kernel instead of as separate passes over the output (:mod:`clipasso.losses.fusion` rewrites CLIP's
ResNet that way). The ReLU's backward is the same ``threshold_backward`` on the output as
``nn.ReLU``'s; the fused addition is made before the output is rounded to its dtype, so in bf16 it
rounds once where the separate addition rounds twice.

Example:
    >>> conv = nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)
    >>> tower = prepack_convolutions(nn.Sequential(conv))
    >>> type(tower[0]).__name__, tower[0].weight is conv.weight
    ('PackedConv2d', True)
"""

from __future__ import annotations

import copy
from typing import Any, cast

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


def _pointwise(
    x: Tensor, packed: Tensor, bias: Tensor | None, conf: tuple[Any, ...], relu: bool = False
) -> Tensor:
    padding, stride, dilation, groups = conf
    op = torch.ops.mkldnn._convolution_pointwise
    return op(x, packed, bias, padding, stride, dilation, groups, "relu" if relu else "none", [], "")


def _add_relu(x: Tensor, other: Tensor, packed: Tensor, bias: Tensor | None, conf: tuple[Any, ...]) -> Tensor:
    """``relu(conv(x) + other)`` in one oneDNN call (the addition and the ReLU as post-ops)."""
    padding, stride, dilation, groups = conf
    op = torch.ops.mkldnn._convolution_pointwise.binary
    return op(x, other, packed, bias, padding, stride, dilation, groups, "add", None, "relu", [], "")


def _convolution_input_grad(grad: Tensor, x: Tensor, weight: Tensor, conf: tuple[Any, ...]) -> Tensor:
    """The gradient to the convolution's input ``x`` of the output's gradient ``grad``."""
    padding, stride, dilation, groups = conf
    grad = (
        grad.contiguous(memory_format=torch.channels_last)
        if x.is_contiguous(memory_format=torch.channels_last)
        else grad.contiguous()
    )
    grad_input, _, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
    )
    return grad_input


class _PackedConvFunction(torch.autograd.Function):
    """The forward pass on the prepacked weight (with its ReLU, or its residual addition and ReLU,
    when asked); the backward to the input (and to the residual): the forward convolution of the
    gradient with the module's packed transposed weight where it applies, else
    ``aten.convolution_backward`` on the plain weight."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        other: Tensor | None,
        packed: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        conf: tuple[Any, ...],
        relu: bool,
        owner: PackedConv2d,
    ) -> Tensor:
        if other is None:
            out = _pointwise(x, packed, bias, conf, relu)
        else:
            out = _add_relu(x, other, packed, bias, conf)
        ctx.save_for_backward(x, weight, out if relu else None)
        ctx.relu, ctx.owner = relu, owner
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, out = ctx.saved_tensors
        if ctx.relu:  # nn.ReLU's own backward: the gradient where the output is positive
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        owner: PackedConv2d = ctx.owner
        grad_input = owner._input_grad(grad, x, weight) if ctx.needs_input_grad[0] else None
        grad_other = grad if ctx.needs_input_grad[1] else None
        return grad_input, grad_other, None, None, None, None, None, None


class PackedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` of frozen weights that keeps them reordered for oneDNN (one reordered copy
    per input shape ``[C, H, W]`` and dtype it has seen), made from a ``Conv2d`` by
    :meth:`from_conv` (sharing its parameters). Falls back to ``nn.Conv2d.forward`` where the
    prepacked path does not apply (module notes).

    Attributes:
        post_op: ``"relu"`` to apply a ReLU to the output inside the convolution (the module then
            computes ``relu(conv(x))``, also where it falls back), ``"none"`` (the default) for the
            plain convolution.
        pack_backward: For a stride-1, ungrouped convolution, compute the input gradient as the
            forward convolution of the output's gradient with the flipped, transposed weight
            (padding ``k - 1 - p``), kept reordered for oneDNN like the forward weight (True, the
            default), instead of ``aten.convolution_backward``, which reorders the weight on every
            call. The same sums (bit for bit on the machines measured, docs/performance.md).

    Example:
        >>> conv = PackedConv2d.from_conv(nn.Conv2d(3, 4, 3).requires_grad_(False))
        >>> conv(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 4, 6, 6])
        >>> conv.post_op = "relu"
        >>> bool(conv(torch.randn(1, 3, 8, 8)).min() >= 0)
        True
    """

    _packs: dict[tuple[object, ...], Tensor]
    post_op: str = "none"
    pack_backward: bool = True

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
            conf = self._conf()
            packed = torch.ops.mkldnn._reorder_convolution_weight(self.weight, *conf, list(x.shape))
            self._packs[key] = packed
        return packed

    def _conf(self) -> tuple[Any, ...]:
        return (list(self.padding), list(self.stride), list(self.dilation), self.groups)

    def _input_grad(self, grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """The gradient to the input ``x`` of the output's gradient ``grad`` (``weight``: this
        module's weight as saved for the backward pass)."""
        if self._transposes(grad, weight):
            return self._transposed_grad(grad, weight)
        return _convolution_input_grad(grad, x, weight, self._conf())

    def _transposes(self, grad: Tensor, weight: Tensor) -> bool:
        """Whether the input gradient of ``grad`` can be the transposed forward convolution."""
        k = weight.shape[2:]
        return (
            self.pack_backward
            and grad.device.type == "cpu"
            and grad.dim() == 4
            and grad.dtype == weight.dtype
            and self.groups == 1
            and all(s == 1 for s in self.stride)
            and all(d == 1 for d in self.dilation)
            and isinstance(self.padding, tuple)
            and all(0 <= p <= n - 1 for p, n in zip(self.padding, k))
        )

    def _transposed_grad(self, grad: Tensor, weight: Tensor) -> Tensor:
        """``grad [B, O, H, W]`` → the input gradient ``[B, I, H', W']`` of a stride-1 convolution:
        the convolution of ``grad`` with ``weight`` flipped in space and transposed ``[I, O, k, k]``,
        padded by ``k - 1 - p`` (the packed transposed weight is made once per ``grad`` shape)."""
        padding = [int(n) - 1 - int(p) for p, n in zip(cast(tuple[int, ...], self.padding), weight.shape[2:])]
        conf = (padding, [1, 1], [1, 1], 1)
        key = (("transposed", *grad.shape[1:]), grad.dtype, weight._version)
        packed = self._packs.get(key)
        if packed is None:
            self._packs = {k: v for k, v in self._packs.items() if k[2] == weight._version}
            flipped = weight.flip(2, 3).transpose(0, 1).contiguous()
            packed = torch.ops.mkldnn._reorder_convolution_weight(flipped, *conf, list(grad.shape))
            self._packs[key] = packed
        return _pointwise(grad, packed, None, conf)

    def _relu(self) -> bool:
        if self.post_op not in ("none", "relu"):
            raise ValueError(f"PackedConv2d.post_op must be 'none' or 'relu', got {self.post_op!r}")
        return self.post_op == "relu"

    def forward(self, x: Tensor) -> Tensor:
        relu = self._relu()
        if not self._applies(x):
            out = super().forward(x)
            return torch.relu(out) if relu else out
        conf = self._conf()
        packed = self._packed(x)
        if torch.is_grad_enabled() and x.requires_grad:
            args = (x, None, packed, self.weight, self.bias, conf, relu, self)
            fused: Tensor = _PackedConvFunction.apply(*args)
            return fused
        return _pointwise(x, packed, self.bias, conf, relu)

    def add_relu(self, x: Tensor, other: Tensor) -> Tensor:
        """``relu(conv(x) + other)``, the addition and the ReLU inside the convolution where the
        prepacked path applies (``other`` ``[B, O, H', W']``, the output's shape; ``post_op`` must be
        ``"none"``). In bf16 the fused sum rounds once, the separate one twice.

        Example:
            >>> conv = PackedConv2d.from_conv(nn.Conv2d(3, 4, 1).requires_grad_(False))
            >>> conv.add_relu(torch.rand(1, 3, 8, 8), torch.rand(1, 4, 8, 8)).shape
            torch.Size([1, 4, 8, 8])
        """
        if self._relu():
            raise ValueError("add_relu needs post_op='none' (the ReLU comes after the addition)")
        fits = (
            self._applies(x)
            and other.device == x.device
            and other.dtype == x.dtype
            and other.dim() == 4
            and other.shape[:2] == (x.shape[0], self.out_channels)
        )
        if not fits:
            return torch.relu(super().forward(x) + other)
        conf = self._conf()
        packed = self._packed(x)
        if torch.is_grad_enabled() and (x.requires_grad or other.requires_grad):
            args = (x, other, packed, self.weight, self.bias, conf, True, self)
            out: Tensor = _PackedConvFunction.apply(*args)
            return out
        return _add_relu(x, other, packed, self.bias, conf)


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
