"""A weights-free saliency for the offline mode: spectral residual × colour contrast, with an object mask.

No network is involved. For a target ``[1, 3, H, W]`` in [0, 1] (``s = min(H, W)``):

* **Spectral residual** (Hou & Zhang, CVPR 2007), on the grey image resized to ``size`` px a side
  (64): ``A, P`` = amplitude and phase of its 2-D FFT, ``L = log(A + ε)``,
  ``R = L − mean3×3(L)``, ``S_sr = G_σ(|IFFT(exp(R + iP))|²)`` with ``σ = 0.04 · size``, resized
  back (bilinear) and min-max normalised. It marks what is unusual in the image's spectrum: a
  repeating texture's peaks are removed, an object's structure stays.
* **Colour contrast against the border** (frequency-tuned saliency, Achanta et al., CVPR 2009,
  with the image mean replaced by the border's colour, the background prior): the target in CIE
  L*a*b*, blurred by ``G_{σ_c}`` with ``σ_c = 0.015 · s`` (a fine texture averages to its mean
  colour), ``S_c = minmax(‖lab_blur − median(border of lab_blur)‖)``.
* ``S = minmax(G_{σ_s}(S_sr · S_c) ... )``: the product keeps what is both structurally unusual and
  differs in colour from the border (texture alone is not salient by the first; the border colour,
  the background's, is not salient by the second), blurred with ``σ_s = 0.02 · s`` and min-max
  normalised, times a broad centre prior ``exp(−‖(x, y) − centre‖² / 2(0.5 s)²)``.

:func:`weights_free_mask` turns ``S`` into an object mask (Otsu's threshold of ``S``, then the
pixels within ``close`` px of it closed and filled by a blur): the ``--mask weights-free`` source.
:func:`weights_free_relevance` is ``S · mask``: zero off the mask, so stroke starts drawn from it
(``p ∝ exp(M / τ)`` over ``M > 0``) never land on the background's edges. The edge initializer uses
it with ``relevance="saliency"`` (and ``"auto"`` on a cluttered border); the CLIP-ViT saliency
initializer falls back to it (with a note) when its weights are unavailable. Measured once on the
cluttered scenes of ``benchmarks/_scenes.py``: 99 % of 16 edge starts on the object over textures,
63 % over photographs' corners, against 30 % and 28 % for every edge alike. These are rough cues:
they find an object that differs in colour from the border, not one that looks like its surroundings.

The spectral residual flattens the amplitude spectrum, so on a noiseless synthetic image (flat
areas, exact edges) its near-zero Fourier coefficients, which are rounding noise, come back with
the weight of any other: the map then depends on the CPU's FFT rounding (a 1e-6 perturbation of
a flat grey square moved it by 0.25). Photographs, and synthetic images with a little texture, are
well conditioned (1e-6 in, under 1e-5 out): the example adds 5 % noise for that reason.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> img = (0.5 + 0.05 * torch.rand(1, 1, 96, 96, generator=g)).expand(1, 3, 96, 96).clone()
    >>> img[..., 32:64, 32:64] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    >>> s = weights_free_saliency(img)  # high around the square, about 0 far from it
    >>> bool(s[28:68, 28:68].mean() > 100 * s[:16].mean()), bool(s[5, 5] < 0.01)
    (True, True)
    >>> m = weights_free_mask(img)  # the square, holes filled
    >>> float(m[0, 0, 48, 48]), float(m[0, 0, 5, 5])
    (1.0, 0.0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..xdog import gaussian_blur, otsu_threshold, rgb_to_grey
from .base import check_target

__all__ = [
    "colour_contrast",
    "fill_holes",
    "rgb_to_lab",
    "spectral_residual",
    "weights_free_mask",
    "weights_free_relevance",
    "weights_free_saliency",
]


def _minmax(x: Tensor) -> Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if float(hi - lo) > 0 else torch.zeros_like(x)


def rgb_to_lab(images: Tensor) -> Tensor:
    """sRGB ``[B, 3, H, W]`` in [0, 1] → CIE L*a*b* (D65), L in [0, 100].

    Example:
        >>> lab = rgb_to_lab(torch.ones(1, 3, 1, 1))
        >>> [round(float(v), 2) for v in lab.flatten()]
        [100.0, 0.0, 0.0]
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    x = images.clamp(0, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
        device=x.device,
        dtype=x.dtype,
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    white = torch.tensor([0.950456, 1.0, 1.088754], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    t = xyz / white
    eps = (6 / 29) ** 3
    f = torch.where(t > eps, t.clamp_min(eps) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[:, 1:2] - 16
    a = 500 * (f[:, 0:1] - f[:, 1:2])
    b = 200 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([lightness, a, b], dim=1)


def spectral_residual(target: Tensor, *, size: int = 64) -> Tensor:
    """Spectral-residual saliency (module docstring): ``[1, 3, H, W]`` → ``[H, W]`` in [0, 1]."""
    h, w = check_target(target)
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InputError(f"size must be an int >= 8, got {size!r}")
    grey = rgb_to_grey(target.detach().float())
    scale = size / min(h, w)
    small_hw = (max(8, round(h * scale)), max(8, round(w * scale)))
    g = F.interpolate(grey, size=small_hw, mode="area" if scale < 1 else "bilinear")
    spec = torch.fft.fft2(g)
    log_amp = torch.log(spec.abs() + 1e-8)
    phase = torch.angle(spec)
    residual = log_amp - F.avg_pool2d(F.pad(log_amp, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    sal = torch.fft.ifft2(torch.exp(torch.complex(residual, phase))).abs() ** 2
    sal = gaussian_blur(sal, 0.04 * size)
    sal = F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)
    return _minmax(sal[0, 0])


def colour_contrast(target: Tensor, *, sigma: float = 0.015) -> Tensor:
    """Colour distance to the border's colour after a blur (module docstring): ``[H, W]`` in [0, 1]."""
    h, w = check_target(target)
    if not sigma > 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    lab = gaussian_blur(rgb_to_lab(target.detach().float()), float(sigma) * min(h, w))[0]
    border = torch.cat([lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]], dim=1)
    bg = border.median(dim=1).values.view(3, 1, 1)
    return _minmax(((lab - bg) ** 2).sum(0).sqrt())


def weights_free_saliency(
    target: Tensor, *, size: int = 64, sigma: float = 0.02, centre: float = 0.5
) -> Tensor:
    """The weights-free saliency ``S`` (module docstring).

    Args:
        target: ``[1, 3, H, W]`` in [0, 1].
        size: Side of the spectral-residual image.
        sigma: Blur of the product as a fraction of the short side.
        centre: Width of the centre prior as a fraction of the short side (0: none).

    Returns:
        ``[H, W]`` in [0, 1] (all zeros for a constant image).
    """
    h, w = check_target(target)
    if not sigma > 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    if not centre >= 0:
        raise InputError(f"centre must be >= 0, got {centre}")
    prod = spectral_residual(target, size=size) * colour_contrast(target)
    s = _minmax(gaussian_blur(prod[None, None], float(sigma) * min(h, w))[0, 0])
    if centre > 0:
        ys = torch.arange(h, device=s.device, dtype=s.dtype)[:, None] - (h - 1) / 2
        xs = torch.arange(w, device=s.device, dtype=s.dtype)[None, :] - (w - 1) / 2
        s = s * torch.exp(-(ys**2 + xs**2) / (2 * (float(centre) * min(h, w)) ** 2))
        s = _minmax(s)
    return s


def fill_holes(mask: Tensor) -> Tensor:
    """Fill the holes of a binary ``[H, W]`` mask: background pixels not 4-connected to the canvas's
    border through background become object (as ``scipy.ndimage.binary_fill_holes``).

    Example:
        >>> ring = torch.zeros(7, 7, dtype=torch.bool); ring[1:6, 1:6] = True; ring[2:5, 2:5] = False
        >>> int(fill_holes(ring).sum())
        25
    """
    m = mask.bool()
    free = ~m
    reach = torch.zeros_like(free)
    reach[0, :], reach[-1, :], reach[:, 0], reach[:, -1] = free[0, :], free[-1, :], free[:, 0], free[:, -1]
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=m.device)[None, None]
    for i in range(m.shape[0] * m.shape[1]):
        grown = (F.conv2d(reach.float()[None, None], cross, padding=1)[0, 0] > 0) & free
        if i % 8 == 0 and bool(torch.equal(grown, reach)):
            break
        reach = grown
    return m | (free & ~reach)


def weights_free_relevance(target: Tensor) -> Tensor:
    """``S · mask`` (:func:`weights_free_saliency` times :func:`weights_free_mask`): ``[H, W]`` in [0, 1].

    Example:
        >>> img = torch.full((1, 3, 96, 96), 0.5); img[..., 32:64, 32:64] = 0.9
        >>> r = weights_free_relevance(img)
        >>> float(r[5, 5]), bool(r[40, 40] > 0)
        (0.0, True)
    """
    s = weights_free_saliency(target)
    try:
        m = weights_free_mask(target, saliency=s)[0, 0]
    except InputError:  # nothing stands out: every pixel alike
        return torch.ones_like(s)
    return s * m.to(s)


def weights_free_mask(target: Tensor, *, close: float = 0.02, saliency: Tensor | None = None) -> Tensor:
    """A rough object mask: ``[1, 1, H, W]`` in {0, 1}.

    Otsu's threshold of ``(S + C) / 2`` (:func:`weights_free_saliency` and :func:`colour_contrast`:
    the colour contrast covers a flat region whole, where ``S`` peaks along its boundary); then a
    closing of about ``close · min(H, W)`` px by two blurs (a dilation: blurred mask above 0.25, then
    an erosion: above 0.75); then its holes filled (:func:`fill_holes`, on a copy at most 64 px a
    side, so it stays cheap).

    Args:
        target: ``[1, 3, H, W]`` in [0, 1].
        close: Closing radius as a fraction of the short side (0: none).
        saliency: A precomputed ``S`` ``[H, W]`` (else computed).

    Raises:
        InputError: A constant image (nothing stands out).
    """
    h, w = check_target(target)
    s = weights_free_saliency(target) if saliency is None else saliency
    score = 0.5 * (s + colour_contrast(target).to(s))
    if float(score.max() - score.min()) <= 0:
        raise InputError("the weights-free saliency is constant: nothing in the image stands out")
    m = (score >= otsu_threshold(score[None])[0]).float()[None, None]
    if close > 0:
        r = float(close) * min(h, w)
        grown = (gaussian_blur(m, r) > 0.25).float()  # dilate by about r
        m = (gaussian_blur(grown, r) > 0.75).float()  # erode back: gaps below about 2r stay closed
    factor = max(1, math.ceil(max(h, w) / 64))
    small = F.avg_pool2d(m, factor, ceil_mode=True)[0, 0] > 0.5
    holes = (fill_holes(small) & ~small).float()[None, None]
    holes = F.interpolate(holes, scale_factor=factor, mode="nearest")[..., :h, :w]
    m = torch.maximum(m, holes)
    if not bool(m.any()):
        raise InputError("the weights-free saliency found no object")
    return m.to(target.device)
