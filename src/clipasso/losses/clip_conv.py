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

Speed options (measured in ``docs/performance.md``):

* ``precision``: ``"fp32"``; ``"bf16"`` (autocast of the CLIP passes, distances in fp32); ``"auto"``
  (bf16 where the device has fast bf16, i.e. CUDA with bf16 support or a CPU with AVX512-BF16/AMX,
  after an accuracy guard: on the first call the input gradient of the un-augmented loss is computed
  in fp32 and in bf16, and bf16 is kept only if their cosine is at least ``bf16_min_cosine`` for
  every sketch; otherwise fp32, with a warning). :attr:`CLIPConvLoss.active_precision` tells which.
* ``channels_last``: ResNet inputs in channels-last memory format (same numbers, faster convs).
* ``cache_target_base``: the target's view-0 features are computed once per target and reused (exact:
  view 0 does not depend on the random draw).
* ``target_pool``: a DEVIATION from the reference, off by default: the random views are drawn from a
  fixed pool of ``target_pool`` view parameters (sampled once per target from the loss's own
  generator) whose target features are computed once, so the target pass disappears from the
  iterations. Each sketch still draws its own ``num_views`` pool entries every iteration.
* ``compile_model``: ``torch.compile`` the feature pass (off: on a 2-core CPU it does not pay).
* ``bf16_weights``: bf16 passes run a copy of the tower with its convolution and linear weights in
  bf16 already, instead of autocast casting the fp32 weights on every call (exact; on by default).
* ``fold_batchnorm``: ResNet passes run a copy of the tower with each BatchNorm folded into the
  convolution before it (:mod:`clipasso.losses.folding`): the same function without the BatchNorm
  passes, not bit for bit (the folded weights round differently). Off by default and in the
  reference; on in the ``fast`` preset.
* ``prepack_weights``: on a CPU, the convolutions of those copies (the bf16 weight copy or the
  folded one) keep their weights reordered for oneDNN instead of reordering them on every call
  (:mod:`clipasso.losses.prepack`), forward and backward: the same sums. Off by default and in
  the reference; on in the ``fast`` preset.
* ``fuse_activations``: with both of those (without them it does nothing), the folded copy's
  ReLUs and residual additions run inside its convolutions as oneDNN post-ops
  (:mod:`clipasso.losses.fusion`): exact for the ReLUs, the fused addition rounds once where the
  separate one rounds twice in bf16. Off by default and in the reference; on in the ``fast``
  preset. Neither of the last two applies under ``compile_model``.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..augment import ReferenceViews, ViewParams
from ..errors import InputError
from ..models import is_resnet, is_vit, resnet_features, visual_of, vit_features
from .base import CLIPModelRef, LossContext, RunSettings, SketchLoss, configure_views, register_loss
from .folding import FoldedTower
from .fusion import fuse_activations
from .masking import MaskWeighting, check_mask_weighting, masked_layer_terms
from .precision import BF16Tower, Precision, bf16_supported, check_precision, choose_precision
from .prepack import prepack_convolutions

__all__ = [
    "RESNET_CONV_LAYERS",
    "CLIPConvLoss",
    "bf16_supported",
    "check_identity_weight",
    "feature_distance",
    "identity_view_weights",
]

#: The ResNet feature maps the geometric term can use, in forward order.
RESNET_CONV_LAYERS: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

Distance = Literal["l2", "l1", "cos"]
Arch = Literal["resnet", "vit"]
Features = dict[str, Tensor]


@dataclass
class _TargetCache:
    """Target features kept between calls (valid while the target, device and settings are the same)."""

    target: Tensor
    key: tuple[object, ...]
    base: Features | None = None  # view 0, {name: [1, 1, ...]}
    pool_params: list[ViewParams] = field(default_factory=list)
    pool: Features | None = None  # the pool's random views, {name: [1, K, ...]}

    def matches(self, target: Tensor, key: tuple[object, ...]) -> bool:
        t = self.target
        return (
            key == self.key
            and t.shape == target.shape
            and t.device == target.device
            and t.dtype == target.dtype
            and bool(torch.equal(t, target))
        )


