"""A weights-free edge term: multi-scale blurred sketch ink vs the target's XDoG edge map.

.. math::

    L_b = \\sum_k \\frac{w_k}{\\sum_j w_j}\\; \\mathrm{mean}_{y,x}\\, m \\big(G_{\\sigma_k} * (1 - g(s_b))
        - G_{\\sigma_k} * (1 - X(t_b))\\big)^2

with :math:`g` the grey conversion of the sketch, :math:`X` the target's edge ink: by default the
outline (3×3 dilation minus erosion) of the binarised XDoG ink ``1 - xdog(t)``
(:func:`clipasso.xdog.xdog`: 1 = no edge; XDoG also inks dark filled regions, whose outline is
what a contour sketch should follow), :math:`G_\\sigma` a Gaussian blur (reflect borders;
:math:`\\sigma = 0` is no blur)
and ``m`` the optional mask. The coarse scales give a sketch stroke a gradient towards an edge a few
pixels away; the fine scales make it sit on the edge. No pretrained network is involved, so it runs
without CLIP weights (tests, CPU-only machines) and gives contour-following sketches.

Example:
    >>> import torch
    >>> from clipasso.losses import EdgeLoss
    >>> target = torch.ones(1, 3, 32, 32); target[..., 8:24, 8:24] = 0.0
    >>> EdgeLoss(sigmas=(0.0, 2.0))(torch.ones(1, 3, 32, 32), target)["edge"].shape
    torch.Size([1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..xdog import edge_ink, gaussian_blur, rgb_to_grey
from .base import LossContext, RunSettings, SketchLoss, register_loss
from .masking import MaskWeighting, check_mask_weighting
from .pixel import masked_mean

__all__ = ["EdgeLoss"]


@register_loss("edges")
class EdgeLoss(SketchLoss):
    """Multi-scale MSE between the blurred sketch ink and the blurred target edges.

    Args:
        sigmas: Blur scales in pixels (0 = unblurred).
        scale_weights: One weight per scale (default: equal); normalised to sum 1.
        edges: ``"outline"`` (default): the boundary of the XDoG ink (3×3 dilation minus erosion), so
            a dark filled region contributes its contour only; ``"fill"``: the XDoG ink itself
            (XDoG fills dark regions, so sketches then hatch them).
        xdog_kwargs: Options passed to :func:`clipasso.xdog.xdog` (e.g. ``sigma``, ``binarize``).
            The target is passed in [0, 1] (not CLIP-normalised).
        weight: Factor on the term.
        mask_weighting: What ``LossContext.mask`` does (:mod:`clipasso.losses.masking`):
            ``"features"`` (default, as before: the per-pixel errors weighted), ``"target"`` (the
            edges of the target composited onto white by the mask instead: background edges fade
            out, background ink still costs), ``"both"`` or ``"ignore"``.

    Term: ``"edge"``, ``[B]``.
    """

    name = "edge"
    mode_independent = True
    is_distance = False  # 0 when the sketch equals the target's edge drawing, not the target itself

    def __init__(
        self,
        *,
        sigmas: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
        scale_weights: Sequence[float] | None = None,
        edges: Literal["outline", "fill"] = "outline",
        xdog_kwargs: Mapping[str, Any] | None = None,
        weight: float = 1.0,
        mask_weighting: str | None = None,
    ) -> None:
        super().__init__(weight=weight)
        #: The run settings given to the constructor: :meth:`configure` leaves them as they are.
        self.fixed: frozenset[str] = frozenset({"mask_weighting"} if mask_weighting is not None else ())
        self.mask_weighting = check_mask_weighting("features" if mask_weighting is None else mask_weighting)
        self._mask_weighting_default = self.mask_weighting
        sig = [float(s) for s in sigmas]
        if not sig or any(s < 0 for s in sig):
            raise InputError(f"sigmas must be a non-empty list of values >= 0, got {list(sigmas)}")
        ws = [1.0] * len(sig) if scale_weights is None else [float(w) for w in scale_weights]
        if len(ws) != len(sig) or any(w < 0 for w in ws) or sum(ws) <= 0:
            raise InputError(
                f"scale_weights must be {len(sig)} values >= 0 with a positive sum, got {scale_weights}"
            )
        total = sum(ws)
        self.sigmas = sig
        self.scale_weights = [w / total for w in ws]
        if edges not in ("outline", "fill"):
            raise InputError(f"edges must be 'outline' or 'fill', got {edges!r}")
        self.edges = edges
        self.xdog_kwargs = dict(xdog_kwargs or {})
        # the target's blurred edge maps, kept while the target is the same (they need no gradient)
        self._target_maps: tuple[Tensor, list[Tensor]] | None = None

    def extra_repr(self) -> str:
        return (
            f"sigmas={self.sigmas}, edges={self.edges!r}, scale_weights={self.scale_weights}, "
            f"weight={self.weight}"
        )

    def edge_ink(self, target: Tensor) -> Tensor:
        """The target's edges as ink, ``[Bt, 1, H, W]`` (1 on edges, no gradient):
        :func:`clipasso.xdog.edge_ink` with this loss's ``edges`` and ``xdog_kwargs``."""
        return edge_ink(target, mode=self.edges, **self.xdog_kwargs)

    def configure(self, settings: RunSettings) -> None:
        """Adopt a run's ``mask_weighting`` (set with ``background="weight"``; otherwise this loss's
        default, ``"features"``) unless given to the constructor."""
        super().configure(settings)
        if "mask_weighting" not in self.fixed:
            chosen = settings.mask_weighting
            self.mask_weighting = (
                check_mask_weighting(chosen) if chosen is not None else self._mask_weighting_default
            )

    def target_maps(self, target: Tensor) -> list[Tensor]:
        """The target's edge ink blurred at each of :attr:`sigmas`, ``[Bt, 1, H, W]`` each (no
        gradient), computed once per target: the same values as computing them every call."""
        cached = self._target_maps
        if (
            cached is not None
            and cached[0].shape == target.shape
            and cached[0].device == target.device
            and cached[0].dtype == target.dtype
            and bool(torch.equal(cached[0], target))
        ):
            return cached[1]
        with torch.no_grad():
            ink_t = self.edge_ink(target)
            maps = [gaussian_blur(ink_t, sigma) if sigma > 0 else ink_t for sigma in self.sigmas]
        self._target_maps = (target.detach().clone(), maps)
        return maps

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
        masking = MaskWeighting.start(self.mask_weighting, context)  # losses/masking.py
        target = masking.target(target)  # "target"/"both": composited onto white by the mask
        error_mask = masking.mask if masking.weights_features else None
        ink_s = 1.0 - rgb_to_grey(sketch)
        maps = self.target_maps(target)
        out = sketch.new_zeros(sketch.shape[0])
        for sigma, w, bt in zip(self.sigmas, self.scale_weights, maps):
            if w == 0.0:
                continue
            bs = gaussian_blur(ink_s, sigma) if sigma > 0 else ink_s
            out = out + w * masked_mean((bs - bt) ** 2, error_mask)
        return out
