"""Tiny random-weight CLIP models for tests, notebooks and offline experiments.

They are built from a random state dict, written to a file and read back through
:func:`clipasso.models.load_clip`, i.e. exactly the code path real weights take. Image resolution
is 224 so the whole pipeline runs at its real size; everything else is small, so a model builds in
a fraction of a second. They are deterministic given the seed.

Random ResNet towers are nearly blind (all images give almost the same features) until their
BatchNorm statistics are recalibrated on a few images: see :func:`recalibrate_batchnorm`.

For rasterizer checks, :func:`supersampled_render` renders strokes by brute-force supersampling
(the image that exact box-filtered coverage should equal). For SVG checks,
:func:`render_svg_reference` renders a document with an independent SVG renderer
(``rsvg-convert`` from librsvg, Debian's ``librsvg2-bin``) and :func:`compare_renders` measures how
far two renders are apart.

Example:
    >>> from clipasso.testing import tiny_clip
    >>> model = tiny_clip("vit", seed=1)
    >>> model.visual.input_resolution
    224
"""

from __future__ import annotations

import atexit
import io
import math
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .errors import BackendUnavailableError, InputError
from .models.loading import load_clip
from .models.taps import normalize, visual_of

__all__ = [
    "TINY_SPECS",
    "RenderComparison",
    "compare_renders",
    "recalibrate_batchnorm",
    "render_svg_reference",
    "save_tiny_clip",
    "supersampled_render",
    "tiny_clip",
    "tiny_clip_file",
    "tiny_clip_state_dict",
]

Kind = Literal["resnet", "vit"]

#: Constructor arguments of the tiny models (clip.model.CLIP).
TINY_SPECS: dict[str, dict[str, Any]] = {
    "resnet": dict(
        embed_dim=64,
        image_resolution=224,
        vision_layers=(1, 1, 1, 1),
        vision_width=8,
        vision_patch_size=None,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    ),
    "vit": dict(
        embed_dim=64,
        image_resolution=224,
        vision_layers=3,
        vision_width=128,
        vision_patch_size=32,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=1,
    ),
}


def _check_kind(kind: str) -> None:
    if kind not in TINY_SPECS:
        raise InputError(f"tiny CLIP kind must be one of {sorted(TINY_SPECS)}, got {kind!r}")


def _build(kind: str, seed: int) -> nn.Module:
    from clip.model import CLIP

    _check_kind(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**TINY_SPECS[kind]).float().eval()
        # CLIP leaves BatchNorm at identity statistics; give it some spread so layers differ.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.normal_(0.0, 0.1)
    return model


def tiny_clip_state_dict(kind: Kind = "resnet", seed: int = 0) -> dict[str, Tensor]:
    """A random state dict of a tiny CLIP model of the given kind (deterministic in ``seed``)."""
    return {k: v.clone() for k, v in _build(kind, seed).state_dict().items()}


