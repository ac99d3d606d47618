"""Cluttered scenes with a known object mask, for bench_background.py.

An object with a known mask (the package's drawn house and mug, scikit-image's horse silhouette) is
scaled to ``scale`` of the canvas, placed at a seeded random offset, and composited by its mask
over a background: a scikit-image texture (brick, grass, gravel; grey, tinted) or the corner of a
photograph (coffee, rocket, astronaut). The mask is the object's own alpha, thresholded at 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clipasso.data import load_sample

OBJECTS = ("house", "mug", "horse")
BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "rocket", "astronaut")
_TINT = {"brick": (1.0, 0.78, 0.62), "grass": (0.7, 1.0, 0.6), "gravel": (0.95, 0.92, 0.85)}


def background(name: str, size: int) -> np.ndarray:
    """``[size, size, 3]`` float in [0, 1]."""
    import skimage.data

    a = np.asarray(getattr(skimage.data, name)())
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2).astype(np.float32) / 255.0
        a = a * np.asarray(_TINT.get(name, (1.0, 1.0, 1.0)), dtype=np.float32)
    else:
        a = a[..., :3].astype(np.float32) / 255.0
    side = min(a.shape[0], a.shape[1], size)
    corner = a[:side, :side]  # the top-left corner: a photograph's background, not its subject
    img = Image.fromarray((corner * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def scene(obj: str, bg: str, *, size: int = 224, scale: float = 0.7, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(image [1, 3, S, S] in [0, 1], mask [1, 1, S, S] in {0, 1})``."""
    rng = np.random.default_rng(seed)
    side = round(size * scale)
    rgba = load_sample(obj, alpha=True, size=side if obj != "horse" else None).convert("RGBA")
    bbox = rgba.getchannel("A").point(lambda v: 255 if v > 127 else 0).getbbox()
    rgba = rgba.crop(bbox)
    w, h = rgba.size
    k = side / max(w, h)
    rgba = rgba.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)
    w, h = rgba.size
    x0 = int(rng.integers(0, size - w + 1))
    y0 = int(rng.integers(0, size - h + 1))
    a = np.asarray(rgba, dtype=np.float32) / 255.0
    canvas = background(bg, size)
    alpha = np.zeros((size, size), np.float32)
    alpha[y0 : y0 + h, x0 : x0 + w] = a[..., 3]
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[y0 : y0 + h, x0 : x0 + w] = a[..., :3]
    out = rgb * alpha[..., None] + canvas * (1 - alpha[..., None])
    image = torch.from_numpy(out).permute(2, 0, 1)[None].contiguous().clamp(0, 1)
    mask = torch.from_numpy((alpha > 0.5).astype(np.float32))[None, None]
    return image, mask


def plain(obj: str, *, size: int = 224, scale: float = 0.7, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The same object on white (the reference's favourable case)."""
    rng = np.random.default_rng(seed)
    img, mask = scene(obj, "brick", size=size, scale=scale, seed=int(rng.integers(0, 2**31)))
    img = img * mask + (1 - mask)
    return img, mask
