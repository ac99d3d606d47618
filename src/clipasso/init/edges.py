"""Weights-free starts on the target's edges, spread out, preferring the object's silhouette.

The saliency initializer weights XDoG edges by CLIP attention; without CLIP weights (the ``edges``
objective) this one weights the edges the :class:`~clipasso.losses.EdgeLoss` draws towards by a
weights-free saliency, the *silhouette relevance*, and spreads the starts along them::

    bg    = per-channel median of the canvas's border pixels           # the background colour
    d     = |target − bg|₂ / √3                                        # [H, W] in [0, 1]
    fg    = d > threshold                                               # a rough object mask (0.1)
    band  = min(4 · G_σ(fg) · G_σ(1 − fg), 1)                          # 1 along fg's boundary
    R     = floor + (1 − floor) · band                                 # relevance in [floor, 1]
    E     = edge_ink(target)                                           # 1 on the edges
    p     ∝ exp(E · R / τ) where E · R > 0, 0 elsewhere                # saliency_distribution
    pixels = N draws, each at least `spacing` from the others          # sample_spread_pixels
    p0    = (col / W, row / H), then the shared random walk

(``G_σ``: a Gaussian blur, ``σ = sigma · min(H, W)``). For an object on a plain background the band
is the object's outline, so the strokes start on the silhouette first and on inner edges (windows,
fur) with the lower weight ``floor``; on a cluttered photo ``fg`` is a rough guess and the band a
weak preference. A constant image has no edges: then ``InputError``, as for too few edge pixels.

Example:
    >>> import torch
    >>> img = torch.ones(1, 3, 64, 64); img[..., 16:48, 16:48] = 0.2
    >>> res = EdgeInitializer()(img, 4, generator=torch.Generator().manual_seed(0))
    >>> bool(res.edges[res.pixels[:, 0], res.pixels[:, 1]].eq(0).all())  # every start on an edge
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..xdog import edge_ink, gaussian_blur
from .base import (
    Initializer,
    InitResult,
    check_mask,
    check_num_strokes,
    check_target,
    make_strokes,
    random_walk,
    register_initializer,
    sample_spread_pixels,
    validate_walk_options,
)
from .saliency import saliency_distribution
from .weights_free import weights_free_relevance

__all__ = ["EdgeInitializer", "border_is_plain", "silhouette_relevance"]

Relevance = Literal["auto", "silhouette", "saliency", "uniform"]


def border_is_plain(target: Tensor, *, threshold: float = 0.1, share: float = 0.1) -> bool:
    """True when at most ``share`` of the canvas's border pixels differ from the border's median
    colour by more than ``threshold`` (as a fraction of the RGB cube's diagonal): a plain background.

    Example:
        >>> img = torch.ones(1, 3, 32, 32); img[..., 8:24, 8:24] = 0.0
        >>> border_is_plain(img), border_is_plain(torch.rand(1, 3, 32, 32))
        (True, False)
    """
    check_target(target)
    img = target.detach()[0].to(torch.float32)
    border = torch.cat([img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1]], dim=1)
    bg = border.median(dim=1).values.view(3, 1)
    d = ((border - bg) ** 2).sum(0).sqrt() / math.sqrt(3.0)
    return float((d > float(threshold)).float().mean()) <= float(share)


def silhouette_relevance(
    target: Tensor, *, sigma: float = 0.02, floor: float = 0.25, threshold: float = 0.1
) -> Tensor:
    """A weights-free saliency: high along the boundary of what differs from the background colour.

    See the module docstring for the formulas. The background colour is the per-channel median of
    the canvas's border pixels; the rough object mask is where the colour distance to it (as a
    fraction of the RGB cube's diagonal) is above ``threshold``; its boundary band comes from two
    Gaussian blurs of width ``sigma · min(H, W)``. (A fixed threshold, not Otsu's: on a
    multi-coloured object Otsu's threshold falls between the object's own colours, and windows or a
    stripe became background with a band around them.)

    Args:
        target: ``[1, 3, H, W]`` in [0, 1].
        sigma: Width of the band as a fraction of the canvas's short side (> 0).
        floor: Relevance away from the band, in [0, 1] (1: uniform relevance).
        threshold: Colour distance above which a pixel is object, in (0, 1).

    Returns:
        ``[H, W]`` in ``[floor, 1]`` (all ``floor`` when nothing differs from the background).

    Example:
        >>> img = torch.ones(1, 3, 64, 64); img[..., 16:48, 16:48] = 0.0
        >>> r = silhouette_relevance(img)
        >>> round(float(r[32, 16]), 2), round(float(r[32, 32]), 2), round(float(r[2, 2]), 2)
        (0.93, 0.25, 0.25)
    """
    h, w = check_target(target)
    if not sigma > 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    if not 0 <= floor <= 1:
        raise InputError(f"floor must be in [0, 1], got {floor}")
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1), got {threshold}")
    img = target.detach()[0].to(torch.float32)  # [3, H, W]
    border = torch.cat([img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1]], dim=1)  # [3, 2H + 2W]
    bg = border.median(dim=1).values.view(3, 1, 1)
    d = ((img - bg) ** 2).sum(0).sqrt() / math.sqrt(3.0)  # [H, W]
    fg = (d > float(threshold)).to(torch.float32)[None, None]
    s = float(sigma) * min(h, w)
    band = (4.0 * gaussian_blur(fg, s) * gaussian_blur(1.0 - fg, s)).clamp(max=1.0)[0, 0]
    return float(floor) + (1.0 - float(floor)) * band


@register_initializer("edges")
class EdgeInitializer(Initializer):
    """Starts on the target's edges (the ``edges`` objective's map), spread out, silhouette first.

    Needs no weights: the default start of the weights-free mode (``clipasso sketch --loss edges``).
    Every start pixel is an edge pixel of :func:`clipasso.xdog.edge_ink` (inside the mask, if one
    is given); see the module docstring for the distribution.

    Args:
        relevance: ``"auto"`` (default): :func:`silhouette_relevance` when the background is plain
            (:func:`border_is_plain`), else ``"saliency"``; ``"silhouette"``: weight the edges by
            :func:`silhouette_relevance`; ``"saliency"``: by the weights-free saliency on its rough
            object mask (:func:`~clipasso.init.weights_free.weights_free_relevance`: no start on
            the background's edges), for a cluttered background; ``"uniform"``: every edge pixel alike.
        floor: With ``"silhouette"``: the relevance of edges off the silhouette band.
        sigma: With ``"silhouette"``: the band's width as a fraction of the short side.
        temperature: τ of ``p ∝ exp(E · R / τ)`` (as the saliency initializer's).
        spacing: Minimum distance between start points as a fraction of the canvas's short side
            (0.06: 13 px at 224); 0 draws them independently, without replacement.
        edges: ``"outline"`` or ``"fill"``, as :class:`~clipasso.losses.EdgeLoss`'s option.
        xdog_kwargs: Options of :func:`clipasso.xdog.xdog`, as the loss's.
        num_segments: k cubic segments per stroke (P = 3k + 1 points).
        radius: Random-walk step size in canvas units.
        width: Stroke half-width in pixels.
        color: RGBA of every stroke.

    Raises (on call):
        InputError: If fewer than N pixels are edge pixels (a blank target, a tiny mask).
    """

    def __init__(
        self,
        *,
        relevance: Relevance = "auto",
        floor: float = 0.25,
        sigma: float = 0.02,
        temperature: float = 0.3,
        spacing: float = 0.06,
        edges: Literal["outline", "fill"] = "outline",
        xdog_kwargs: Mapping[str, Any] | None = None,
        num_segments: int | None = None,
        radius: float = 0.05,
        width: float | None = None,
        color: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
    ) -> None:
        self.fixed = frozenset(
            k for k, v in (("num_segments", num_segments), ("width", width)) if v is not None
        )
        num_segments = 1 if num_segments is None else num_segments
        width = 1.5 if width is None else width
        validate_walk_options(num_segments, radius, width)
        if relevance not in ("auto", "silhouette", "saliency", "uniform"):
            raise InputError(
                f"relevance must be 'auto', 'silhouette', 'saliency' or 'uniform', got {relevance!r}"
            )
        if edges not in ("outline", "fill"):
            raise InputError(f"edges must be 'outline' or 'fill', got {edges!r}")
        if not 0 <= floor <= 1:
            raise InputError(f"floor must be in [0, 1], got {floor}")
        for name, value in (("sigma", sigma), ("temperature", temperature)):
            if not value > 0:
                raise InputError(f"{name} must be > 0, got {value}")
        if not 0 <= spacing < 1:
            raise InputError(f"spacing must be in [0, 1), got {spacing}")
        self.relevance = relevance
        self.floor = float(floor)
        self.sigma = float(sigma)
        self.temperature = float(temperature)
        self.spacing = float(spacing)
        self.edges = edges
        self.xdog_kwargs = dict(xdog_kwargs or {})
        self.num_segments = num_segments
        self.radius = float(radius)
        self.width = float(width)
        self.color = tuple(float(c) for c in color)

    def maps(self, target: Tensor, *, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The maps for ``target`` ``[1, 3, H, W]``.

        With a mask (hard, or the soft weight map of ``background="weight"``), the maps are those of
        the target composited onto white by it (``m · t + 1 − m``): the object's own edges, not
        where the object meets its background; the starts lie inside ``m > 0.5``.

        Returns:
            ``(relevance, edges, distribution)``, each ``[H, W]``; ``edges`` in the XDoG convention
            of :class:`~clipasso.init.InitResult` (0 on an edge, 1 elsewhere).
        """
        h, w = check_target(target)
        m = check_mask(mask, (h, w), target.device)
        if mask is not None:  # the object's own edges: the target composited onto white by the mask
            weight = mask.reshape(1, 1, h, w).to(device=target.device, dtype=target.dtype).clamp(0, 1)
            target = target * weight + (1.0 - weight)
        ink = edge_ink(target.detach(), mode=self.edges, **self.xdog_kwargs)[0, 0].to(torch.float32)
        rel = self.relevance_map(target).to(ink)
        dist = saliency_distribution(rel, 1.0 - ink, temperature=self.temperature, mask=m)
        return rel, 1.0 - ink, dist

    def relevance_map(self, target: Tensor) -> Tensor:
        """The relevance ``R`` ``[H, W]`` the edges are weighted by (``relevance`` option)."""
        mode = self.relevance
        if mode == "auto":
            mode = "silhouette" if border_is_plain(target) else "saliency"
        if mode == "silhouette":
            return silhouette_relevance(target, sigma=self.sigma, floor=self.floor)
        if mode == "saliency":
            return weights_free_relevance(target)
        h, w = check_target(target)
        return torch.ones(h, w, device=target.device)

    def __call__(
        self, target: Tensor, num_strokes: int, *, generator: torch.Generator, mask: Tensor | None = None
    ) -> InitResult:
        h, w = check_target(target)
        n = check_num_strokes(num_strokes)
        rel, edges, dist = self.maps(target, mask=mask)
        pixels = sample_spread_pixels(dist, n, generator, self.spacing * min(h, w))
        starts = torch.stack([pixels[:, 1] / w, pixels[:, 0] / h], dim=1).to(torch.float32)
        pts = random_walk(starts, 3 * self.num_segments + 1, self.radius, generator)
        strokes = make_strokes(pts, (h, w), width=self.width, color=self.color, device=target.device)
        return InitResult(strokes=strokes, relevance=rel, edges=edges, distribution=dist, pixels=pixels)
