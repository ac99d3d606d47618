"""Proxy models and inputs shared by the benchmarks and the studies (not a test).

No real CLIP weights can be downloaded here, so the benchmarks and ``studies/`` run on proxies of
the REAL architectures: CLIP RN101 (the loss) and ViT-B/32 (the saliency initialisation), built with
``clip.model.CLIP`` and the published hyper-parameters (:data:`REAL_SPECS`), random weights, the
ResNet's BatchNorm recalibrated with :func:`clipasso.testing.recalibrate_batchnorm` on what the
loss sees during a run (:func:`calibration_images`), so that the loss is content-sensitive; they
are written once with ``torch.save`` and read back through :func:`clipasso.models.load_clip`
(:func:`load_models`). Same shapes, same cost as the released models; not their numbers.

Example:
    >>> synthetic_target(64).shape
    torch.Size([1, 3, 64, 64])
    >>> parse_options("target_pool=64,precision='fp32'")
    {'target_pool': 64, 'precision': 'fp32'}
"""

from __future__ import annotations

import argparse
import ast
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clipasso.augment import ReferenceViews
from clipasso.data import load_sample
from clipasso.image import prepare_target
from clipasso.models import load_clip
from clipasso.render import composite, rasterize
from clipasso.testing import recalibrate_batchnorm

__all__ = [
    "REAL_SPECS",
    "SEEDS",
    "Models",
    "build_models",
    "calibration_images",
    "load_models",
    "parse_options",
    "random_sketches",
    "synthetic_target",
]

#: ``clip.model.CLIP`` constructor arguments of the released models (same shapes, same cost).
REAL_SPECS: dict[str, dict[str, Any]] = {
    "RN101": dict(
        embed_dim=512, image_resolution=224, vision_layers=(3, 4, 23, 3), vision_width=64,
        vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=512,
        transformer_heads=8, transformer_layers=12,
    ),
    "ViT-B/32": dict(
        embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
        context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
        transformer_layers=12,
    ),
}  # fmt: skip

SEEDS = (0, 1000, 2000)


# ---------------------------------------------------------------------------------------- inputs


def synthetic_target(size: int = 224) -> Tensor:
    """A deterministic object on white ``[1, 3, size, size]``: a disk, a bar and a ring, coloured."""
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    s = size / 224.0
    img = torch.ones(3, size, size)
    disk = ((xx - 90 * s) ** 2 + (yy - 100 * s) ** 2).sqrt() < 48 * s
    bar = (xx > 110 * s) & (xx < 190 * s) & (yy > 130 * s) & (yy < 160 * s)
    r = ((xx - 150 * s) ** 2 + (yy - 70 * s) ** 2).sqrt()
    ring = (r > 22 * s) & (r < 32 * s)
    for region, colour in ((disk, (0.85, 0.3, 0.2)), (bar, (0.2, 0.35, 0.8)), (ring, (0.1, 0.1, 0.1))):
        for c in range(3):
            img[c][region] = colour[c]
    return img.unsqueeze(0)


def random_sketches(count: int, size: int = 224, strokes: int = 16, seed: int = 0) -> Tensor:
    """``count`` renders of random 16-stroke sketches ``[count, 3, size, size]`` (black on white)."""
    g = torch.Generator().manual_seed(seed)
    p0 = torch.rand(count, strokes, 1, 2, generator=g) * size
    steps = 0.05 * size * (torch.rand(count, strokes, 3, 2, generator=g) - 0.5)
    pts = torch.cat([p0, p0 + steps.cumsum(2)], dim=2)
    widths = torch.full((count, strokes), 1.5)
    colors = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(count, strokes, 4)
    with torch.no_grad():
        return composite(rasterize(pts, widths, colors, size=size))


def calibration_images(target: Tensor) -> Tensor:
    """Images the ResNet's BatchNorm statistics are re-estimated on: the target, 7 random views of
    it and 8 random stroke sketches (what the loss sees during a run)."""
    views = ReferenceViews(7, normalize=False, seed=123)
    xs, _ = views(target)
    return torch.cat([xs[0], random_sketches(8, target.shape[-1])], dim=0)


def build_models(workdir: Path, target: Tensor, seed: int = 0) -> dict[str, Path]:
    """Write random-weight RN101 (BatchNorm recalibrated) and ViT-B/32 state dicts into ``workdir``."""
    from clip.model import CLIP

    workdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, spec in REAL_SPECS.items():
        path = workdir / f"random-{name.replace('/', '-')}-seed{seed}.pt"
        paths[name] = path
        if path.exists():
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIP(**spec).float().eval()
        if name.startswith("RN"):
            recalibrate_batchnorm(model, calibration_images(target))
        torch.save(model.state_dict(), path)
        del model
        gc.collect()
    return paths


# ---------------------------------------------------------------------------------------- models


@dataclass
class Models:
    """The proxy models and the target of a run.

    Attributes:
        rn101: The loss's CLIP (RN101 proxy, or any CLIP model).
        vit: The saliency initialiser's CLIP ViT (ViT-B/32 proxy, or any CLIP ViT).
        target: The image to sketch, ``[1, 3, H, W]`` in [0, 1].
    """

    rn101: nn.Module
    vit: nn.Module
    target: Tensor


def load_models(workdir: Path, target_name: str = "synthetic") -> Models:
    """The random-weight RN101 and ViT-B/32, written once into ``workdir``, loaded via ``load_clip``.

    The models are always calibrated on the synthetic target (the same proxy models for every
    target); ``target_name`` picks the target of the runs: ``"synthetic"`` or a
    :func:`clipasso.data.list_samples` name (prepared as the Sketcher prepares it, 224 px, RGB).
    """
    paths = build_models(workdir, synthetic_target())
    if target_name == "synthetic":
        target = synthetic_target()
    else:
        target = prepare_target(load_sample(target_name).convert("RGB"), size=224).image
    return Models(rn101=load_clip(paths["RN101"]), vit=load_clip(paths["ViT-B/32"]), target=target)


# ---------------------------------------------------------------------------------------- options


def parse_options(text: str) -> dict[str, Any]:
    """``"target_pool=64,precision='fp32'"`` -> ``{"target_pool": 64, "precision": "fp32"}``."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out
