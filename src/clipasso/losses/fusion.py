"""CLIP ResNet's ReLUs and residual additions run inside its convolutions (oneDNN post-ops, CPU).

After :func:`~clipasso.losses.folding.fold_batchnorm` every convolution of CLIP's ModifiedResNet is
followed directly by a ReLU (the stem's three, each bottleneck's first two) or by the bottleneck's
residual addition and a ReLU (its third). :func:`fuse_activations` rewrites a folded, prepacked
tower (:func:`~clipasso.losses.prepack.prepack_convolutions`) so that those run as post-ops of the
convolution's own oneDNN call: the stem's and the bottlenecks' convolutions get
``post_op="relu"`` and each bottleneck becomes a :class:`FusedBottleneck`, whose last convolution
adds the shortcut and applies the ReLU (:meth:`~clipasso.losses.prepack.PackedConv2d.add_relu`).
That saves a pass over each output in the forward pass (about 100 ReLUs and 33 additions per
RN101 pass); the backward passes are the same operations as before. With autograd, each bottleneck
runs as one autograd node (its forward pass without autograd inside, its backward pass written out:
the ReLUs' ``threshold_backward``, the convolutions' input gradients, the pools' backward and the
shortcut's sum) without a node and its Python for each convolution: bit for bit the
per-convolution path's, except where a block's input also feeds something else (a feature tap:
its gradient contributions are then summed in another order, equal to rounding).

Only CLIP's own classes are rewritten: a bottleneck whose ``forward`` is
``clip.model.Bottleneck.forward`` and a tower whose ``forward`` is
``clip.model.ModifiedResNet.forward``, with their BatchNorms folded away (``nn.Identity``), their
convolutions packed and their ReLUs ``nn.ReLU``; anything else (a subclass with another forward, an
unfolded BatchNorm) is left as it is. The ReLU fusions are exact (ReLU commutes with rounding); the
fused addition rounds once in bf16 where the separate one rounds twice, so a fused bf16 pass is not
bit for bit the unfused one (docs/performance.md, "ReLUs and residual additions fused").

Example:
    >>> from clipasso.testing import tiny_clip
    >>> from clipasso.losses.folding import fold_batchnorm
    >>> from clipasso.losses.prepack import prepack_convolutions
    >>> tower = prepack_convolutions(fold_batchnorm(tiny_clip("resnet").visual))
    >>> type(fuse_activations(tower).layer1[0]).__name__
    'FusedBottleneck'
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import Tensor, nn

from .prepack import PackedConv2d

__all__ = ["FusedBottleneck", "fuse_activations"]


def _clip_forward(name: str) -> Any:
    """``clip.model.<name>.forward`` (None where OpenAI's CLIP is not importable)."""
    try:
        from clip import model as clip_model  # lazy: keeps `import clipasso` light
    except ImportError:  # pragma: no cover - clip is a dependency
        return None
    cls = getattr(clip_model, name, None)
    return getattr(cls, "forward", None)


def _packed_plain(module: Any) -> bool:
    return type(module) is PackedConv2d and module.post_op == "none"


def _with_relu(conv: PackedConv2d) -> PackedConv2d:
    """A copy of ``conv`` (the same parameters) that applies its ReLU inside the convolution."""
    out = PackedConv2d.from_conv(conv)
    out.post_op = "relu"
    return out


def _fusable_bottleneck(block: nn.Module, forward: Any) -> bool:
    if forward is None or type(block).forward is not forward:
        return False
    for i in (1, 2, 3):
        conv, bn, relu = (getattr(block, f"{kind}{i}", None) for kind in ("conv", "bn", "relu"))
        if not (_packed_plain(conv) and type(bn) is nn.Identity and type(relu) is nn.ReLU):
            return False
    down = getattr(block, "downsample", None)
    if down is None:
        return True
    # CLIP's shortcut: (avgpool, conv, bn); folded: (avgpool, packed conv, identity)
    kinds = [type(m) for m in down.children()] if isinstance(down, nn.Sequential) else []
    return len(kinds) == 3 and kinds[1] is PackedConv2d and kinds[2] is nn.Identity


def _pool_backward(pool: nn.Module, grad: Tensor, x: Tensor) -> Tensor:
    """The gradient to ``x`` of ``pool(x)``'s gradient ``grad`` (``nn.Identity`` or ``nn.AvgPool2d``)."""
    if type(pool) is nn.Identity:
        return grad
    assert isinstance(pool, nn.AvgPool2d)

    def pair(v: Any) -> list[int]:
        return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]

    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    return torch.ops.aten.avg_pool2d_backward(
        grad,
        x,
        pair(pool.kernel_size),
        stride,
        pair(pool.padding),
        pool.ceil_mode,
        pool.count_include_pad,
        pool.divisor_override,
    )