def feature_distance(
    x: Tensor, y: Tensor, distance: Distance, channel_dim: int, view_weights: Tensor | None = None
) -> Tensor:
    """Per-sketch mean distance between feature tensors.

    Args:
        x: Sketch features ``[B, V, ...]``.
        y: Target features ``[1 or B, V, ...]`` (broadcast over ``B``).
        distance: ``"l2"`` squared difference, ``"l1"`` absolute difference, ``"cos"`` ``1 - cos``
            along ``channel_dim``.
        channel_dim: The channel/feature dimension of ``x`` (for ``"cos"``).
        view_weights: Optional ``[V]`` weights of the views (summing to 1) instead of the plain mean.

    Returns:
        ``[B]``: the mean over views (or their weighted sum) of the mean over the remaining elements.
    """
    if distance == "l2":
        d = (x - y) ** 2
    elif distance == "l1":
        d = (x - y).abs()
    elif distance == "cos":
        d = (1.0 - F.cosine_similarity(x, y.expand_as(x), dim=channel_dim)).clamp_min(0.0)
    else:
        raise InputError(f"distance must be 'l2', 'l1' or 'cos', got {distance!r}")
    if view_weights is not None:
        return d.flatten(2).mean(dim=2) @ view_weights.to(d.dtype)
    return d.flatten(1).mean(dim=1)


def check_identity_weight(identity_weight: float | None, augment: ReferenceViews) -> float | None:
    """Validate an ``identity_weight`` option (None or in [0, 1], with a view 0 to weight).

    Raises:
        InputError: Out of range, not a number, or the views have no view 0.
    """
    if identity_weight is None:
        return None
    w = identity_weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
        raise InputError(f"identity_weight must be None or in [0, 1], got {identity_weight!r}")
    if not augment.identity_view:
        raise InputError("identity_weight needs the augmentation's view 0 (identity_view=True)")
    return float(w)


def identity_view_weights(
    identity_weight: float | None, views: int, device: torch.device | None = None
) -> Tensor | None:
    """The ``[views]`` weights of a train-mode batch of views (view 0 first): ``identity_weight``
    for view 0 and the rest shared equally by the random views; None for the plain mean
    (``identity_weight`` None, or view 0 alone)."""
    if identity_weight is None or views <= 1:
        return None
    rest = (1.0 - identity_weight) / (views - 1)
    weights = torch.full((views,), rest, device=device)
    weights[0] = identity_weight
    return weights


def embedding_distance(x: Tensor, y: Tensor, view_weights: Tensor | None = None) -> Tensor:
    """``mean_v (1 - cos(x[b, v], y[b, v]))`` for ``x [B, V, E]``, ``y [1 or B, V, E]`` → ``[B]``
    (a weighted sum over ``v`` with ``view_weights [V]``)."""
    d = (1.0 - F.cosine_similarity(x, y.expand_as(x), dim=-1)).clamp_min(0.0)
    if view_weights is not None:
        return d @ view_weights.to(d.dtype)
    return d.mean(dim=1)


def _views(num_views: int | None) -> int:
    return 4 if num_views is None else num_views