def save_tiny_clip(
    path: str | Path,
    kind: Kind = "resnet",
    seed: int = 0,
    *,
    format: Literal["state_dict", "torchscript"] = "state_dict",
) -> Path:
    """Write a tiny CLIP model to ``path`` as a plain state dict or an OpenAI-style TorchScript archive."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "state_dict":
        torch.save(tiny_clip_state_dict(kind, seed), path)
    elif format == "torchscript":
        model = _build(kind, seed)
        image = torch.zeros(1, 3, 224, 224)
        text = torch.zeros(1, 77, dtype=torch.long)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit deprecation and tracer warnings: expected here
            traced = torch.jit.trace(model, (image, text), check_trace=False)
            torch.jit.save(traced, str(path))
    else:
        raise InputError(f"format must be 'state_dict' or 'torchscript', got {format!r}")
    return path


@cache
def _tmpdir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="clipasso-tiny-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def tiny_clip_file(kind: Kind = "resnet", seed: int = 0, format: str = "state_dict") -> Path:
    """Path of a tiny CLIP weights file (written once per process into a temporary directory)."""
    _check_kind(kind)
    suffix = "pt" if format == "state_dict" else "jit.pt"
    return save_tiny_clip(_tmpdir() / f"tiny-{kind}-{seed}.{suffix}", kind, seed, format=format)  # type: ignore[arg-type]


def tiny_clip(
    kind: Kind = "resnet", seed: int = 0, *, device: str | torch.device = "cpu", format: str = "state_dict"
) -> nn.Module:
    """A tiny random CLIP model loaded through :func:`clipasso.models.load_clip` (frozen, eval)."""
    return load_clip(tiny_clip_file(kind, seed, format), device=device)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Tensor | Iterable[Tensor]) -> nn.Module:
    """Re-estimate a ResNet tower's BatchNorm statistics on a few images, in place.

    One forward pass in train mode with ``momentum=None`` (a cumulative average), then back to eval.
    This makes random-weight ResNet towers content-sensitive, which is useful for cost and convergence
    proxies (still no substitute for real weights).

    Args:
        model: A CLIP model or image tower.
        images: RGB images in [0, 1], ``[B, 3, H, W]`` (or an iterable of such batches).

    Returns:
        The same model.
    """
    visual = visual_of(model)
    norms = [m for m in visual.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return model
    batches = [images] if isinstance(images, Tensor) else list(images)
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        dtype = next(visual.parameters()).dtype
        for batch in batches:
            visual(normalize(batch).to(dtype))
    finally:
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
            m.train(training)
    return model


# ---------------------------------------------------------------------------------------- SVG renders


def render_svg_reference(svg: str | bytes, size: tuple[int, int], *, timeout: float = 60.0) -> Tensor:
    """Render an SVG document with ``rsvg-convert`` (librsvg) onto white.

    Args:
        svg: The document.
        size: ``(H, W)`` of the output in pixels (the ``viewBox`` is stretched onto it).
        timeout: Seconds before the renderer is stopped.

    Returns:
        RGB in [0, 1], ``[3, H, W]`` (float32).

    Raises:
        BackendUnavailableError: ``rsvg-convert`` is not installed (``apt-get install librsvg2-bin``).
        InputError: The renderer failed on the document (its message is included).
    """
    from PIL import Image

    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise BackendUnavailableError(
            "rsvg-convert is not installed (Debian/Ubuntu: apt-get install librsvg2-bin)"
        )
    h, w = (int(v) for v in size)
    data = svg.encode() if isinstance(svg, str) else svg
    try:
        proc = subprocess.run(
            [exe, "-w", str(w), "-h", str(h), "-f", "png"], input=data, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"rsvg-convert took more than {timeout} s") from exc
    if proc.returncode != 0:
        raise InputError(f"rsvg-convert failed: {proc.stderr.decode(errors='replace').strip()[:300]}")
    with Image.open(io.BytesIO(proc.stdout)) as img:
        rgba = torch.from_numpy(np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    if tuple(rgba.shape[1:]) != (h, w):
        raise InputError(f"rsvg-convert rendered {tuple(rgba.shape[1:])}, not {(h, w)}")
    alpha = rgba[3:4]
    return (rgba[:3] * alpha + (1 - alpha)).contiguous()


@dataclass(frozen=True)
class RenderComparison:
    """How far a render is from a reference render (both RGB on white).

    Attributes:
        mean_abs_ink: Mean of ``|ours − reference|`` over the channels and the inked pixels (those
            where either image is darker than ``1 − threshold`` in some channel); 0 when neither
            has ink.
        ink_ratio: Total ink (``1 − value``, summed over pixels and channels) of ours over the
            reference's; 1 when neither has ink.
        inked_pixels: Number of pixels inked in either image.
    """

    mean_abs_ink: float
    ink_ratio: float
    inked_pixels: int


def compare_renders(ours: Tensor, reference: Tensor, *, threshold: float = 0.02) -> RenderComparison:
    """Compare two renders on white: mean absolute difference over the inked pixels, and ink ratio.

    Args:
        ours: RGB ``[3, H, W]`` (or ``[1, 3, H, W]``) in [0, 1].
        reference: The same shape.
        threshold: Darkness that counts as ink.

    Returns:
        A :class:`RenderComparison`.

    Example:
        >>> import torch
        >>> a = torch.ones(3, 8, 8); a[:, 2:4, 2:6] = 0.0
        >>> compare_renders(a, a)
        RenderComparison(mean_abs_ink=0.0, ink_ratio=1.0, inked_pixels=8)
    """
    a, b = ours.detach().float().reshape(-1, *ours.shape[-2:]), reference.detach().float()
    b = b.reshape(-1, *reference.shape[-2:])
    if a.shape != b.shape:
        raise InputError(f"renders differ in shape: {list(a.shape)} and {list(b.shape)}")
    ink_a, ink_b = (1 - a).clamp(0, 1), (1 - b).clamp(0, 1)
    inked = (ink_a.amax(0) > threshold) | (ink_b.amax(0) > threshold)
    count = int(inked.sum())
    if count == 0:
        return RenderComparison(0.0, 1.0, 0)
    diff = float((a - b).abs()[:, inked].mean())
    total_b = float(ink_b.sum())
    ratio = float(ink_a.sum()) / total_b if total_b > 0 else float("inf")
    return RenderComparison(diff, ratio, count)


def supersampled_render(
    points: Tensor, widths: Tensor, colors: Tensor, size: tuple[int, int], ss: int = 16
) -> Tensor:
    """Strokes rendered by hard-edged ``ss × ss`` supersampling over white, composited per sample
    in stroke order: the box-filtered image the rasterizers approximate, for accuracy checks.

    The distance of each sample to a stroke is its distance to a 128-chord-per-segment polyline of
    the curve (a deviation below 1e-3 px for CLIPasso-like strokes); only the samples in a stroke's
    bounding box are tested. Slow (float64, every sample): for small canvases and tests.

    Args:
        points: ``[N, 3k+1, 2]`` control points in pixels (one sketch).
        widths: ``[N]`` half-widths ``r``.
        colors: ``[N, 4]`` straight RGBA.
        size: ``(H, W)``.
        ss: Samples per pixel along each axis.

    Returns:
        ``[3, H, W]`` float64 RGB in ``[0, 1]``.

    Example:
        >>> import torch
        >>> dot = torch.full((1, 4, 2), 8.0)
        >>> img = supersampled_render(dot, torch.tensor([2.0]), torch.tensor([[0.0, 0, 0, 1]]), (16, 16))
        >>> round(float((1 - img[0]).sum()), 1)  # ≈ π·2²
        12.6
    """
    h, w = size
    out = torch.ones(h * ss, w * ss, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 129, dtype=torch.float64)[:, None]
    for i in range(points.shape[0]):
        p, r = points[i].detach().double(), float(widths[i])
        curve = []
        for s in range(0, p.shape[0] - 1, 3):
            c0, c1, c2, c3 = p[s : s + 4]
            curve.append((1 - t) ** 3 * c0 + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t**2 * c2 + t**3 * c3)
        cur = torch.cat(curve)
        x0, y0 = (int(max(0, math.floor(float(v) - r - 1))) for v in cur.min(0).values)
        x1 = int(min(w, math.ceil(float(cur[:, 0].max()) + r + 1)))
        y1 = int(min(h, math.ceil(float(cur[:, 1].max()) + r + 1)))
        if x1 <= x0 or y1 <= y0:
            continue
        ys = (torch.arange(y0 * ss, y1 * ss, dtype=torch.float64) + 0.5) / ss
        xs = (torch.arange(x0 * ss, x1 * ss, dtype=torch.float64) + 0.5) / ss
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        samples = torch.stack([gx, gy], -1).reshape(-1, 2)
        a, d = cur[:-1], cur[1:] - cur[:-1]
        best = torch.full((samples.shape[0],), math.inf, dtype=torch.float64)
        for c in range(0, a.shape[0], 32):
            wv = samples[:, None] - a[None, c : c + 32]
            dd = d[None, c : c + 32]
            lam = ((wv * dd).sum(-1) / (dd * dd).sum(-1).clamp_min(1e-30)).clamp(0, 1)
            best = torch.minimum(best, (wv - lam[..., None] * dd).square().sum(-1).min(-1).values)
        ink = ((best <= r * r).double() * float(colors[i, 3])).view(len(ys), len(xs), 1)
        block = out[y0 * ss : y1 * ss, x0 * ss : x1 * ss]
        out[y0 * ss : y1 * ss, x0 * ss : x1 * ss] = ink * colors[i, :3].detach().double() + (1 - ink) * block
    return out.reshape(h, ss, w, ss, 3).mean((1, 3)).permute(2, 0, 1)
