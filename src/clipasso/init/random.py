"""Uniform random starting points (CLIPasso without ``attention_init``), then the random walk."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import (
    Initializer,
    InitResult,
    check_mask,
    check_num_strokes,
    check_target,
    make_strokes,
    random_walk,
    register_initializer,
    sample_pixels,
    validate_walk_options,
)

__all__ = ["RandomInitializer"]


@register_initializer("random")
class RandomInitializer(Initializer):
    """Start points uniform on the canvas, control points by the shared random walk (METHOD §3.8).

    Without a mask, ``p0 ~ U[0, 1)²`` (``torch.rand(N, 2)``) in canvas units. With a mask, the N
    start pixels are drawn uniformly without replacement among the mask's pixels and
    ``p0 = (col / W, row / H)``, as the saliency initializer does.

    Args:
        num_segments: k cubic segments per stroke (P = 3k + 1 points).
        radius: Random-walk step size in canvas units.
        width: Stroke half-width in pixels.
        color: RGBA of every stroke.

    Example:
        >>> init = RandomInitializer()
        >>> res = init(torch.ones(1, 3, 64, 64), 8, generator=torch.Generator().manual_seed(0))
        >>> tuple(res.strokes.points.shape)
        (1, 8, 4, 2)
    """

    def __init__(
        self,
        *,
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
        self.num_segments = num_segments
        self.radius = float(radius)
        self.width = float(width)
        self.color = tuple(float(c) for c in color)

    def __call__(
        self, target: Tensor, num_strokes: int, *, generator: torch.Generator, mask: Tensor | None = None
    ) -> InitResult:
        h, w = check_target(target)
        n = check_num_strokes(num_strokes)
        m = check_mask(mask, (h, w), target.device)
        pixels: Tensor | None = None
        distribution: Tensor | None = None
        if m is None:
            starts = torch.rand(n, 2, generator=generator, device=generator.device).to(target.device)
        else:
            distribution = m.to(torch.float32)
            distribution = distribution / distribution.sum().clamp_min(1.0)
            pixels = sample_pixels(distribution, n, generator)
            starts = torch.stack([pixels[:, 1] / w, pixels[:, 0] / h], dim=1).to(torch.float32)
        pts = random_walk(starts, 3 * self.num_segments + 1, self.radius, generator)
        strokes = make_strokes(pts, (h, w), width=self.width, color=self.color, device=target.device)
        return InitResult(strokes=strokes, distribution=distribution, pixels=pixels)
