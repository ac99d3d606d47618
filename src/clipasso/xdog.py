"""XDoG edge maps and Otsu thresholding in torch (batched, device-agnostic).

The eXtended Difference of Gaussians (XDoG) turns an image into a line drawing: a narrow
Gaussian minus a slightly damped wide one, pushed through a soft threshold. CLIPasso uses it to
restrict its starting points to dark edges (see ``docs/initializers.md`` and METHOD §3.3).

Formulas (per image, on the grey image ``y = 0.2125 R + 0.7154 G + 0.0721 B``)::

    g1 = G_sigma * y,   g2 = G_{k sigma} * y      (reflect borders, kernel radius int(4 sigma + 0.5))
    D  = g1 - gamma * g2
    E  = 1                      where D < epsilon
         1 + tanh(phi * D)      elsewhere
    E  = (E - min E) / (max E - min E)
    binarized: E >= otsu_threshold(E)  ->  1 (no edge), else 0 (edge)

Example:
    >>> import torch
    >>> from clipasso.xdog import xdog
    >>> img = torch.ones(1, 3, 64, 64)
    >>> img[:, :, 16:48, 16:48] = 0.0
    >>> edges = xdog(img)
    >>> edges.shape
    torch.Size([1, 1, 64, 64])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

__all__ = [
    "GREY_WEIGHTS",
    "edge_ink",
    "gaussian_blur",
    "gaussian_kernel1d",
    "otsu_threshold",
    "rgb_to_grey",
    "xdog",
]

#: Luma weights of the grey conversion (ITU-R BT.709, as skimage's ``rgb2gray``).
GREY_WEIGHTS: tuple[float, float, float] = (0.2125, 0.7154, 0.0721)


def rgb_to_grey(images: Tensor) -> Tensor:
    """Grey image ``0.2125 R + 0.7154 G + 0.0721 B``.

    Args:
        images: ``[B, 3, H, W]``.

    Returns:
        ``[B, 1, H, W]``.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    w = torch.tensor(GREY_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def gaussian_kernel1d(
    sigma: float,
    *,
    truncate: float = 4.0,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Normalised 1-D Gaussian taps ``exp(-x² / 2σ²)`` for ``x = -r..r``, ``r = int(truncate·σ + 0.5)``.

    Args:
        sigma: Standard deviation in pixels (> 0).
        truncate: Kernel radius in units of sigma (scipy's ``truncate``).

    Returns:
        ``[2r + 1]`` taps summing to 1.
    """
    if not sigma > 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    taps = taps / taps.sum()
    return taps.to(dtype or torch.get_default_dtype())


def _symmetric_indices(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices of a half-sample symmetric extension (``d c b a | a b c d | d c b a``), any radius."""
    i = torch.arange(-radius, n + radius, device=device)
    i = torch.remainder(i, 2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(images: Tensor, sigma: float, *, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur with reflect borders (scipy's ``mode='reflect'``: the edge pixel repeats).

    Matches ``scipy.ndimage.gaussian_filter(x, sigma, mode='reflect', truncate=truncate)`` applied to
    each ``[H, W]`` plane. Differentiable.

    Args:
        images: ``[B, C, H, W]``.
        sigma: Standard deviation in pixels.
        truncate: Kernel radius in units of sigma.

    Returns:
        ``[B, C, H, W]``.
    """
    if images.dim() != 4:
        raise InputError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    taps = gaussian_kernel1d(sigma, truncate=truncate, device=images.device, dtype=images.dtype)
    r = (taps.numel() - 1) // 2
    x = images.reshape(b * c, 1, h, w)
    x = x.index_select(3, _symmetric_indices(w, r, images.device))
    x = F.conv2d(x, taps.view(1, 1, 1, -1))
    x = x.index_select(2, _symmetric_indices(h, r, images.device))
    x = F.conv2d(x, taps.view(1, 1, -1, 1))
    return x.reshape(b, c, h, w)


def otsu_threshold(x: Tensor, nbins: int = 256) -> Tensor:
    """Otsu's threshold per batch element, binned exactly like ``skimage.filters.threshold_otsu``.

    The values of each element are put into ``nbins`` equal bins spanning ``[min, max]`` of that
    element (numpy's ``histogram`` rule: half-open bins, the last one closed). The threshold is the
    centre of the bin ``t`` that maximises the between-class variance ``w1(t)·w2(t+1)·(μ1(t) − μ2(t+1))²``
    (the first maximum). A constant element returns its value. Not differentiable.

    Args:
        x: ``[B, ...]`` real values (e.g. ``[B, 1, H, W]``).
        nbins: Number of histogram bins (skimage's default 256).

    Returns:
        ``[B]`` thresholds (same dtype as ``x``).

    Example:
        >>> x = torch.cat([torch.zeros(50), torch.ones(50)]).view(1, 100)
        >>> float(otsu_threshold(x)[0]) < 0.5
        True
    """
    if x.dim() < 2:
        raise InputError(f"x must have shape [B, ...] with at least 2 dims, got {tuple(x.shape)}")
    if nbins < 2:
        raise InputError(f"nbins must be >= 2, got {nbins}")
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    flat = x.detach().reshape(x.shape[0], -1)
    if not torch.isfinite(flat).all():
        raise InputError("otsu_threshold: x contains NaN or infinite values")
    bsz = flat.shape[0]
    lo = flat.min(dim=1).values  # [B]
    hi = flat.max(dim=1).values
    constant = hi == lo
    span = torch.where(constant, torch.ones_like(hi), hi - lo)
    step = span / nbins
    # numpy-style edges: lo + i * step, last edge exactly hi
    ar = torch.arange(nbins + 1, device=x.device, dtype=x.dtype)
    edges = lo[:, None] + ar[None, :] * step[:, None]  # [B, nbins+1]
    edges[:, -1] = torch.where(constant, edges[:, -1], hi)
    idx = ((flat - lo[:, None]) * (nbins / span)[:, None]).to(torch.long).clamp(0, nbins - 1)
    # exact correction against the edges (as numpy does)
    dec = flat < torch.gather(edges, 1, idx)
    idx = idx - dec.long()
    inc = (flat >= torch.gather(edges, 1, idx + 1)) & (idx != nbins - 1)
    idx = idx + inc.long()
    counts = torch.zeros(bsz, nbins, device=x.device, dtype=x.dtype)
    counts.scatter_add_(1, idx, torch.ones_like(flat))
    centers = (edges[:, :-1] + edges[:, 1:]) / 2.0
    w1 = counts.cumsum(1)
    w2 = counts.flip(1).cumsum(1).flip(1)
    m1 = (counts * centers).cumsum(1) / w1.clamp_min(1e-30)
    m2 = (counts * centers).flip(1).cumsum(1).flip(1) / w2.clamp_min(1e-30)
    var12 = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    best = var12.argmax(dim=1)  # first maximum, as numpy's argmax
    thr = torch.gather(centers, 1, best[:, None])[:, 0]
    return torch.where(constant, lo, thr)


def xdog(
    images: Tensor,
    *,
    sigma: float = 0.8,
    k: float = 10.0,
    gamma: float = 0.98,
    epsilon: float = -0.1,
    phi: float = 200.0,
    binarize: bool = True,
) -> Tensor:
    """XDoG edge map of RGB images (1 = background / no edge, 0 = dark edge).

    Args:
        images: ``[B, 3, H, W]``. Any value range; CLIPasso's saliency init passes the
            CLIP-normalised image (a reproduced quirk of the reference).
        sigma: Narrow Gaussian sigma (px); the wide one is ``k * sigma``.
        k: Ratio of the two sigmas.
        gamma: Weight of the wide Gaussian in ``D = g1 - gamma * g2``.
        epsilon: Below this ``D`` the response is 1 (flat).
        phi: Sharpness of the ``1 + tanh(phi * D)`` ramp.
        binarize: Threshold the min-max normalised map at Otsu's threshold (``E >= t -> 1``).
            When False, the soft map in ``[0, 1]`` is returned and is differentiable w.r.t.
            ``images`` (almost everywhere).

    Returns:
        ``[B, 1, H, W]`` in ``[0, 1]`` (binary when ``binarize``). An image whose response is
        constant (no structure) maps to all ones (no edges).

    Example:
        >>> e = xdog(torch.rand(2, 3, 32, 32), binarize=False)
        >>> bool(e.min() >= 0) and bool(e.max() <= 1)
        True
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    if not torch.is_floating_point(images):
        raise InputError(f"images must be a floating-point tensor, got {images.dtype}")
    if not (sigma > 0 and k > 0):
        raise InputError(f"sigma and k must be > 0, got sigma={sigma}, k={k}")
    grey = rgb_to_grey(images)
    g1 = gaussian_blur(grey, sigma)
    g2 = gaussian_blur(grey, sigma * k)
    d = g1 - gamma * g2
    e = torch.where(d < epsilon, torch.ones_like(d), 1.0 + torch.tanh(phi * d))
    flat = e.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    span = hi - lo
    flat_img = span <= 0
    e = torch.where(
        flat_img, torch.ones_like(e), (e - lo) / torch.where(flat_img, torch.ones_like(span), span)
    )
    if not binarize:
        return e
    t = otsu_threshold(e).view(-1, 1, 1, 1)
    out = (e >= t).to(e.dtype)
    return torch.where(flat_img, torch.ones_like(out), out)


def edge_ink(images: Tensor, *, mode: Literal["outline", "fill"] = "outline", **xdog_kwargs: Any) -> Tensor:
    """The edges of images as ink (1 on an edge, 0 elsewhere), as the weights-free mode reads them.

    ``"fill"``: the binarised XDoG ink ``1 − xdog(images)``. ``"outline"`` (default): its boundary, the
    3×3 morphological gradient (dilation − erosion, borders padded with the nearest value), so a
    dark filled region contributes its contour only. :class:`~clipasso.losses.EdgeLoss` draws
    towards this map, the ``edges`` initializer starts strokes on it, and
    :class:`~clipasso.reseed.Reseed` moves dead strokes to its uncovered parts.

    Args:
        images: ``[B, 3, H, W]`` in [0, 1] (not CLIP-normalised).
        mode: ``"outline"`` or ``"fill"``.
        **xdog_kwargs: Options of :func:`xdog` (e.g. ``sigma``, ``binarize``).

    Returns:
        ``[B, 1, H, W]`` in [0, 1] (binary unless ``binarize=False``), without gradient.

    Example:
        >>> img = torch.ones(1, 3, 32, 32); img[..., 8:24, 8:24] = 0.0
        >>> ink = edge_ink(img)
        >>> [int(ink[0, 0, 16, x]) for x in (2, 8, 16)]  # outside, on the edge, inside
        [0, 1, 0]
    """
    if mode not in ("outline", "fill"):
        raise InputError(f"mode must be 'outline' or 'fill', got {mode!r}")
    with torch.no_grad():
        ink = 1.0 - xdog(images, **xdog_kwargs).to(images.dtype)
        if mode == "outline":  # morphological gradient: dilation - erosion (3×3)
            dilated = F.max_pool2d(ink, 3, stride=1, padding=1)
            eroded = -F.max_pool2d(-ink, 3, stride=1, padding=1)
            ink = dilated - eroded
    return ink
