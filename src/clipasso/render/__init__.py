"""Differentiable rasterization of cubic Bézier strokes.

``rasterize(points, widths, colors, size, backend="auto") -> [B, 4, H, W]`` straight-alpha RGBA
and ``composite(rgba, background=1.0) -> [B, 3, H, W]``. Backends live in :data:`RASTERIZERS`:
``"torch"`` (default, pure PyTorch, analytic box-filtered coverage) and ``"diffvg"`` (optional,
needs the compiled diffvg). See ``docs/rasterizer.md``.

Example:
    >>> import torch
    >>> from clipasso.render import rasterize, composite
    >>> img = composite(rasterize(torch.full((2, 4, 2), 6.0), 1.5, (0, 0, 0, 1), size=(12, 12)))
    >>> img.shape
    torch.Size([1, 3, 12, 12])
"""

from __future__ import annotations

from .base import (  # noqa: F401  (deprecated names)
    ENV_VAR,
    RASTERIZERS,
    Rasterizer,
    available_backends,
    composite,
    create_rasterizer,
    get_rasterizer,
    list_rasterizers,
    rasterize,
    register_rasterizer,
    resolve_backend,
    validate_strokes,
)
from .diffvg_backend import DiffvgRasterizer
from .torch_backend import TorchRasterizer, box_coverage, rasterize_torch

__all__ = [
    "ENV_VAR",
    "RASTERIZERS",
    "DiffvgRasterizer",
    "Rasterizer",
    "TorchRasterizer",
    "box_coverage",
    "composite",
    "create_rasterizer",
    "list_rasterizers",
    "rasterize",
    "rasterize_torch",
    "register_rasterizer",
    "resolve_backend",
    "validate_strokes",
]
