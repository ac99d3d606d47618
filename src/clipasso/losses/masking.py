"""Weighting a loss by the object: ``LossContext.mask`` as a soft weight map (one-stage backgrounds).

With ``background="weight"`` (:mod:`clipasso.background`) the image is kept whole and its soft object
weight ``W [1 or B, 1, H, W]`` in [0, 1] travels as ``LossContext.mask``. A loss with a
``mask_weighting`` option uses it in one of these ways (``"ignore"``: not at all):

* ``"target"``: the target composited onto white by ``W``, ``t' = W · t + (1 − W)``, before the
  views and features: the background fades to white around the object, softly (a matte error
  of a few pixels changes ``t'`` a little instead of cutting the object); the sketch is unchanged,
  so ink on the background is penalised, as on white. The edge term takes the edges of ``t'``.
* ``"features"``: every per-position difference weighted by ``W`` at that layer's resolution
  (CLIP ResNet maps: ``W``'s view, warped with the same view parameters as the images, average-
  pooled to the map's ``h × w``, layer2 28 × 28, layer3 14 × 14; ViT tokens: pooled to the ``g × g``
  patch grid, the class token at weight 1), normalised by the weights' sum::

      L_b = Σ_l w_l · mean_v [ Σ_p W_v(p) · d_l(p) / Σ_p W_v(p) ]

  with ``d_l(p)`` the layer's distance at position ``p`` (mean over the channels of the squared or
  absolute difference, or ``1 − cos`` along them). ``W ≡ 1`` gives the unweighted term exactly,
  except where a random view's perspective warp leaves the image: the mask's view is 0 there (the
  images' views are black in both sketch and target), so those positions do not count. The
  embedding (``fc``) term has no positions and is unchanged. The edge term: its per-pixel squared
  error weighted (:func:`~clipasso.losses.pixel.masked_mean`, what it always did with a mask).
* ``"both"``: the two together.

The views of ``W`` are made by replaying the augmentation: the generators' states are read before the
loss draws its views (:meth:`MaskWeighting.start`) and the same view parameters are drawn again from
copies, so ``W``'s views line up with the images' exactly (tested).

Example:
    >>> import torch
    >>> x, y = torch.rand(2, 1, 8, 4, 4), torch.rand(1, 1, 8, 4, 4)
    >>> w = torch.ones(1, 1, 1, 4, 4)
    >>> from clipasso.losses.clip_conv import feature_distance
    >>> bool(torch.allclose(weighted_feature_distance(x, y, w, "l2", 2), feature_distance(x, y, "l2", 2)))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..augment import ReferenceViews, apply_view, base_view
from ..errors import InputError
from .base import LossContext

__all__ = [
    "MASK_WEIGHTINGS",
    "MaskWeighting",
    "check_mask_weighting",
    "composite_target",
    "pool_weights",
    "weighted_feature_distance",
    "weighted_token_distance",
]

Mode = Literal["ignore", "target", "features", "both"]
#: The ``mask_weighting`` values every masking-aware loss takes.
MASK_WEIGHTINGS: tuple[str, ...] = ("ignore", "target", "features", "both")


def check_mask_weighting(value: str) -> Mode:
    """Validate a ``mask_weighting`` option."""
    if value not in MASK_WEIGHTINGS:
        raise InputError(f"mask_weighting must be one of {MASK_WEIGHTINGS}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_mask(mask: Tensor, like: Tensor) -> Tensor:
    h, w = like.shape[-2:]
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w):
        raise InputError(f"LossContext.mask must be [1 or B, 1, {h}, {w}], got {tuple(mask.shape)}")
    return mask.to(device=like.device, dtype=like.dtype).clamp(0, 1)


def composite_target(target: Tensor, mask: Tensor) -> Tensor:
    """``W · t + (1 − W)``: ``target [Bt, 3, H, W]`` onto white by ``mask [1 or B, 1, H, W]``."""
    w = _check_mask(mask, target)
    return target * w + (1.0 - w)


def pool_weights(views: Tensor, size: tuple[int, int]) -> Tensor:
    """``[B, V, 1, S, S]`` weight views average-pooled to a feature map's ``size`` → ``[B, V, 1, h, w]``."""
    b, v = views.shape[:2]
    pooled = F.adaptive_avg_pool2d(views.flatten(0, 1), size)
    return pooled.reshape(b, v, 1, *size)


