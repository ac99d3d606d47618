"""Fidelity by CLIP ViT layer (CLIPascene): token distances at chosen transformer blocks.

CLIPascene (Vinker et al., ICCV 2023) sets how closely a sketch follows the image's geometry by the
depth of the CLIP ViT layer whose activations the geometric loss matches: a shallow block keeps the
sketch faithful to the image's layout, a deep block lets it drift towards a looser depiction that
still carries the image's content. This module is written from that description.

For sketch ``b`` with views :math:`x_{b,v}` and target views :math:`y_{b,v}` (the same views for
both, :class:`~clipasso.augment.ReferenceViews`: view 0 plus ``num_views`` random views in train
mode, view 0 only in eval mode) and :math:`t^{(l)}_{i}(\\cdot) \\in \\mathbb{R}^D` the output token
``i`` of ViT block ``l``:

.. math::

    L^{(l)}_{b} = w_l \\, \\mathrm{mean}_{v} \\, \\mathrm{mean}_{i \\in T} \\;
        d\\big(t^{(l)}_{i}(x_{b,v}),\\, t^{(l)}_{i}(y_{b,v})\\big)

with :math:`d` the mean squared difference over the ``D`` channels (``"l2"``, default) or
:math:`1 - \\cos` along them (``"cos"``), and :math:`T` the patch tokens (``class_token=False``,
default) or every token including the class token. Several blocks with weights make one loss
(one term per block, one forward pass up to the deepest); ``fc_weight > 0`` adds the embedding
term :math:`w_{fc}\\,\\mathrm{mean}_v (1 - \\cos(e(x_{b,v}), e(y_{b,v})))` (the projected class
token: CLIPasso's ``fc`` term, computed from the same pass).

Blocks are named ``block<i>``, 0-based: ``block0`` is the output of the first residual block and
ViT-B/32 has ``block0`` … ``block11``.

Example:
    >>> import torch
    >>> from clipasso.testing import tiny_clip
    >>> from clipasso.losses import CLIPViTLayerLoss, LossContext
    >>> loss = CLIPViTLayerLoss(tiny_clip("vit"), layers={"block0": 1.0, "block2": 0.5})
    >>> terms = loss(torch.rand(1, 3, 224, 224), torch.rand(1, 3, 224, 224), LossContext(mode="eval"))
    >>> sorted(terms)
    ['vit_block0', 'vit_block2']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from ..augment import ReferenceViews
from ..errors import InputError
from ..models import is_vit, visual_of, vit_block_index, vit_features, vit_tokens
from .base import CLIPModelRef, LossContext, RunSettings, SketchLoss, configure_views, register_loss
from .clip_conv import check_identity_weight, embedding_distance, feature_distance, identity_view_weights
from .masking import MaskWeighting, check_mask_weighting, masked_layer_terms

__all__ = ["CLIPViTLayerLoss", "LayerSpec", "parse_vit_layers"]

#: Blocks and their weights: one block (``7`` or ``"block7"``), several with weight 1 each
#: (``[2, 7]``), or a mapping ``{"block2": 1.0, "block7": 0.5}`` (keys ``"block<i>"`` or ``i``).
LayerSpec = int | str | Sequence[int | str] | Mapping[int | str, float]

TokenDistance = Literal["l2", "cos"]


def parse_vit_layers(layers: LayerSpec) -> dict[str, float]:
    """``{"block<i>": weight}`` of a :data:`LayerSpec`, in block order, zero weights left out.

    Raises:
        InputError: A malformed block, a negative or non-finite weight, a block named twice.

    Example:
        >>> parse_vit_layers(7), parse_vit_layers([2, "block8"]), parse_vit_layers({"block3": 0.5, 1: 0})
        ({'block7': 1.0}, {'block2': 1.0, 'block8': 1.0}, {'block3': 0.5})
    """
    if isinstance(layers, (int, str)):
        pairs: list[tuple[int | str, float]] = [(layers, 1.0)]
    elif isinstance(layers, Mapping):
        pairs = [(k, v) for k, v in layers.items()]
    elif isinstance(layers, Sequence):
        pairs = [(k, 1.0) for k in layers]
    else:
        raise InputError(f"layers must be a block, a list of blocks or a mapping, got {layers!r}")
    out: dict[int, float] = {}
    for key, weight in pairs:
        index = vit_block_index(key)
        if index in out:
            raise InputError(f"block{index} appears twice in layers {layers!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise InputError(f"the weight of block{index} must be a finite number, got {weight!r}")
        if weight < 0:
            raise InputError(f"the weight of block{index} must be >= 0, got {weight}")
        out[index] = float(weight)
    return {f"block{i}": w for i, w in sorted(out.items()) if w != 0.0}


@register_loss("clip_vit_layer")
class CLIPViTLayerLoss(SketchLoss):
    """Token distances of sketch and target at chosen CLIP ViT blocks: the fidelity axis (CLIPascene).

    Args:
        model: A CLIP ViT model or its ``.visual`` tower (shared, frozen on adoption), or a name/path
            loaded lazily on first use (default ``"ViT-B/32"``).
        layers: The block(s) and weights (:data:`LayerSpec`); default ``2`` (``block2``, a shallow,
            faithful block). The block sets the fidelity: shallow follows the image's geometry
            closely, deep lets the sketch drift.
        distance: Per token: ``"l2"`` (mean squared difference over the channels, default) or
            ``"cos"`` (``1 - cos`` along the channels).
        class_token: Also compare the class token (default False: the patch tokens only, which carry
            where things are).
        fc_weight: Weight of the embedding term ``1 - cos`` (default 0: the layer terms only).
        num_views: Random views in train mode (reference: 4); view 0 is always included. Unset (with
            ``identity_weight``): a Sketcher run sets them from its config (:meth:`configure`);
            standalone, 4 views and the plain mean.
        identity_weight: Share of view 0 in the train-mode mean over the views (None: the plain
            mean), as for :class:`~clipasso.losses.CLIPConvLoss`.
        augment: A custom :class:`~clipasso.augment.ReferenceViews` (overrides ``num_views``/``seed``).
        seed: Seed of the augmentation's own generator (used when the context gives none).
        cache_dir: Weights cache for lazy loading.
        weight: Factor on every term.
        mask_weighting: What ``LossContext.mask`` does (:mod:`clipasso.losses.masking`):
            ``"ignore"`` (default), ``"target"``, ``"features"`` (tokens weighted on the patch grid)
            or ``"both"``.

    Terms (already weighted, ``[B]`` each): ``vit_block<i>`` per block with a non-zero weight, and
    ``vit_fc`` when ``fc_weight > 0``.

    Raises:
        InputError: Bad options; on first use (or :meth:`load`), a model that is not a ViT or lacks a
            requested block.
    """

    name = "clip_vit_layer"
    #: The CLIP tower this loss needs (the registry-parametrised tests give it a tiny ViT).
    tower: ClassVar[str] = "vit"

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str] = "ViT-B/32",
        *,
        layers: LayerSpec = 2,
        distance: TokenDistance = "l2",
        class_token: bool = False,
        fc_weight: float = 0.0,
        num_views: int | None = None,
        identity_weight: float | None = None,
        augment: ReferenceViews | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        weight: float = 1.0,
        mask_weighting: str | None = None,
    ) -> None:
        super().__init__(weight=weight)
        self.mask_weighting = check_mask_weighting("ignore" if mask_weighting is None else mask_weighting)
        if distance not in ("l2", "cos"):
            raise InputError(f"distance must be 'l2' or 'cos', got {distance!r}")
        if isinstance(fc_weight, bool) or not isinstance(fc_weight, (int, float)) or not fc_weight >= 0:
            raise InputError(f"fc_weight must be a number >= 0, got {fc_weight!r}")
        self.layers = parse_vit_layers(layers)
        self.fc_weight = float(fc_weight)
        if not self.layers and self.fc_weight == 0.0:
            raise InputError("every block weight and fc_weight are 0: the loss would be empty")
        if isinstance(model, nn.Module) and not is_vit(model):
            raise InputError(f"CLIPViTLayerLoss needs a CLIP ViT, got {type(visual_of(model)).__name__}")
        self.distance: TokenDistance = distance
        self.class_token = bool(class_token)
        self.model = CLIPModelRef(model, cache_dir=cache_dir)
        #: The run settings given to the constructor: :meth:`configure` leaves them as they are.
        self.fixed: frozenset[str] = frozenset(
            k
            for k, v in (
                ("num_views", num_views),
                ("identity_weight", identity_weight),
                ("mask_weighting", mask_weighting),
            )
            if v is not None
        ) | (frozenset({"num_views"}) if augment is not None else frozenset())
        self.view_seed = seed
        views = 4 if num_views is None else num_views
        self.augment = augment if augment is not None else ReferenceViews(views, seed=seed)
        self.identity_weight = check_identity_weight(identity_weight, self.augment)

    def configure(self, settings: RunSettings) -> None:
        """Adopt a run's ``num_views`` and ``identity_weight`` unless given to the constructor."""
        super().configure(settings)
        configure_views(self, settings)
        if "mask_weighting" not in self.fixed:  # set by a run with background="weight"
            chosen = settings.mask_weighting
            self.mask_weighting = check_mask_weighting(chosen if chosen is not None else "ignore")

    def term_names(self) -> list[str]:
        return [f"vit_{k}" for k in self.layers] + (["vit_fc"] if self.fc_weight != 0.0 else [])

    def spreads_views(self) -> bool:
        return self.augment.num_views > 0  # with no random views the prefixes would get no signal

    def extra_repr(self) -> str:
        return (
            f"layers={self.layers}, distance={self.distance!r}, class_token={self.class_token}, "
            f"fc_weight={self.fc_weight}, model={self.model!r}, weight={self.weight}"
            + ("" if self.identity_weight is None else f", identity_weight={self.identity_weight}")
        )

    def _tower(self, device: torch.device) -> nn.Module:
        visual: nn.Module = visual_of(self.model.get(device))
        if not is_vit(visual):
            raise InputError(f"CLIPViTLayerLoss needs a CLIP ViT, got {type(visual).__name__}")
        depth = len(getattr(visual, "transformer").resblocks)  # noqa: B009
        deepest = max((int(k[5:]) for k in self.layers), default=-1)
        if deepest >= depth:
            raise InputError(
                f"layers name block{deepest} but the ViT has {depth} blocks (block0..block{depth - 1})"
            )
        return visual

    def load(self, device: torch.device) -> None:
        """Load the model now and check that it is a ViT with every requested block."""
        super().load(device)
        self._tower(device)

    def features(self, visual: nn.Module, images: Tensor) -> dict[str, Tensor]:
        """The needed features of CLIP-normalised ``images [N, 3, S, S]``: ``{"block<i>": [N, L, D]}``
        (by block name, the pass stopping after the deepest) and, with ``fc_weight``, ``"fc": [N, E]``."""
        if self.fc_weight == 0.0:
            return vit_tokens(visual, images, list(self.layers))
        full = vit_features(visual, images, attention=False)
        assert full.embedding is not None
        out = {k: full.tokens[int(k[5:])] for k in self.layers}
        out["fc"] = full.embedding
        return out

    def view_features(self, visual: nn.Module, views: Tensor) -> dict[str, Tensor]:
        n = views.shape[0]
        feats = self.features(visual, rearrange(views, "n v c h w -> (n v) c h w"))
        return {k: rearrange(f, "(n v) ... -> n v ...", n=n) for k, f in feats.items()}

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> dict[str, Tensor]:
        visual = self._tower(sketch.device)
        masking = MaskWeighting.start(self.mask_weighting, context, self.augment)  # losses/masking.py
        target = masking.target(target)
        sources = context.sources_for(self.augment.num_outputs(context.train))
        xs, ys = self.augment(sketch, target, context.generators, train=context.train, sources=sources)
        assert ys is not None
        fx = self.view_features(visual, xs)  # {name: [B, V, L, D]}, {"fc": [B, V, E]}
        with torch.no_grad():
            fy = self.view_features(visual, ys)  # [1 or B, V, ...]
        weights = (
            identity_view_weights(self.identity_weight, xs.shape[1], sketch.device) if context.train else None
        )
        first = 0 if self.class_token else 1
        out: dict[str, Tensor] = {}
        for key, w in self.layers.items():
            x = fx[key][:, :, first:].to(sketch.dtype)
            y = fy[key][:, :, first:].to(sketch.dtype)
            out[f"vit_{key}"] = w * feature_distance(x, y, self.distance, x.dim() - 1, weights)
        if masking.weights_features:  # the token terms weighted by the mask on the patch grid
            mviews = masking.views(sketch)
            out |= masked_layer_terms(
                self.layers,
                fx,
                fy,
                mviews,
                self.distance,
                sketch.dtype,
                weights,
                prefix="vit_",
                first_token=first,
            )
        if self.fc_weight != 0.0:
            ex, ey = fx["fc"].to(sketch.dtype), fy["fc"].to(sketch.dtype)
            out["vit_fc"] = self.fc_weight * embedding_distance(ex, ey, weights)
        return out