class _BottleneckFunction(torch.autograd.Function):
    """A fused bottleneck's forward pass (its modules, without autograd) and its backward pass in
    one autograd node: the same operations as the modules' own backward passes, in the same order,
    without an autograd node and its Python for each convolution."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, block: FusedBottleneck) -> Tensor:
        y1, y2, pooled, xs, out = block._parts(x)
        ctx.save_for_backward(x, y1, y2, pooled, xs, out, *(c.weight for c in block._convs()))
        ctx.block = block
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, y1, y2, pooled, xs, out, *weights = ctx.saved_tensors
        block: FusedBottleneck = ctx.block
        g = torch.ops.aten.threshold_backward(grad, out, 0)  # relu3
        g2 = _pool_backward(block.avgpool, block.conv3._input_grad(g, pooled, weights[2]), y2)
        g1 = block.conv2._input_grad(torch.ops.aten.threshold_backward(g2, y2, 0), y1, weights[1])
        grad_x = block.conv1._input_grad(torch.ops.aten.threshold_backward(g1, y1, 0), x, weights[0])
        down = block.downsample
        if down is None:
            return grad_x + g, None
        shortcut = _pool_backward(down[0], cast(PackedConv2d, down[1])._input_grad(g, xs, weights[3]), x)
        return grad_x + shortcut, None


class FusedBottleneck(nn.Module):
    """CLIP's ResNet bottleneck (folded and prepacked) with its ReLUs and the residual addition in
    its convolutions: ``conv1`` and ``conv2`` apply their ReLUs, ``conv3`` adds the shortcut and
    applies the last. The same submodules as the bottleneck it is made from (:meth:`from_block`).

    Example:
        >>> from clipasso.testing import tiny_clip
        >>> from clipasso.losses.folding import fold_batchnorm
        >>> from clipasso.losses.prepack import prepack_convolutions
        >>> tower = prepack_convolutions(fold_batchnorm(tiny_clip("resnet").visual))
        >>> block = FusedBottleneck.from_block(tower.layer1[0])
        >>> import torch
        >>> block(torch.randn(1, 8, 16, 16)).shape
        torch.Size([1, 32, 16, 16])
    """

    conv1: PackedConv2d
    conv2: PackedConv2d
    conv3: PackedConv2d
    avgpool: nn.Module
    downsample: nn.Sequential | None

    @classmethod
    def from_block(cls, block: nn.Module) -> FusedBottleneck:
        """The fused form of a folded, prepacked ``clip.model.Bottleneck`` (``block``'s own
        submodules, with the first two convolutions' ``post_op`` set to ``"relu"``)."""
        out = copy.copy(block)
        out.__class__ = cls
        out._parameters = dict(block._parameters)  # the same tensors, its own tables
        out._buffers = dict(block._buffers)
        out._modules = dict(block._modules)
        for i in (1, 2):
            out._modules[f"conv{i}"] = _with_relu(getattr(block, f"conv{i}"))
        return out  # type: ignore[return-value]

    def _convs(self) -> list[PackedConv2d]:
        """``conv1``, ``conv2``, ``conv3`` and the shortcut's convolution (if any)."""
        convs = [self.conv1, self.conv2, self.conv3]
        return convs if self.downsample is None else [*convs, cast(PackedConv2d, self.downsample[1])]

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """The pass's tensors: both ReLUs' outputs, the pooled one, the pooled shortcut input (None
        without a downsampling shortcut) and the block's output."""
        y1 = self.conv1(x)  # bn1 folded; the ReLU inside the convolution
        y2 = self.conv2(y1)
        pooled = self.avgpool(y2)
        down = self.downsample
        if down is None:
            return y1, y2, pooled, None, self.conv3.add_relu(pooled, x)
        xs = down[0](x)
        return y1, y2, pooled, xs, self.conv3.add_relu(pooled, down[2](down[1](xs)))

    def _one_node(self, x: Tensor) -> bool:
        """Whether the pass can run as one autograd node (every part on its packed path)."""
        if not (torch.is_grad_enabled() and x.requires_grad):
            return False
        pools = [self.avgpool] + ([] if self.downsample is None else [self.downsample[0]])
        return all(conv._applies(x) for conv in self._convs()) and all(
            type(p) in (nn.Identity, nn.AvgPool2d) for p in pools
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` → ``[B, 4·planes, H/stride, W/stride]``, as ``clip.model.Bottleneck``."""
        if self._one_node(x):
            out: Tensor = _BottleneckFunction.apply(x, self)
            return out
        return self._parts(x)[-1]  # without autograd, or where a part falls back: node by node


def fuse_activations(tower: nn.Module) -> nn.Module:
    """``tower`` (a folded, prepacked CLIP ResNet image tower) with the ReLUs and residual additions
    fused into its convolutions, in place (returns ``tower``; see the module notes for what is
    rewritten and what is left alone).

    Args:
        tower: The tower's private copy, as :class:`~clipasso.losses.folding.FoldedTower` makes it,
            after :func:`~clipasso.losses.prepack.prepack_convolutions`.

    Returns:
        ``tower``, changed in place.
    """
    block_forward = _clip_forward("Bottleneck")
    for module in list(tower.modules()):
        for name, child in list(module.named_children()):
            if _fusable_bottleneck(child, block_forward):
                setattr(module, name, FusedBottleneck.from_block(child))
    resnet_forward = _clip_forward("ModifiedResNet")
    if resnet_forward is not None and type(tower).forward is resnet_forward:
        parts = ("conv", "bn", "relu")
        stem = [tuple(getattr(tower, f"{kind}{i}", None) for kind in parts) for i in (1, 2, 3)]
        if all(_packed_plain(c) and type(b) is nn.Identity and type(r) is nn.ReLU for c, b, r in stem):
            for i, (conv, _, _) in enumerate(stem, start=1):
                setattr(tower, f"conv{i}", _with_relu(cast(PackedConv2d, conv)))
                setattr(tower, f"relu{i}", nn.Identity())
    return tower
