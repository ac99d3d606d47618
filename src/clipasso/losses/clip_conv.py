"""The reference CLIPasso objective: CLIP conv-layer (geometric) distances plus the "fc" term.

For sketch ``b`` with views :math:`x_{b,v}` and target views :math:`y_{b,v}`, ``v = 0..V-1``
(:class:`~clipasso.augment.ReferenceViews`: view 0 plus 4 random views in train mode, view 0 only in
eval mode), and CLIP features :math:`f_l` taken by layer NAME:

.. math::

    L^{geo}_{b} = \\sum_l w_l \\,\\mathrm{mean}_{v, \\text{elements}}\\, d(f_l(x_{b,v}), f_l(y_{b,v})),
    \\qquad
    L^{fc}_{b} = w_{fc}\\, \\mathrm{mean}_v \\big(1 - \\cos(e(x_{b,v}), e(y_{b,v}))\\big)

with :math:`d` the squared difference (``"l2"``, default), the absolute difference (``"l1"``) or
``1 - cos`` along the channel dimension (``"cos"``), and :math:`e` the image embedding (ResNet
``attnpool``; ViT projected class token). ResNet layers: ``stem, layer1, layer2, layer3, layer4``
with default weights ``(0, 0, 1, 1, 0)``, ``w_fc = 0.1`` (METHOD §4). For ``B = 1`` the means equal
the reference's means over its batch of 5 views. Each weighted layer is its own term.

ViT towers: per-block token distances (tokens ``[L, D]`` of each block's output; cosine along ``D``)
with per-block weights, default ``(0, 0, 1, 1)`` (blocks 2 and 3, the remaining blocks 0).

Example:
    >>> import torch
    >>> from clipasso.testing import tiny_clip
    >>> from clipasso.losses import CLIPConvLoss, LossContext
    >>> loss = CLIPConvLoss(tiny_clip("resnet"))
    >>> terms = loss(torch.rand(1, 3, 224, 224), torch.rand(1, 3, 224, 224), LossContext(mode="eval"))
    >>> sorted(terms)
    ['conv_layer2', 'conv_layer3', 'fc']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..augment import ReferenceViews
from ..errors import InputError
from ..models import is_resnet, is_vit, resnet_features, visual_of, vit_features
from .base import CLIPModelRef, LossContext, SketchLoss, register_loss

__all__ = ["RESNET_CONV_LAYERS", "CLIPConvLoss", "feature_distance"]

#: The ResNet feature maps the geometric term can use, in forward order.
RESNET_CONV_LAYERS: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

Distance = Literal["l2", "l1", "cos"]
Arch = Literal["resnet", "vit"]


def feature_distance(x: Tensor, y: Tensor, distance: Distance, channel_dim: int) -> Tensor:
    """Per-sketch mean distance between feature tensors.

    Args:
        x: Sketch features ``[B, V, ...]``.
        y: Target features ``[1 or B, V, ...]`` (broadcast over ``B``).
        distance: ``"l2"`` squared difference, ``"l1"`` absolute difference, ``"cos"`` ``1 - cos``
            along ``channel_dim``.
        channel_dim: The channel/feature dimension of ``x`` (for ``"cos"``).

    Returns:
        ``[B]``: the mean over views and all remaining elements.
    """
    if distance == "l2":
        d = (x - y) ** 2
    elif distance == "l1":
        d = (x - y).abs()
    elif distance == "cos":
        d = (1.0 - F.cosine_similarity(x, y.expand_as(x), dim=channel_dim)).clamp_min(0.0)
    else:
        raise InputError(f"distance must be 'l2', 'l1' or 'cos', got {distance!r}")
    return d.flatten(1).mean(dim=1)


def _embedding_distance(x: Tensor, y: Tensor) -> Tensor:
    """``mean_v (1 - cos(x[b, v], y[b, v]))`` for ``x [B, V, E]``, ``y [1 or B, V, E]`` → ``[B]``."""
    return (1.0 - F.cosine_similarity(x, y.expand_as(x), dim=-1)).clamp_min(0.0).mean(dim=1)


def _guess_arch(model: nn.Module | str | os.PathLike[str]) -> Arch | None:
    if isinstance(model, nn.Module):
        if is_vit(model):
            return "vit"
        if is_resnet(model):
            return "resnet"
        raise InputError(f"model is neither a CLIP ResNet nor a CLIP ViT: {type(model).__name__}")
    name = os.fspath(model)
    base = os.path.basename(name).lower()
    if base.startswith("vit"):
        return "vit"
    if base.startswith("rn"):
        return "resnet"
    return None


@register_loss("clip_conv")
class CLIPConvLoss(SketchLoss):
    """CLIP geometric (per-layer) distances and the ``fc`` embedding term (the reference default).

    Args:
        model: A CLIP model or its ``.visual`` tower (shared, frozen on adoption), or a name/path loaded
            lazily on first use (default ``"RN101"``).
        layer_weights: ResNet: 5 weights over ``(stem, layer1, layer2, layer3, layer4)`` or a mapping
            ``{"layer3": 1.0, ...}``; default ``(0, 0, 1, 1, 0)``. ViT: one weight per block (missing
            trailing blocks are 0) or ``{"block7": 1.0, ...}``; default ``(0, 0, 1, 1)``.
        distance: ``"l2"`` (default), ``"l1"`` or ``"cos"`` for the per-layer term.
        fc_weight: Weight of the embedding term ``1 - cos`` (0 switches it off and, on ResNets, skips
            the tower after the deepest weighted layer).
        num_views: Random views in train mode (reference: 4); view 0 is always included.
        augment: A custom :class:`~clipasso.augment.ReferenceViews` (overrides ``num_views``/``seed``).
        seed: Seed of the augmentation's own generator (used when the context gives none).
        arch: ``"resnet"`` or ``"vit"``, only needed for a weights *path* whose name does not start
            with "RN"/"ViT" (the names of the terms depend on it).
        cache_dir: Weights cache for lazy loading.
        weight: Factor on every term.

    Terms (already weighted, ``[B]`` each): ``conv_<layer>`` per layer with non-zero weight (e.g.
    ``conv_layer2``, ``conv_layer3``; ViT ``conv_block3``) and ``fc``.
    """

    name = "clip_conv"

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str] = "RN101",
        *,
        layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        distance: Distance = "l2",
        fc_weight: float = 0.1,
        num_views: int = 4,
        augment: ReferenceViews | None = None,
        seed: int = 0,
        arch: Arch | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight=weight)
        if distance not in ("l2", "l1", "cos"):
            raise InputError(f"distance must be 'l2', 'l1' or 'cos', got {distance!r}")
        guessed = _guess_arch(model)
        if arch is not None and arch not in ("resnet", "vit"):
            raise InputError(f"arch must be 'resnet' or 'vit', got {arch!r}")
        if arch is not None and guessed is not None and arch != guessed and isinstance(model, nn.Module):
            raise InputError(f"arch={arch!r} but the model is a {guessed}")
        self.arch: Arch = arch or guessed or "resnet"
        self.layers: dict[str, float] = self._parse_weights(layer_weights)
        self.distance: Distance = distance
        self.fc_weight = float(fc_weight)
        if not self.layers and self.fc_weight == 0.0:
            raise InputError("every layer weight and fc_weight are 0: the loss would be empty")
        self.model = CLIPModelRef(model, cache_dir=cache_dir)
        self.augment = augment if augment is not None else ReferenceViews(num_views, seed=seed)

    def _parse_weights(self, weights: Sequence[float] | Mapping[str, float] | None) -> dict[str, float]:
        if self.arch == "resnet":
            known = list(RESNET_CONV_LAYERS)
            if weights is None:
                weights = (0.0, 0.0, 1.0, 1.0, 0.0)
            if isinstance(weights, Mapping):
                unknown = [k for k in weights if k not in known]
                if unknown:
                    raise InputError(f"unknown ResNet layer(s) {unknown} in layer_weights; known: {known}")
                pairs = [(k, float(weights[k])) for k in known if k in weights]
            else:
                if len(weights) != len(known):
                    raise InputError(
                        f"ResNet layer_weights needs {len(known)} values {known}, got {len(weights)}"
                    )
                pairs = list(zip(known, (float(w) for w in weights)))
        else:
            if weights is None:
                weights = (0.0, 0.0, 1.0, 1.0)
            if isinstance(weights, Mapping):
                pairs = []
                for k, w in weights.items():
                    if not (k.startswith("block") and k[5:].isdigit()):
                        raise InputError(f"ViT layer_weights keys must be 'block<i>', got {k!r}")
                    pairs.append((k, float(w)))
                pairs.sort(key=lambda kw: int(kw[0][5:]))
            else:
                pairs = [(f"block{i}", float(w)) for i, w in enumerate(weights)]
        for k, w in pairs:
            if w < 0:
                raise InputError(f"layer weight of {k} must be >= 0, got {w}")
        return {k: w for k, w in pairs if w != 0.0}

    def term_names(self) -> list[str]:
        names = [f"conv_{k}" for k in self.layers]
        if self.fc_weight != 0.0:
            names.append("fc")
        return names

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, layers={self.layers}, distance={self.distance!r}, "
            f"fc_weight={self.fc_weight}, model={self.model!r}, weight={self.weight}"
        )

    # -- features ------------------------------------------------------------------------------
    def features(self, visual: nn.Module, images: Tensor) -> dict[str, Tensor]:
        """The needed features of CLIP-normalised ``images [N, 3, S, S]``: ``{layer: ..., "fc": [N, E]}``."""
        want_fc = self.fc_weight != 0.0
        if self.arch == "resnet":
            names = list(self.layers) + (["attnpool"] if want_fc else [])
            feats = resnet_features(visual, images, names)
            if want_fc:
                feats["fc"] = feats.pop("attnpool")
            return feats
        depth = len(getattr(visual, "transformer").resblocks)  # noqa: B009
        idx = [int(k[5:]) for k in self.layers]
        if idx and max(idx) >= depth:
            raise InputError(
                f"layer_weights name block {max(idx)} but the ViT has {depth} blocks (0..{depth - 1})"
            )
        blocks = None if want_fc else max(idx) + 1
        vf = vit_features(visual, images, attention=False, blocks=blocks)
        out: dict[str, Tensor] = {k: vf.tokens[i] for k, i in zip(self.layers, idx)}
        if want_fc:
            assert vf.embedding is not None
            out["fc"] = vf.embedding
        return out

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> dict[str, Tensor]:
        visual = visual_of(self.model.get(sketch.device))
        actual = "vit" if is_vit(visual) else "resnet" if is_resnet(visual) else None
        if actual != self.arch:
            raise InputError(
                f"CLIPConvLoss was configured for a {self.arch} tower but the model is a {actual}"
            )
        xs, ys = self.augment(sketch, target, context.generators, train=context.train)
        assert ys is not None
        batch, views = xs.shape[:2]
        fx = self.features(visual, xs.flatten(0, 1))
        with torch.no_grad():
            fy = self.features(visual, ys.flatten(0, 1))
        out: dict[str, Tensor] = {}
        for key, w in self.layers.items():
            x = fx[key].to(sketch.dtype)
            y = fy[key].to(sketch.dtype)
            x = x.reshape(batch, views, *x.shape[1:])
            y = y.reshape(ys.shape[0], views, *y.shape[1:])
            channel_dim = (
                2 if self.arch == "resnet" else x.dim() - 1
            )  # maps [B, V, C, h, w]; tokens [B, V, L, D]
            out[f"conv_{key}"] = w * feature_distance(x, y, self.distance, channel_dim)
        if self.fc_weight != 0.0:
            ex = fx["fc"].to(sketch.dtype).reshape(batch, views, -1)
            ey = fy["fc"].to(sketch.dtype).reshape(ys.shape[0], views, -1)
            out["fc"] = self.fc_weight * _embedding_distance(ex, ey)
        return out