def _reduce(d: Tensor, w: Tensor, view_weights: Tensor | None) -> Tensor:
    """``d [B, V, P]``, ``w [Bw, V, P]`` → ``[B]``: the weighted mean over P, then over the views."""
    num = (d * w).sum(dim=2)
    den = w.sum(dim=2).clamp_min(1e-8)
    per_view = num / den  # [B, V]
    if view_weights is not None:
        return per_view @ view_weights.to(per_view.dtype)
    return per_view.mean(dim=1)


def weighted_feature_distance(
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    distance: str,
    channel_dim: int = 2,
    view_weights: Tensor | None = None,
) -> Tensor:
    """Mask-weighted distance of feature maps (module docstring): ``x [B, V, C, h, w]``,
    ``y [1 or B, V, C, h, w]``, ``weights [1 or B, V, 1, S, S]`` (pooled to ``h × w`` here) → ``[B]``.

    ``distance``: ``"l2"``, ``"l1"`` or ``"cos"`` (along ``channel_dim``, which must be 2).
    """
    if channel_dim != 2 or x.dim() != 5:
        raise InputError(f"feature maps must be [B, V, C, h, w] (channels in dim 2), got {tuple(x.shape)}")
    if distance == "l2":
        d = ((x - y) ** 2).mean(dim=2)
    elif distance == "l1":
        d = (x - y).abs().mean(dim=2)
    elif distance == "cos":
        d = (1.0 - F.cosine_similarity(x, y.expand_as(x), dim=2)).clamp_min(0.0)
    else:
        raise InputError(f"distance must be 'l2', 'l1' or 'cos', got {distance!r}")
    w = pool_weights(weights.to(d.dtype), (int(x.shape[-2]), int(x.shape[-1])))[:, :, 0]
    return _reduce(d.flatten(2), w.flatten(2), view_weights)


def weighted_token_distance(
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    distance: str,
    *,
    class_token: bool,
    view_weights: Tensor | None = None,
) -> Tensor:
    """Mask-weighted distance of ViT tokens: ``x [B, V, T, D]`` (patch tokens, with the class token
    first when ``class_token``), ``weights [1 or B, V, 1, S, S]`` pooled to the ``g × g`` patch grid
    (the class token at weight 1) → ``[B]``. ``distance``: ``"l2"`` or ``"cos"`` along ``D``."""
    patches = x.shape[2] - int(class_token)
    g = round(patches**0.5)
    if g * g != patches:
        raise InputError(f"{patches} patch tokens do not form a square grid")
    if distance == "l2":
        d = ((x - y) ** 2).mean(dim=-1)
    elif distance == "cos":
        d = (1.0 - F.cosine_similarity(x, y.expand_as(x), dim=-1)).clamp_min(0.0)
    else:
        raise InputError(f"distance must be 'l2' or 'cos', got {distance!r}")
    w = pool_weights(weights.to(d.dtype), (g, g)).flatten(2)  # [Bw, V, g*g], row-major like the tokens
    if class_token:
        w = torch.cat([torch.ones_like(w[:, :, :1]), w], dim=2)
    return _reduce(d, w, view_weights)


def _snapshot(generators: object, augment: ReferenceViews) -> list[Tensor] | Tensor:
    if isinstance(generators, (list, tuple)):
        return [g.get_state() for g in generators]
    gen = generators if isinstance(generators, torch.Generator) else augment.generator
    return gen.get_state()


