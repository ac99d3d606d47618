"""The saliency figure (input with sampled points | relevance map | sampling distribution), PIL only.

No plotting library and no GUI backend is involved, so it works on headless machines.

Example:
    >>> import torch
    >>> from clipasso.init import RandomInitializer, render_saliency_figure
    >>> img = torch.ones(1, 3, 64, 64)
    >>> res = RandomInitializer()(img, 4, generator=torch.Generator().manual_seed(0))
    >>> render_saliency_figure(img, res).size
    (200, 82)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..errors import InputError
from ..result import to_uint8
from .base import InitResult

__all__ = ["colorize", "render_saliency_figure", "save_saliency_figure"]

# Anchor colours of the heat map (dark purple → red → yellow), linearly interpolated.
_ANCHORS = np.array(
    [[0, 0, 4], [60, 15, 110], [150, 40, 120], [230, 80, 60], [250, 170, 40], [252, 250, 190]],
    dtype=np.float64,
)


def colorize(values: Tensor) -> np.ndarray:
    """Map ``[H, W]`` values (min-max normalised here) to an ``[H, W, 3]`` uint8 heat map."""
    if values.dim() != 2:
        raise InputError(f"values must be [H, W], got {tuple(values.shape)}")
    v = values.detach().to("cpu", torch.float64).numpy()
    lo, hi = float(v.min()), float(v.max())
    v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    pos = v * (len(_ANCHORS) - 1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(_ANCHORS) - 2)
    t = (pos - i0)[..., None]
    rgb = _ANCHORS[i0] * (1 - t) + _ANCHORS[i0 + 1] * t
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_saliency_figure(
    target: Tensor, result: InitResult, *, point_radius: float | None = None
) -> Image.Image:
    """Three panels side by side: the input with the start points, the relevance, the distribution.

    Missing maps (e.g. for the random initializer) are drawn as a grey panel. Each panel has a
    title strip of 18 px above it and panels are separated by 4 px.

    Args:
        target: ``[1, 3, H, W]`` in ``[0, 1]``.
        result: An :class:`InitResult`; start points are its ``pixels`` if set, else the first
            control point of each stroke.
        point_radius: Dot radius in pixels (default ``max(2, H / 112)``).

    Returns:
        An RGB :class:`PIL.Image.Image` of size ``(3 W + 8, H + 18)``.
    """
    if target.dim() != 4 or target.shape[0] != 1 or target.shape[1] != 3:
        raise InputError(f"target must have shape [1, 3, H, W], got {tuple(target.shape)}")
    h, w = int(target.shape[2]), int(target.shape[3])
    pad, title = 4, 18
    canvas = Image.new("RGB", (3 * w + 2 * pad, h + title), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    panel = Image.fromarray(to_uint8(target[0]))
    pd = ImageDraw.Draw(panel)
    r = point_radius if point_radius is not None else max(2.0, h / 112.0)
    if result.pixels is not None:
        pts = result.pixels.detach().to("cpu").float()
        xy = torch.stack([pts[:, 1], pts[:, 0]], dim=1)
    else:
        xy = result.strokes.points.detach().to("cpu").float()[0, :, 0, :]
    for x, y in xy.tolist():
        pd.ellipse([x - r, y - r, x + r, y + r], fill=(220, 20, 20))
    panels = [("input + start points", panel)]
    for name, m in (("relevance", result.relevance), ("distribution", result.distribution)):
        if m is None:
            panels.append((f"{name}: n/a", Image.new("RGB", (w, h), (200, 200, 200))))
        else:
            if tuple(m.shape) != (h, w):
                raise InputError(f"result.{name} must be [{h}, {w}], got {tuple(m.shape)}")
            panels.append((name, Image.fromarray(colorize(m))))
    for i, (name, im) in enumerate(panels):
        x0 = i * (w + pad)
        canvas.paste(im, (x0, title))
        draw.text((x0 + 2, 3), name, fill=(0, 0, 0))
    return canvas


def save_saliency_figure(
    path: str | Path, target: Tensor, result: InitResult, *, point_radius: float | None = None
) -> Path:
    """Render :func:`render_saliency_figure` and save it as a PNG at ``path``; returns the path."""
    import io

    from .._io import atomic_write_bytes

    buffer = io.BytesIO()
    render_saliency_figure(target, result, point_radius=point_radius).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
