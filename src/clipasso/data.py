"""Sample images for examples, docs and tests, with no downloads.

Two kinds of sample:

* **drawn** by this module with PIL (always available, deterministic): ``"house"`` and ``"mug"``,
  simple flat-colour objects with dark outlines on white. Their exact object mask is known, so
  they can be returned with it as an alpha channel (the Sketcher then uses it as the mask).
* **photographs** that scikit-image ships inside its package (an optional dependency, part of the
  ``dev`` extra): ``"chelsea"`` (a cat), ``"astronaut"``, ``"coffee"`` (a cup of coffee),
  ``"rocket"`` and ``"horse"`` (a black silhouette; its mask is known too). Loading one without
  scikit-image installed raises :class:`~clipasso.errors.InputError` saying how to install it.

Example:
    >>> from clipasso.data import list_samples, load_sample, sample_tensor
    >>> "house" in list_samples()
    True
    >>> load_sample("house", size=128).size
    (128, 128)
    >>> sample_tensor("mug", size=64).shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ._io import atomic_write_bytes
from .errors import InputError

__all__ = ["DRAWN", "PHOTOS", "SAMPLES", "list_samples", "load_sample", "sample_tensor", "save_sample"]

#: Samples drawn by this module: name → description.
DRAWN: dict[str, str] = {
    "house": "a drawn house with a roof, a door, two windows and a chimney (flat colours, dark outlines)",
    "mug": "a drawn mug with a handle and a saucer (flat colours, dark outlines)",
}

#: Photographs bundled with scikit-image: name → description.
PHOTOS: dict[str, str] = {
    "chelsea": "a photograph of a cat (Chelsea), 300 × 451 (scikit-image)",
    "astronaut": "a portrait of the astronaut Eileen Collins, 512 × 512 (scikit-image)",
    "coffee": "a photograph of a cup of coffee, 400 × 600 (scikit-image)",
    "rocket": "a photograph of a rocket on its launch pad, 427 × 640 (scikit-image)",
    "horse": "a black silhouette of a horse on white, 328 × 400 (scikit-image)",
}

#: Every sample: name → description.
SAMPLES: dict[str, str] = {**DRAWN, **PHOTOS}

_DEFAULT_DRAWN_SIZE = 256
_SUPERSAMPLE = 4  # drawn samples are drawn at 4× and downsampled (anti-aliased edges)
_INK = (34, 30, 38)


def list_samples() -> list[str]:
    """Names of every sample, drawn ones first.

    Example:
        >>> list_samples()[:2]
        ['house', 'mug']
    """
    return list(SAMPLES)


# ------------------------------------------------------------------------------------------ drawn


def _draw_house(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, s: float) -> None:
    """The house on a 1 × 1 canvas scaled by ``s`` pixels."""
    lw = max(1, round(0.018 * s))

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * s, y0 * s, x1 * s, y1 * s]

    def poly(*pts: tuple[float, float]) -> list[tuple[float, float]]:
        return [(x * s, y * s) for x, y in pts]

    parts: list[tuple[str, list[float] | list[tuple[float, float]], tuple[int, int, int]]] = [
        ("rect", box(0.62, 0.14, 0.72, 0.36), (150, 72, 58)),  # chimney (behind the roof)
        ("rect", box(0.22, 0.45, 0.78, 0.86), (236, 200, 140)),  # walls
        ("poly", poly((0.14, 0.47), (0.50, 0.16), (0.86, 0.47)), (178, 58, 48)),  # roof
        ("rect", box(0.44, 0.62, 0.56, 0.86), (110, 70, 40)),  # door
        ("rect", box(0.28, 0.54, 0.39, 0.66), (150, 200, 232)),  # left window
        ("rect", box(0.61, 0.54, 0.72, 0.66), (150, 200, 232)),  # right window
        ("rect", box(0.08, 0.86, 0.92, 0.90), (96, 150, 70)),  # lawn strip
    ]
    for kind, xy, fill in parts:
        if kind == "rect":
            draw.rectangle(xy, fill=fill, outline=_INK, width=lw)
            mask.rectangle(xy, fill=255)
        else:
            draw.polygon(xy, fill=fill, outline=_INK, width=lw)
            mask.polygon(xy, fill=255)
    for wx in (0.335, 0.665):  # window crosses
        draw.line([(wx * s, 0.54 * s), (wx * s, 0.66 * s)], fill=_INK, width=lw)
        draw.line([((wx - 0.055) * s, 0.60 * s), ((wx + 0.055) * s, 0.60 * s)], fill=_INK, width=lw)
    r = 0.012 * s  # door knob
    draw.ellipse([0.53 * s - r, 0.75 * s - r, 0.53 * s + r, 0.75 * s + r], fill=_INK)


def _draw_mug(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, s: float) -> None:
    """The mug on a 1 × 1 canvas scaled by ``s`` pixels."""
    lw = max(1, round(0.022 * s))
    body = (208, 72, 60)
    # saucer
    saucer = [0.12 * s, 0.78 * s, 0.88 * s, 0.90 * s]
    draw.ellipse(saucer, fill=(226, 226, 236), outline=_INK, width=lw)
    mask.ellipse(saucer, fill=255)
    # handle: a thick ring on the right, its inner hole stays background
    outer = [0.58 * s, 0.36 * s, 0.86 * s, 0.68 * s]
    inner = [0.66 * s, 0.44 * s, 0.78 * s, 0.60 * s]
    draw.ellipse(outer, fill=body, outline=_INK, width=lw)
    mask.ellipse(outer, fill=255)
    draw.ellipse(inner, fill=(255, 255, 255), outline=_INK, width=lw)
    mask.ellipse(inner, fill=0)
    # body: a cup with a rounded bottom
    cup = [0.24 * s, 0.26 * s, 0.70 * s, 0.84 * s]
    draw.rounded_rectangle(cup, radius=0.08 * s, fill=body, outline=_INK, width=lw)
    mask.rounded_rectangle(cup, radius=0.08 * s, fill=255)
    # rim and coffee
    rim = [0.24 * s, 0.21 * s, 0.70 * s, 0.31 * s]
    draw.ellipse(rim, fill=(120, 76, 48), outline=_INK, width=lw)
    mask.ellipse(rim, fill=255)
    # a stripe on the body
    draw.line([(0.26 * s, 0.58 * s), (0.68 * s, 0.58 * s)], fill=(250, 230, 210), width=2 * lw)


_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, ImageDraw.ImageDraw, float], None]] = {
    "house": _draw_house,
    "mug": _draw_mug,
}


def _drawn(name: str, size: int) -> tuple[Image.Image, Image.Image]:
    """(RGB image, L mask) of a drawn sample, ``size × size``."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), (255, 255, 255))
    mask = Image.new("L", (big, big), 0)
    _DRAWERS[name](ImageDraw.Draw(image), ImageDraw.Draw(mask), float(big))
    resample = Image.Resampling.LANCZOS
    return image.resize((size, size), resample), mask.resize((size, size), resample)


