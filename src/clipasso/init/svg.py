"""Warm start from an existing SVG's paths, topped up with saliency (or other) strokes."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import InputError
from ..limits import check_limit
from .base import INITIALIZERS, Initializer, InitResult, check_num_strokes, check_target, register_initializer

__all__ = ["SVGInitializer"]


@register_initializer("svg")
class SVGInitializer(Initializer):
    """Strokes read from an SVG (``StrokeSet.from_svg``), rescaled to the target canvas.

    The SVG's points are scaled by ``(W / W_svg, H / H_svg)`` and its half-widths by the mean of
    the two factors; colours are kept. When the SVG has fewer than N strokes, the remaining
    ``N − n`` come from the ``top_up`` initializer (called with the same target, generator and
    mask, and with the SVG's segment count); its maps are returned on the result. When it has
    more than N, ``on_excess="error"`` raises and ``"truncate"`` keeps the first N (drawing order).

    The SVG is read and checked when the initializer is built (so a bad file fails before any
    work, with an :class:`~clipasso.errors.SVGError` or :class:`~clipasso.errors.LimitError`
    naming it), not at each call. Its strokes may have at most ``max_segments`` cubic segments
    (:mod:`clipasso.limits`).

    Args:
        source: Path to an SVG file (``str`` or ``Path``) or the SVG document text
            (a string that starts with ``<``).
        top_up: Initializer instance, or a registered name built with ``top_up_options``.
        top_up_options: Keyword options for a named ``top_up`` (``num_segments`` is set from the SVG).
        on_excess: ``"error"`` or ``"truncate"``.
        model: CLIP model (module, name or path) handed to a named ``top_up`` initializer that takes
            one (the saliency initializer), unless ``top_up_options`` already names one. This lets a
            :class:`~clipasso.Sketcher` share its saliency model with the top-up.

    Example:
        >>> svg = (
        ...     '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
        ...     '<path d="M 10 10 C 30 0 60 20 90 10" fill="none" stroke="black"/></svg>'
        ... )
        >>> init = SVGInitializer(svg, top_up="random")
        >>> init.num_svg_strokes
        1
    """

    def __init__(
        self,
        source: str | Path,
        *,
        top_up: Initializer | str = "saliency",
        top_up_options: Mapping[str, Any] | None = None,
        on_excess: Literal["error", "truncate"] = "error",
        model: Any = None,
    ) -> None:
        if not isinstance(source, (str, Path)):
            raise InputError(f"source must be an SVG path or SVG text, got {type(source).__name__}")
        if on_excess not in ("error", "truncate"):
            raise InputError(f"on_excess must be 'error' or 'truncate', got {on_excess!r}")
        if isinstance(top_up, str) and top_up not in INITIALIZERS:
            raise InputError(f"unknown top_up initializer {top_up!r}; known: {INITIALIZERS.names()}")
        if isinstance(top_up, SVGInitializer):
            raise InputError("top_up must not be another SVGInitializer")
        self.source = source
        self.top_up = top_up
        self.top_up_options = dict(top_up_options or {})
        if model is not None and isinstance(top_up, str) and "model" not in self.top_up_options:
            if "model" in inspect.signature(INITIALIZERS.get(top_up)).parameters:
                self.top_up_options["model"] = model
        self.on_excess = on_excess
        self._top_up_cache: dict[int, Initializer] = {}
        self._svg = self._read()

    @property
    def num_svg_strokes(self) -> int:
        """Strokes the SVG gives (after splitting mixed segment counts into single segments)."""
        return self._svg.num_strokes

    def _read(self) -> Any:
        from ..strokes import StrokeSet

        src = self.source
        if isinstance(src, str) and src.lstrip().startswith("<"):
            svg = StrokeSet.from_svg(src)
        else:
            path = Path(src)
            if not path.is_file():
                raise InputError(f"SVG file not found: {str(path)!r}")
            svg = StrokeSet.from_svg(path)
        check_limit(
            svg.num_segments, "max_segments", f"the cubic segments per stroke of the SVG {self._name()}"
        )
        return svg

    def _name(self) -> str:
        src = self.source
        return "text" if isinstance(src, str) and src.lstrip().startswith("<") else str(src)

    def _top_up_for(self, num_segments: int) -> Initializer:
        if isinstance(self.top_up, Initializer):
            return self.top_up
        if num_segments not in self._top_up_cache:
            opts = {**self.top_up_options, "num_segments": num_segments}
            self._top_up_cache[num_segments] = INITIALIZERS.create(self.top_up, **opts)
        return self._top_up_cache[num_segments]

    def __call__(
        self, target: Tensor, num_strokes: int, *, generator: torch.Generator, mask: Tensor | None = None
    ) -> InitResult:
        from ..strokes import StrokeSet

        h, w = check_target(target)
        n = check_num_strokes(num_strokes)
        svg = self._svg
        dev = target.device
        pts = svg.points.detach()[0].to(device=dev, dtype=torch.float32)  # [M, P, 2]
        widths = svg.widths.detach()[0].to(device=dev, dtype=torch.float32)  # [M]
        colors = svg.colors.detach()[0].to(device=dev, dtype=torch.float32)  # [M, 4]
        sh, sw = (int(v) for v in svg.canvas_size)
        sx, sy = w / sw, h / sh
        pts = pts * torch.tensor([sx, sy], device=dev, dtype=torch.float32)
        widths = widths * (0.5 * (sx + sy))
        m = pts.shape[0]
        if m > n:
            if self.on_excess == "error":
                raise InputError(
                    f"the SVG has {m} strokes but num_strokes={n}; "
                    f"pass on_excess='truncate' to keep the first {n}"
                )
            pts, widths, colors = pts[:n], widths[:n], colors[:n]
        extra: InitResult | None = None
        if m < n:
            p = pts.shape[1] if m > 0 else 4
            if m > 0 and (p - 1) % 3 != 0:
                raise InputError(f"SVG strokes have {p} points, not 3k + 1")
            filler = self._top_up_for((p - 1) // 3)
            extra = filler(target, n - m, generator=generator, mask=mask)
            e = extra.strokes
            ep = e.points.detach()[0].to(device=dev, dtype=torch.float32)
            if m > 0 and ep.shape[1] != p:
                raise InputError(
                    f"top_up strokes have {ep.shape[1]} points per stroke but the SVG's have {p}; "
                    "use the same number of segments"
                )
            pts = torch.cat([pts, ep], dim=0)
            widths = torch.cat([widths, e.widths.detach()[0].to(dev, torch.float32)], dim=0)
            colors = torch.cat([colors, e.colors.detach()[0].to(dev, torch.float32)], dim=0)
        strokes = StrokeSet(pts[None], widths=widths[None], colors=colors[None], canvas_size=(h, w))
        if extra is None:
            return InitResult(strokes=strokes)
        return InitResult(
            strokes=strokes,
            relevance=extra.relevance,
            edges=extra.edges,
            distribution=extra.distribution,
            pixels=extra.pixels,
        )