def _replay(state: Tensor, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.set_state(state)
    return g


@dataclass
class MaskWeighting:
    """One loss call's use of ``LossContext.mask`` (built by :meth:`start` before the views are drawn).

    Attributes:
        mode: The loss's ``mask_weighting`` (``"ignore"`` when the context has no mask).
        mask: The weight map ``[1 or B, 1, H, W]``, or None.
        augment: The loss's views.
        states: The generators' states before the loss drew its views (for ``"features"``).
        generators: The context's generators (their kind and devices).
        train: Train-mode views (else view 0 only).
    """

    mode: Mode
    mask: Tensor | None
    augment: ReferenceViews | None
    states: list[Tensor] | Tensor | None
    generators: object
    train: bool

    @classmethod
    def start(cls, mode: str, context: LossContext, augment: ReferenceViews | None = None) -> MaskWeighting:
        """Read what is needed before the loss draws its views (call it first in ``compute``)."""
        m = check_mask_weighting(mode)
        mask = context.mask if m != "ignore" else None
        if mask is None:
            m = "ignore"
        states = None
        if m in ("features", "both") and augment is not None and context.train and augment.num_views > 0:
            states = _snapshot(context.generators, augment)
        return cls(m, mask, augment, states, context.generators, context.train)

    @property
    def composites(self) -> bool:
        """True for ``"target"`` and ``"both"``."""
        return self.mode in ("target", "both")

    @property
    def weights_features(self) -> bool:
        """True for ``"features"`` and ``"both"``."""
        return self.mode in ("features", "both")

    def target(self, target: Tensor) -> Tensor:
        """The target the loss should use: composited onto white by the mask for ``"target"``/``"both"``."""
        if not self.composites or self.mask is None:
            return target
        if self.mask.shape[0] not in (1, target.shape[0]) and target.shape[0] != 1:
            raise InputError(f"a mask batch of {self.mask.shape[0]} for a target batch of {target.shape[0]}")
        return composite_target(target, self.mask)

    def views(self, like: Tensor) -> Tensor:
        """The mask's views ``[Bm, V, 1, S, S]``, the same warps as the views of ``like [B, 3, H, W]``."""
        if self.mask is None or self.augment is None:
            raise InputError("no mask to make views of")
        aug = self.augment
        mask = _check_mask(self.mask, like)
        if not self.train or aug.num_views == 0:
            return base_view(mask, aug.size)[:, None]
        h, w = int(like.shape[-2]), int(like.shape[-1])

        def one(m: Tensor, params: Sequence[object]) -> Tensor:
            views = [base_view(m, aug.size)] if aug.identity_view else []
            views += [apply_view(m, p, aug.size, fill=0.0) for p in params]  # type: ignore[arg-type]
            return torch.stack(views, dim=1)

        assert self.states is not None
        if isinstance(self.states, list):
            gens = self.generators
            assert isinstance(gens, (list, tuple))
            out = []
            for b, (state, g) in enumerate(zip(self.states, gens)):
                params = aug.sample(h, w, _replay(state, g.device))
                out.append(one(mask[b : b + 1] if mask.shape[0] > 1 else mask, params))
            return torch.cat(out, dim=0)
        device = (
            self.generators.device if isinstance(self.generators, torch.Generator) else torch.device("cpu")
        )
        return one(mask, aug.sample(h, w, _replay(self.states, device)))


def masked_layer_terms(
    layers: dict[str, float],
    fx: dict[str, Tensor],
    fy: dict[str, Tensor],
    weights: Tensor,
    distance: str,
    dtype: torch.dtype,
    view_weights: Tensor | None = None,
    *,
    prefix: str = "conv_",
    first_token: int | None = None,
) -> dict[str, Tensor]:
    """The mask-weighted layer terms ``{prefix + layer: w · L [B]}`` of a CLIP loss.

    Args:
        layers: ``{layer: weight}``.
        fx, fy: Sketch / target features by layer: maps ``[B, V, C, h, w]`` or tokens ``[B, V, L, D]``.
        weights: The mask's views ``[1 or B, V, 1, S, S]`` (:meth:`MaskWeighting.views`).
        distance: The loss's distance.
        dtype: The distances' dtype.
        view_weights: Optional ``[V]`` weights of the views.
        prefix: The terms' name prefix.
        first_token: Tokens only: the first token compared (0: with the class token, 1: patches only).
    """
    out: dict[str, Tensor] = {}
    for key, w in layers.items():
        x, y = fx[key].to(dtype), fy[key].to(dtype)
        if x.dim() == 5:
            out[prefix + key] = w * weighted_feature_distance(x, y, weights, distance, 2, view_weights)
        else:
            start = 0 if first_token is None else first_token
            out[prefix + key] = w * weighted_token_distance(
                x[:, :, start:],
                y[:, :, start:],
                weights,
                distance,
                class_token=start == 0,
                view_weights=view_weights,
            )
    return out
