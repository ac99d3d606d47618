"""CLIP ResNet's ReLUs and residual additions run inside its convolutions (oneDNN post-ops, CPU).

After :func:`~clipasso.losses.folding.fold_batchnorm` every convolution of CLIP's ModifiedResNet is
followed directly by a ReLU (the stem's three, each bottleneck's first two) or by the bottleneck's
residual addition and a ReLU (its third). :func:`fuse_activations` rewrites a folded, prepacked
tower (:func:`~clipasso.losses.prepack.prepack_convolutions`) so that those run as post-ops of the
convolution's own oneDNN call: the stem's and the bottlenecks' convolutions get
``post_op="relu"`` and each bottleneck becomes a :class:`FusedBottleneck`, whose last convolution
adds the shortcut and applies the ReLU (:meth:`~clipasso.losses.prepack.PackedConv2d.add_relu`).
That saves a pass over each output in the forward pass (about 100 ReLUs and 33 additions per
RN101 pass); the backward passes are the same operations as before.

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
    downsample: nn.Module | None

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
            conv = PackedConv2d.from_conv(getattr(block, f"conv{i}"))  # the same parameters
            conv.post_op = "relu"
            out._modules[f"conv{i}"] = conv
        return out  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` → ``[B, 4·planes, H/stride, W/stride]``, as ``clip.model.Bottleneck``."""
        out = self.conv2(self.conv1(x))  # bn1, bn2 folded; each ReLU inside its convolution
        out = self.avgpool(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv3.add_relu(out, shortcut)


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
                fused = PackedConv2d.from_conv(cast(PackedConv2d, conv))
                fused.post_op = "relu"
                setattr(tower, f"conv{i}", fused)
                setattr(tower, f"relu{i}", nn.Identity())
    return tower