# ------------------------------------------------------------------------------------------ photos


def _photo(name: str) -> tuple[Image.Image, Image.Image | None]:
    """(RGB image, L mask or None) of a scikit-image photograph."""
    try:
        import skimage.data
    except ImportError:
        raise InputError(
            f"sample {name!r} is a photograph bundled with scikit-image, which is not installed; "
            f"install it (pip install scikit-image) or use a drawn sample: {', '.join(DRAWN)}"
        ) from None
    array = np.asarray(getattr(skimage.data, name)())
    if name == "horse":  # bool silhouette: True = background
        background = array.astype(bool)
        rgb = np.repeat((background * 255).astype(np.uint8)[..., None], 3, axis=2)
        return Image.fromarray(rgb), Image.fromarray((~background).astype(np.uint8) * 255)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return Image.fromarray(array[..., :3].astype(np.uint8)), None


# ------------------------------------------------------------------------------------------ public


def _check_size(size: int | None) -> None:
    if size is None:
        return
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise InputError(f"size must be an integer >= 16 (pixels) or None, got {size!r}")


def load_sample(name: str, *, size: int | None = None, alpha: bool = False) -> Image.Image:
    """A sample image as a PIL image.

    Args:
        name: One of :func:`list_samples`.
        size: Drawn samples are drawn ``size × size`` (default 256). Photographs are returned at
            their own resolution, or resized (bicubic) so that their longer side is ``size``.
        alpha: Return RGBA with the object mask as alpha (background transparent), for samples
            whose mask is known (the drawn ones and ``"horse"``). The Sketcher composites an alpha
            channel onto white and uses it as the object mask.

    Returns:
        An ``RGB`` (or ``RGBA``) image.

    Raises:
        InputError: Unknown name, bad size, ``alpha=True`` for a photograph without a known mask,
            or a photograph requested without scikit-image installed.

    Example:
        >>> img = load_sample("mug", size=96, alpha=True)
        >>> img.mode, img.size
        ('RGBA', (96, 96))
    """
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    _check_size(size)
    if name in DRAWN:
        image, mask = _drawn(name, size or _DEFAULT_DRAWN_SIZE)
        mask_or_none: Image.Image | None = mask
    else:
        image, mask_or_none = _photo(name)
        if size is not None:
            w, h = image.size
            scale = size / max(w, h)
            new = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = image.resize(new, Image.Resampling.BICUBIC)
            if mask_or_none is not None:
                mask_or_none = mask_or_none.resize(new, Image.Resampling.BICUBIC)
    if alpha:
        if mask_or_none is None:
            known = [n for n in SAMPLES if n in DRAWN or n == "horse"]
            raise InputError(
                f"sample {name!r} has no known object mask; alpha=True works for {', '.join(known)}"
            )
        image = image.copy()
        image.putalpha(mask_or_none)
    return image


def sample_tensor(name: str, *, size: int | None = None) -> Tensor:
    """A sample image as a float32 tensor ``[1, 3, H, W]`` in [0, 1] (RGB, on the CPU).

    Example:
        >>> x = sample_tensor("house", size=32)
        >>> x.shape, x.dtype, bool(x.min() >= 0 and x.max() <= 1)
        (torch.Size([1, 3, 32, 32]), torch.float32, True)
    """
    array = np.asarray(load_sample(name, size=size), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def save_sample(
    name: str, path: str | os.PathLike[str], *, size: int | None = None, alpha: bool = False
) -> Path:
    """Write a sample as a PNG (atomically), e.g. to try the command line on it.

    Example:
        >>> import tempfile, pathlib
        >>> path = save_sample("house", pathlib.Path(tempfile.mkdtemp()) / "house.png", size=64)
        >>> path.name
        'house.png'
    """
    import io

    buffer = io.BytesIO()
    load_sample(name, size=size, alpha=alpha).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