@torch.no_grad()
def _fold_probe(tower: nn.Module, folded: nn.Module, dtype: torch.dtype) -> float:
    """Relative difference of ``folded``'s ``layer4`` features (in ``dtype``) from ``tower``'s in
    fp32 on a fixed random 64-pixel probe: the check of every new BatchNorm-folded copy."""
    weight = next(tower.parameters())
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 3, 64, 64, generator=g).to(weight.device)
    want = resnet_features(tower, probe, ["layer4"])["layer4"].float()
    bf16 = dtype == torch.bfloat16
    with torch.autocast(device_type=probe.device.type, dtype=torch.bfloat16, enabled=bf16):
        got = resnet_features(folded, probe, ["layer4"])["layer4"].float()
    scale = want.norm().clamp_min(1e-12)
    return float((got - want).norm() / scale)


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

            This and the other run settings (``identity_weight``, ``precision``,
            ``channels_last``, ``target_pool``, ``fold_batchnorm``, ``prepack_weights``) are left
            unset by default: then a
            :class:`~clipasso.Sketcher` run sets them from its config (:meth:`configure`), and a
            standalone loss uses 4 views, the plain mean, fp32, contiguous inputs and no pool.
            Given here, they stay as given (:attr:`fixed`).
        identity_weight: Share of view 0 in the train-mode mean over the views, the random views
            sharing the rest equally. None (default): the plain mean, ``1 / (1 + num_views)``, which
            is the reference's 0.2 with 4 views. With fewer views, 0.2 keeps the reference's
            objective in expectation: an unbiased, noisier and cheaper estimate of it (see the module
            notes). Eval mode has view 0 only and ignores it.
        augment: A custom :class:`~clipasso.augment.ReferenceViews` (overrides ``num_views``/``seed``).
        seed: Seed of the augmentation's own generator (used when the context gives none).
        arch: ``"resnet"`` or ``"vit"``, only needed for a weights *path* whose name does not start
            with "RN"/"ViT" (the names of the terms depend on it).
        cache_dir: Weights cache for lazy loading.
        weight: Factor on every term.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 where fast and accurate enough, see the
            module notes). Distances are always computed in the sketch's dtype.
        bf16_min_cosine: The accuracy guard of ``"auto"``: least cosine between the fp32 and bf16
            input gradients.
        channels_last: Run ResNet towers on channels-last inputs.
        cache_target_base: Compute the target's view-0 features once per target (exact).
        target_pool: Size of a fixed pool of random views whose target features are cached (0: off,
            the reference behaviour; > 0 is a deviation from the reference).
        compile_model: ``torch.compile`` the feature pass.
        bf16_weights: In bf16 passes, run a copy of the tower whose convolution and linear weights
            are bf16 already (:class:`~clipasso.losses.precision.BF16Tower`; exact: autocast casts
            the frozen fp32 weights to those same values on every call). Costs a bf16 copy of those
            weights (about 110 MB for RN101); False casts on every call, as autocast alone does.
        fold_batchnorm: Run ResNet towers as a copy with each BatchNorm folded into its convolution
            (:class:`~clipasso.losses.folding.FoldedTower`; in bf16 passes its weights are bf16,
            which replaces ``bf16_weights``' copy). The same function, rounded differently: a
            deviation from the reference's arithmetic at the level of bf16's rounding (measured in
            docs/performance.md). Each new copy is checked against the tower on a 64-pixel probe
            and not used if they differ by more than 5 %. Ignored for ViT towers (no BatchNorm).
        prepack_weights: On a CPU, the convolutions of the tower's copy (``bf16_weights``' or
            ``fold_batchnorm``'s; there is none in an fp32 pass without folding) keep their weights
            reordered for oneDNN, once per input shape, instead of on every call, in the forward
            pass and (as the transposed forward convolution) in the backward
            (:class:`~clipasso.losses.prepack.PackedConv2d`). The same sums (bit for bit where
            measured, docs/performance.md); ResNet towers only; not with ``compile_model``
            (inductor packs its own way).
        fuse_activations: With ``fold_batchnorm`` and ``prepack_weights`` (it needs both: without
            them it does nothing; both given as False with it is an error), run the folded copy's
            ReLUs and residual additions inside its convolutions as oneDNN post-ops
            (:func:`~clipasso.losses.fusion.fuse_activations`): the same function, one rounding
            fewer per bottleneck in bf16 (measured in docs/performance.md). CLIP's own ResNet
            classes only; on a CPU.
        mask_weighting: What ``LossContext.mask`` does (:mod:`clipasso.losses.masking`):
            ``"ignore"`` (default, the reference), ``"target"``, ``"features"`` or ``"both"``.

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
        num_views: int | None = None,
        identity_weight: float | None = None,
        augment: ReferenceViews | None = None,
        seed: int = 0,
        arch: Arch | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        weight: float = 1.0,
        precision: Precision | None = None,
        bf16_min_cosine: float = 0.97,
        channels_last: bool | None = None,
        cache_target_base: bool = True,
        target_pool: int | None = None,
        compile_model: bool = False,
        bf16_weights: bool = True,
        fold_batchnorm: bool | None = None,
        prepack_weights: bool | None = None,
        fuse_activations: bool | None = None,
        mask_weighting: str | None = None,
    ) -> None:
        super().__init__(weight=weight)
        given: dict[str, object] = {"num_views": num_views, "identity_weight": identity_weight}
        given |= {
            "precision": precision,
            "channels_last": channels_last,
            "target_pool": target_pool,
            "mask_weighting": mask_weighting,
            "fold_batchnorm": fold_batchnorm,
            "prepack_weights": prepack_weights,
            "fuse_activations": fuse_activations,
        }
        #: The run settings given to the constructor: :meth:`configure` leaves them as they are.
        self.fixed: frozenset[str] = frozenset(k for k, v in given.items() if v is not None)
        if augment is not None:
            self.fixed |= {"num_views"}
        #: What ``LossContext.mask`` does (:mod:`clipasso.losses.masking`); a run sets it (configure).
        self.mask_weighting = check_mask_weighting("ignore" if mask_weighting is None else mask_weighting)
        if distance not in ("l2", "l1", "cos"):
            raise InputError(f"distance must be 'l2', 'l1' or 'cos', got {distance!r}")
        precision = check_precision("fp32" if precision is None else precision)
        if not -1.0 <= float(bf16_min_cosine) <= 1.0:
            raise InputError(f"bf16_min_cosine must be in [-1, 1], got {bf16_min_cosine!r}")
        target_pool = 0 if target_pool is None else target_pool
        if isinstance(target_pool, bool) or not isinstance(target_pool, int) or target_pool < 0:
            raise InputError(f"target_pool must be a non-negative integer, got {target_pool!r}")
        self.precision: Precision = precision
        self.bf16_min_cosine = float(bf16_min_cosine)
        self.channels_last = bool(channels_last)
        self.cache_target_base = bool(cache_target_base)
        self.target_pool = int(target_pool)
        self.view_seed = seed
        self.compile_model = bool(compile_model)
        self.bf16_weights = bool(bf16_weights)
        self._bf16_tower = BF16Tower()
        self.fold_batchnorm = bool(fold_batchnorm)
        self._folded = FoldedTower(check=_fold_probe)
        self.prepack_weights = bool(prepack_weights)
        self.fuse_activations = bool(fuse_activations)
        if self.fuse_activations and (fold_batchnorm is False or prepack_weights is False):
            raise InputError(
                "fuse_activations needs fold_batchnorm and prepack_weights (it fuses the folded, "
                "prepacked tower's ReLUs into its convolutions); set them too, or leave them unset"
            )
        #: The precision in use (``"auto"`` resolves on the first call; None before).
        self.active_precision: Literal["fp32", "bf16"] | None = None if precision == "auto" else precision
        #: Per-sketch cosines of the last accuracy-guard check (``"auto"`` only).
        self.guard_cosines: list[float] = []
        self._cache: _TargetCache | None = None
        self._compiled: Callable[[nn.Module, Tensor], Features] | None = None
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
        self.augment = augment if augment is not None else ReferenceViews(_views(num_views), seed=seed)
        self.identity_weight = check_identity_weight(identity_weight, self.augment)

    def configure(self, settings: RunSettings) -> None:
        """Adopt a run's settings: precision, channels_last, target_pool, num_views and
        identity_weight, except those given to the constructor (:attr:`fixed`)."""
        super().configure(settings)
        if "precision" not in self.fixed and settings.precision != self.precision:
            self.precision = check_precision(settings.precision)
            self.active_precision = None if self.precision == "auto" else self.precision
        if "channels_last" not in self.fixed:
            self.channels_last = bool(settings.channels_last)
        if "mask_weighting" not in self.fixed:  # set by a run with background="weight"
            chosen = settings.mask_weighting
            self.mask_weighting = check_mask_weighting(chosen if chosen is not None else "ignore")
        if "fold_batchnorm" not in self.fixed:
            self.fold_batchnorm = bool(settings.fold_batchnorm)
        if "prepack_weights" not in self.fixed:
            self.prepack_weights = bool(settings.prepack_weights)
        if "fuse_activations" not in self.fixed:
            self.fuse_activations = bool(settings.fuse_activations)
        if "target_pool" not in self.fixed and settings.target_pool != self.target_pool:
            self.target_pool = int(settings.target_pool)
            self.clear_cache()
        configure_views(self, settings)

    def visual(self, device: torch.device) -> nn.Module:
        """The CLIP image tower on ``device`` (loaded on first use)."""
        return visual_of(self.model.get(device))

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

    def spreads_views(self) -> bool:
        return self.augment.num_views > 0  # with no random views the prefixes would get no signal

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, layers={self.layers}, distance={self.distance!r}, "
            f"fc_weight={self.fc_weight}, model={self.model!r}, weight={self.weight}, "
            f"precision={self.precision!r}, channels_last={self.channels_last}, "
            f"target_pool={self.target_pool}"
            + (", fold_batchnorm=True" if self.fold_batchnorm else "")
            + (", prepack_weights=True" if self.prepack_weights else "")
            + (", fuse_activations=True" if self.fuse_activations else "")
            + ("" if self.identity_weight is None else f", identity_weight={self.identity_weight}")
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

    def clear_cache(self) -> None:
        """Forget cached target features (they are also dropped when the target changes)."""
        self._cache = None

    def _run_features(self, visual: nn.Module, images: Tensor, precision: str) -> Features:
        """:meth:`features` under the speed options (precision, memory format, compilation)."""
        if self.channels_last and self.arch == "resnet":
            images = images.contiguous(memory_format=torch.channels_last)
        fn: Callable[[nn.Module, Tensor], Features] = self.features
        if self.compile_model:
            if self._compiled is None:
                self._compiled = cast(Callable[[nn.Module, Tensor], Features], torch.compile(self.features))
            fn = self._compiled
        bf16 = precision == "bf16"
        visual = self._tower_copy(visual, bf16)
        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=bf16):
            return fn(visual, images)

    def _rewrites(self) -> tuple[bool, bool]:
        """Whether a pass's tower copy is prepacked, and whether its activations are fused (only
        in a folded, prepacked copy). Neither under ``compile_model``: the packed convolutions are
        opaque to the compiler (a graph break and a recompilation at each), and inductor packs and
        fuses its own way."""
        pack = self.prepack_weights and self.arch == "resnet" and not self.compile_model
        return pack, pack and self.fuse_activations and self.fold_batchnorm

    def _tower_copy(self, visual: nn.Module, bf16: bool) -> nn.Module:
        """The tower a pass runs: the folded copy, the bf16-weight copy or ``visual`` itself, with
        its convolutions prepacked when ``prepack_weights`` and its activations fused into them
        when ``fuse_activations`` (only copies are changed)."""

        def copy_of() -> nn.Module:
            if self.fold_batchnorm and self.arch == "resnet":
                return self._folded.get(visual, torch.bfloat16 if bf16 else torch.float32)
            if bf16 and self.bf16_weights:
                return self._bf16_tower.get(visual)  # the same bits as autocast's casts, made once
            return visual

        want = self._rewrites()
        out = copy_of()
        if out is visual:
            return visual
        have = out.__dict__.get("_clipasso_rewrites", (False, False))
        if have == want:
            return out
        if any(have):  # something switched off: plain copies again
            self._folded.clear()
            self._bf16_tower.clear()
            out = copy_of()
        if want[0]:
            prepack_convolutions(out)
        if want[1]:
            fuse_activations(out)
        out.__dict__["_clipasso_rewrites"] = want
        return out

    def view_features(self, visual: nn.Module, views: Tensor, precision: str) -> Features:
        """Features of ``views [N, V, 3, S, S]`` as ``{name: [N, V, ...]}``."""
        n, v = views.shape[:2]
        if v == 0:
            raise InputError("no views to compute features of")
        feats = self._run_features(visual, rearrange(views, "n v c h w -> (n v) c h w"), precision)
        return {k: rearrange(f, "(n v) ... -> n v ...", n=n) for k, f in feats.items()}

    def _cache_for(self, visual: nn.Module, target: Tensor, precision: str) -> _TargetCache:
        key = (
            id(visual),
            precision,
            self.channels_last,
            self.fold_batchnorm and self.arch == "resnet",
            self.prepack_weights and self.arch == "resnet",
            self.fuse_activations and self.arch == "resnet",
            self.arch,
            tuple(self.layers),
            self.fc_weight,
            self.augment.size,
            self.augment.normalize,
        )
        if self._cache is None or not self._cache.matches(target, key):
            self._cache = _TargetCache(target=target.detach().clone(), key=key)
        return self._cache

    @torch.no_grad()
    def _base_target_features(self, visual: nn.Module, target: Tensor, precision: str) -> Features:
        """The target's view-0 features ``{name: [1, 1, ...]}`` (cached when ``cache_target_base``)."""
        cache = self._cache_for(visual, target, precision) if self.cache_target_base else None
        if cache is not None and cache.base is not None:
            return cache.base
        y0, _ = self.augment(target, None, train=False)
        base = self.view_features(visual, y0, precision)
        if cache is not None:
            cache.base = base
        return base

    def target_features(
        self, visual: nn.Module, target: Tensor, ys: Tensor, base_first: bool, precision: str
    ) -> Features:
        """Target features ``{name: [Bt, V, ...]}`` of the views ``ys [Bt, V, 3, S, S]`` (no autograd).

        ``base_first``: view 0 of ``ys`` is the target's un-augmented view, so its cached features are
        reused when ``cache_target_base`` is on and the target is a single image.
        """
        with torch.no_grad():
            if not (base_first and self.cache_target_base and target.shape[0] == 1):
                return self.view_features(visual, ys, precision)
            base = self._base_target_features(visual, target, precision)
            count = ys.shape[0]
            if ys.shape[1] == 1:
                return {k: f.expand(count, *f.shape[1:]) for k, f in base.items()}
            rest = self.view_features(visual, ys[:, 1:], precision)
            return {k: torch.cat([base[k].expand(count, *base[k].shape[1:]), rest[k]], dim=1) for k in rest}

    @torch.no_grad()
    def _pool_features(self, visual: nn.Module, target: Tensor, precision: str) -> _TargetCache:
        """The pool's view parameters and target features (computed once per target)."""
        cache = self._cache_for(visual, target, precision)
        if cache.pool is None or len(cache.pool_params) != self.target_pool:
            height, width = target.shape[-2:]
            params = self.augment.sample_pool(height, width, self.target_pool)
            chunks: list[Features] = []
            step = 8
            for start in range(0, len(params), step):
                views = self.augment.views_from(target, params[start : start + step], identity=False)
                chunks.append(self.view_features(visual, views, precision))
            cache.pool_params = list(params)
            cache.pool = {k: torch.cat([c[k] for c in chunks], dim=1) for k in chunks[0]}
        return cache

    def _pooled_views(
        self,
        visual: nn.Module,
        sketch: Tensor,
        target: Tensor,
        generators: list[torch.Generator] | torch.Generator | None,
        precision: str,
        sources: Tensor | None = None,
    ) -> tuple[Tensor, Features]:
        """Train-mode views drawn from the pool: sketch views ``[B, V, 3, S, S]`` and the cached
        target features ``{name: [Bt, V, ...]}`` (``Bt`` = B for per-sketch generators, else 1);
        ``sources [B, V, 3, H, W]``: view ``v`` of sketch ``b`` made from ``sources[b, v]``."""
        cache = self._pool_features(visual, target, precision)
        assert cache.pool is not None
        base = self._base_target_features(visual, target, precision)
        batch, count = sketch.shape[0], self.augment.num_views
        if isinstance(generators, (list, tuple)):
            if len(generators) != batch:
                raise InputError(f"got {len(generators)} generators for a batch of {batch} sketches")
            gens = list(generators)
        else:
            gens = [generators if isinstance(generators, torch.Generator) else self.augment.generator]
        picks = [
            torch.randint(self.target_pool, (count,), generator=g, device=g.device).tolist() for g in gens
        ]
        xs_list = []
        for b in range(batch):
            pick = picks[b if len(picks) > 1 else 0]
            params = [cache.pool_params[i] for i in pick]
            image = sketch[b : b + 1] if sources is None else sources[b : b + 1]
            xs_list.append(self.augment.views_from(image, params, identity=True))
        xs = torch.cat(xs_list, dim=0)
        fy: Features = {}
        for k, pool in cache.pool.items():
            rows = [torch.cat([base[k][0], pool[0, torch.tensor(p, device=pool.device)]]) for p in picks]
            fy[k] = torch.stack(rows, dim=0)
        return xs, fy

    def resolve_precision(self, visual: nn.Module, sketch: Tensor, target: Tensor) -> str:
        """The precision of this run's CLIP passes (``"auto"`` is decided on the first call, by the
        accuracy guard of :func:`~clipasso.losses.precision.choose_precision`, and kept)."""
        if self.active_precision is None:
            self.active_precision, cosines = choose_precision(
                self.precision,
                sketch.device,
                lambda: self.gradient_cosines(sketch, target, ("fp32", "bf16"), visual=visual),
                self.bf16_min_cosine,
                type(self).__name__,
            )
            if cosines:
                self.guard_cosines = cosines
        return self.active_precision

    def gradient_cosines(
        self,
        sketch: Tensor,
        target: Tensor,
        precisions: tuple[str, str] = ("fp32", "bf16"),
        *,
        visual: nn.Module | None = None,
    ) -> list[float]:
        """Per-sketch cosine between the input gradients of the un-augmented loss under two precisions.

        Args:
            sketch: ``[B, 3, H, W]`` in [0, 1].
            target: ``[1 or B, 3, H, W]``.
            precisions: The two precisions to compare.
            visual: The CLIP tower (default: this loss's model).

        Returns:
            ``B`` cosines (1.0 = same direction).
        """
        visual = visual_of(self.model.get(sketch.device)) if visual is None else visual
        target = target.to(device=sketch.device, dtype=sketch.dtype)
        grads = []
        for precision in precisions:
            with torch.enable_grad():
                x = sketch.detach().clone().requires_grad_(True)
                xs, ys = self.augment(x, target, train=False)
                assert ys is not None
                fx = self.view_features(visual, xs, precision)
                with torch.no_grad():
                    fy = self.view_features(visual, ys, precision)
                total = sum(self.terms(fx, fy, sketch.dtype).values())
                (grad,) = torch.autograd.grad(cast(Tensor, total).sum(), x)
            grads.append(grad.flatten(1).double())
        cos = F.cosine_similarity(grads[0], grads[1], dim=1)
        return [float(c) for c in cos]

    def view_weights(self, views: int, device: torch.device | None = None) -> Tensor | None:
        """The ``[views]`` weights of a train-mode batch of views (view 0 first), or None for the
        plain mean (``identity_weight`` unset, or view 0 alone).

        Example:
            >>> from clipasso.testing import tiny_clip
            >>> CLIPConvLoss(tiny_clip("resnet"), num_views=2, identity_weight=0.2).view_weights(3)
            tensor([0.2000, 0.4000, 0.4000])
        """
        return identity_view_weights(self.identity_weight, views, device)

    def terms(
        self, fx: Features, fy: Features, dtype: torch.dtype, view_weights: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The weighted terms from sketch features ``{name: [B, V, ...]}`` and target features
        ``{name: [1 or B, V, ...]}`` (views weighted by ``view_weights [V]``, else their mean)."""
        out: dict[str, Tensor] = {}
        for key, w in self.layers.items():
            x, y = fx[key].to(dtype), fy[key].to(dtype)
            # maps [B, V, C, h, w]: channels in dim 2; tokens [B, V, L, D]: the last dim
            channel_dim = 2 if self.arch == "resnet" else x.dim() - 1
            out[f"conv_{key}"] = w * feature_distance(x, y, self.distance, channel_dim, view_weights)
        if self.fc_weight != 0.0:
            out["fc"] = self.fc_weight * embedding_distance(
                fx["fc"].to(dtype), fy["fc"].to(dtype), view_weights
            )
        return out

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> dict[str, Tensor]:
        # -- background weighting (issue 21): LossContext.mask as a soft weight, losses/masking.py --
        masking = MaskWeighting.start(self.mask_weighting, context, self.augment)
        target = masking.target(target)
        # -- end of the background-weighting hook --
        visual = visual_of(self.model.get(sketch.device))
        actual = "vit" if is_vit(visual) else "resnet" if is_resnet(visual) else None
        if actual != self.arch:
            raise InputError(
                f"CLIPConvLoss was configured for a {self.arch} tower but the model is a {actual}"
            )
        precision = self.resolve_precision(visual, sketch, target)
        views = self.augment.num_outputs(context.train)
        pooled = (
            context.train
            and self.target_pool > 0
            and self.augment.num_views > 0
            and self.augment.identity_view
            and target.shape[0] == 1
        )
        sources = context.sources_for(views)  # nested "spread" training: a prefix per view
        if pooled:
            xs, fy = self._pooled_views(visual, sketch, target, context.generators, precision, sources)
        else:
            xs, ys = self.augment(sketch, target, context.generators, train=context.train, sources=sources)
            assert ys is not None
            base_first = not context.train or self.augment.identity_view
            fy = self.target_features(visual, target, ys, base_first, precision)
        assert xs.shape[1] == views
        fx = self.view_features(visual, xs, precision)
        weights = self.view_weights(views, sketch.device) if context.train else None
        terms = self.terms(fx, fy, sketch.dtype, weights)
        if masking.weights_features:  # background weighting hook: the layer terms weighted by the mask
            if pooled:
                raise InputError("mask_weighting 'features' / 'both' does not work with target_pool > 0")
            mviews = masking.views(sketch)
            terms |= masked_layer_terms(self.layers, fx, fy, mviews, self.distance, sketch.dtype, weights)
        elif context.train and context.view0 is not None and self.augment.identity_view:
            # free evaluations: view 0 is the un-augmented sketch, its features are computed anyway
            # (not with mask-weighted features: those terms are evaluated by a second forward)
            with torch.no_grad():
                first = self.terms(
                    {k: f[:, :1] for k, f in fx.items()}, {k: f[:, :1] for k, f in fy.items()}, sketch.dtype
                )
            context.view0.update(first)
        return terms
