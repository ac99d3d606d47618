"""How well a sketch covers its object: outline recall and ink precision (weights-free, exact).

A sketch's *ink* is the set of pixels its strokes cover (the rendered alpha above a threshold). Given
the object's mask (an alpha channel, a known silhouette), two numbers describe a contour sketch:

* **outline recall**: the share of the object's outline pixels that lie within ``tol`` pixels of
  ink (did the sketch draw the object's outline?);
* **ink precision**: the share of ink pixels that lie on the object, i.e. inside the mask dilated by
  ``dilate`` pixels (is the ink on the object, not in the background?).

The outline is the mask's inner boundary: object pixels with a background pixel among their 8
neighbours (the canvas border does not count as background, so an object cut by the frame has no
outline there). Distances are Euclidean: "within ``r`` pixels" is a dilation by the disc of pixel
offsets ``(dy, dx)`` with ``dy² + dx² ≤ r²``.

Every function takes ``[H, W]`` maps or batches ``[..., H, W]`` (bool, or float with ``> 0.5`` as
True) and returns per-map values ``[...]``.

Example:
    >>> import torch
    >>> mask = torch.zeros(32, 32, dtype=torch.bool); mask[8:24, 8:24] = True
    >>> ink = outline(mask)                       # a sketch that traces the square exactly
    >>> float(outline_recall(ink, mask)), float(ink_precision(ink, mask))
    (1.0, 1.0)
    >>> half = ink.clone(); half[:, 16:] = False  # only the left half of the outline
    >>> round(float(outline_recall(half, mask)), 2)
    0.57
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

__all__ = ["binary_dilate", "coverage", "disc", "ink_mask", "ink_precision", "outline", "outline_recall"]


def _as_bool(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise InputError(f"{name} must have shape [..., H, W], got {tuple(x.shape)}")
    return x if x.dtype == torch.bool else x > 0.5


def disc(radius: float, *, device: torch.device | None = None) -> Tensor:
    """The disc of pixel offsets within ``radius``: bool ``[2R + 1, 2R + 1]``, ``R = floor(radius)``.

    Example:
        >>> int(disc(2.0).sum()), int(disc(1.5).sum()), int(disc(0).sum())
        (13, 9, 1)
    """
    if not radius >= 0 or not math.isfinite(radius):
        raise InputError(f"radius must be a finite number >= 0, got {radius}")
    r = math.floor(radius)
    d = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    return d[:, None] ** 2 + d[None, :] ** 2 <= float(radius) ** 2 + 1e-9


def binary_dilate(x: Tensor, radius: float) -> Tensor:
    """Binary dilation of ``[..., H, W]`` maps by the disc of ``radius`` pixels (outside = False).

    Returns:
        Bool ``[..., H, W]``: True where some True pixel lies within ``radius``.
    """
    m = _as_bool(x, "x")
    kernel = disc(radius, device=m.device)
    if kernel.numel() == 1:
        return m.clone()
    r = (kernel.shape[0] - 1) // 2
    flat = m.reshape(-1, 1, *m.shape[-2:]).to(torch.float32)
    hit = F.conv2d(flat, kernel.to(torch.float32)[None, None], padding=r)
    return (hit > 0.5).reshape(m.shape)


def outline(mask: Tensor) -> Tensor:
    """The inner boundary of masks ``[..., H, W]``: object pixels with a background 8-neighbour.

    The canvas border is not background (an object cut by the frame has no outline along it).

    Returns:
        Bool ``[..., H, W]``.
    """
    m = _as_bool(mask, "mask")
    flat = m.reshape(-1, 1, *m.shape[-2:]).to(torch.float32)
    padded = F.pad(flat, (1, 1, 1, 1), mode="replicate")
    eroded = -F.max_pool2d(-padded, 3, stride=1)
    return m & (eroded < 0.5).reshape(m.shape)


def ink_mask(image: Tensor, threshold: float = 0.5) -> Tensor:
    """The ink of rendered sketches: bool ``[B, H, W]``.

    Args:
        image: ``[B, 4, H, W]`` straight RGBA (ink = alpha), ``[B, 1, H, W]`` alpha, or
            ``[B, 3, H, W]`` dark strokes over white (ink = ``1 − grey``, the alpha of black strokes).
        threshold: Ink where the value is above it.
    """
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError(f"image must be [B, 4 | 3 | 1, H, W], got {shape}")
    if image.shape[1] == 3:
        from .xdog import rgb_to_grey

        alpha = 1.0 - rgb_to_grey(image)[:, 0]
    else:
        alpha = image[:, -1]
    return alpha > threshold


def outline_recall(
    ink: Tensor, mask: Tensor | None = None, *, outline_pixels: Tensor | None = None, tol: float = 2.0
) -> Tensor:
    """Share of the object's outline pixels within ``tol`` pixels of ink.

    Args:
        ink: ``[..., H, W]`` inked pixels.
        mask: ``[..., H, W]`` object masks (their :func:`outline` is the reference), or None.
        outline_pixels: The reference outline itself, instead of ``mask``.
        tol: Distance in pixels (Euclidean, see :func:`binary_dilate`).

    Returns:
        ``[...]`` float in ``[0, 1]`` (NaN for an empty outline).
    """
    if (mask is None) == (outline_pixels is None):
        raise InputError("give exactly one of mask and outline_pixels")
    ref = outline(mask) if mask is not None else _as_bool(outline_pixels, "outline_pixels")  # type: ignore[arg-type]
    near = binary_dilate(ink, tol)
    if near.shape != ref.shape:
        raise InputError(f"ink {tuple(ink.shape)} and the outline {tuple(ref.shape)} differ in shape")
    total = ref.sum(dim=(-2, -1)).to(torch.float32)
    hit = (ref & near).sum(dim=(-2, -1)).to(torch.float32)
    return torch.where(total > 0, hit / total.clamp_min(1.0), torch.full_like(total, math.nan))


def ink_precision(ink: Tensor, mask: Tensor, *, dilate: float = 3.0) -> Tensor:
    """Share of ink pixels on the object: inside ``mask`` dilated by ``dilate`` pixels.

    Args:
        ink: ``[..., H, W]`` inked pixels.
        mask: ``[..., H, W]`` object masks.
        dilate: Slack in pixels (a stroke drawn on the outline is half outside the mask).

    Returns:
        ``[...]`` float in ``[0, 1]`` (NaN for a sketch without ink).
    """
    i = _as_bool(ink, "ink")
    zone = binary_dilate(mask, dilate)
    if zone.shape != i.shape:
        raise InputError(f"ink {tuple(i.shape)} and mask {tuple(zone.shape)} differ in shape")
    total = i.sum(dim=(-2, -1)).to(torch.float32)
    hit = (i & zone).sum(dim=(-2, -1)).to(torch.float32)
    return torch.where(total > 0, hit / total.clamp_min(1.0), torch.full_like(total, math.nan))


def coverage(ink: Tensor, mask: Tensor, *, tol: float = 2.0, dilate: float = 3.0) -> dict[str, Tensor]:
    """Both numbers at once: ``{"outline_recall": [...], "ink_precision": [...]}``.

    Example:
        >>> mask = torch.zeros(1, 16, 16, dtype=torch.bool); mask[:, 4:12, 4:12] = True
        >>> {k: v.tolist() for k, v in coverage(outline(mask), mask).items()}
        {'outline_recall': [1.0], 'ink_precision': [1.0]}
    """
    return {
        "outline_recall": outline_recall(ink, mask, tol=tol),
        "ink_precision": ink_precision(ink, mask, dilate=dilate),
    }
