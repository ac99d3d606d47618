"""Batched cubic Bézier strokes as an ``nn.Module``.

A :class:`StrokeSet` holds ``B`` sketches of ``N`` strokes each: control points
``[B, N, 3k+1, 2]`` (pixels, origin top-left, y down), half-widths ``[B, N]`` (inked where the
distance to the curve is ``≤ r``) and straight RGBA colours ``[B, N, 4]``. Which of the three are
trainable ``nn.Parameter`` s is a constructor choice (points only by default); the others are
buffers, so ``state_dict`` keys are always ``points``, ``widths`` and ``colors``.

Example:
    >>> import torch
    >>> from clipasso.strokes import StrokeSet
    >>> s = StrokeSet(torch.rand(16, 4, 2) * 224)  # unbatched input → B = 1
    >>> s.batch_size, s.num_strokes, s.num_segments, s.canvas_size
    (1, 16, 1, (224, 224))
    >>> s.render().shape
    torch.Size([1, 3, 224, 224])
    >>> [name for name, _ in s.named_parameters()]
    ['points']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError, SVGError, _with_prefix
from .render import rasterize, validate_strokes
from .svg import parse_svg, read_svg, strokes_to_svg

__all__ = ["TRAINABLE_FIELDS", "StrokeSet"]

#: Names accepted by ``StrokeSet(trainable=...)``.
TRAINABLE_FIELDS = ("points", "widths", "colors")


def _as_trainable(trainable: str | Iterable[str]) -> tuple[str, ...]:
    names = (trainable,) if isinstance(trainable, str) else tuple(trainable)
    bad = [n for n in names if n not in TRAINABLE_FIELDS]
    if bad:
        raise InputError(f"trainable must name some of {TRAINABLE_FIELDS}, got {bad}")
    return tuple(n for n in TRAINABLE_FIELDS if n in names)


class StrokeSet(nn.Module):
    """``B`` sketches of ``N`` cubic Bézier strokes with widths and colours.

    Args:
        points: ``[B, N, 3k+1, 2]`` or ``[N, 3k+1, 2]`` control points in pixels.
        widths: Half-widths ``r``: a float, ``[N]`` or ``[B, N]`` (default 1.5 px, CLIPasso's).
        colors: RGBA in ``[0, 1]``: ``[4]``, ``[N, 4]`` or ``[B, N, 4]`` (default opaque black).
        canvas_size: ``(H, W)`` (or an int) of the canvas the points live on.
        trainable: Which of ``"points"``, ``"widths"``, ``"colors"`` are ``nn.Parameter`` s.

    Raises:
        InputError: Wrong shapes, NaN/inf values, negative widths, unknown trainable names.
    """

    points: Tensor
    widths: Tensor
    colors: Tensor

    def __init__(
        self,
        points: Tensor,
        widths: Tensor | float = 1.5,
        colors: Tensor | Sequence[float] = (0.0, 0.0, 0.0, 1.0),
        *,
        canvas_size: int | tuple[int, int] = (224, 224),
        trainable: str | Iterable[str] = ("points",),
    ) -> None:
        super().__init__()
        p, w, c, hw = validate_strokes(points, widths, colors, canvas_size)
        self._canvas = hw
        self._trainable = _as_trainable(trainable)
        for name, value in (("points", p), ("widths", w), ("colors", c)):
            data = value.detach().clone().contiguous()
            if name in self._trainable:
                self.register_parameter(name, nn.Parameter(data))
            else:
                self.register_buffer(name, data)

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        """Number of sketches ``B``."""
        return int(self.points.shape[0])

    @property
    def num_strokes(self) -> int:
        """Strokes per sketch ``N``."""
        return int(self.points.shape[1])

    @property
    def num_segments(self) -> int:
        """Cubic segments per stroke ``k`` (``P = 3k + 1``)."""
        return (int(self.points.shape[2]) - 1) // 3

    @property
    def canvas_size(self) -> tuple[int, int]:
        """``(H, W)`` of the canvas."""
        return self._canvas

    @property
    def trainable(self) -> tuple[str, ...]:
        """Names of the fields that are parameters."""
        return self._trainable

    def extra_repr(self) -> str:
        return (
            f"batch_size={self.batch_size}, num_strokes={self.num_strokes}, "
            f"num_segments={self.num_segments}, "
            f"canvas_size={self.canvas_size}, trainable={self.trainable}"
        )

    # ------------------------------------------------------------------ rendering
    def rasterize(
        self,
        size: int | tuple[int, int] | None = None,
        backend: Any = "auto",
        background: float | Sequence[float] | Tensor | None = None,
    ) -> Tensor:
        """Straight-alpha RGBA ``[B, 4, H, W]`` of the strokes (differentiable), or ``[B, 3, H, W]``
        on a ``background``.

        Args:
            size: Output ``(H, W)``; when it differs from the canvas, points are scaled per axis
                and widths by the geometric mean of the two factors.
            backend: Rasterizer name or instance (see :func:`clipasso.render.rasterize`).
            background: None for RGBA, else what :func:`clipasso.render.composite` takes.
        """
        points, widths, hw = self.points, self.widths, self._canvas
        if size is not None:
            new = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
            if new != hw:
                sy, sx = new[0] / hw[0], new[1] / hw[1]
                points = points * points.new_tensor([sx, sy])
                widths = widths * (sx * sy) ** 0.5
                hw = (int(new[0]), int(new[1]))
        return rasterize(points, widths, self.colors, size=hw, backend=backend, background=background)

    def render(
        self,
        size: int | tuple[int, int] | None = None,
        background: float | Sequence[float] | Tensor = 1.0,
        backend: Any = "auto",
    ) -> Tensor:
        """Render onto a background: ``[B, 3, H, W]`` in ``[0, 1]`` (differentiable).

        Example:
            >>> import torch
            >>> StrokeSet(torch.full((1, 4, 2), 8.0), canvas_size=16).render(size=32).shape
            torch.Size([1, 3, 32, 32])
        """
        return self.rasterize(size=size, backend=backend, background=background)

    forward = render

    @torch.no_grad()
    def clamp_colors_(self) -> StrokeSet:
        """Clamp colours (and so opacities) to ``[0, 1]`` in place; returns ``self``."""
        self.colors.clamp_(0.0, 1.0)
        return self

    # ------------------------------------------------------------------ copies
    def _new(self, points: Tensor, widths: Tensor, colors: Tensor, canvas: tuple[int, int]) -> StrokeSet:
        return StrokeSet(points, widths, colors, canvas_size=canvas, trainable=self._trainable)

    def detach(self) -> StrokeSet:
        """A copy with detached (cloned) tensors and the same trainable configuration."""
        return self._new(self.points, self.widths, self.colors, self._canvas)

    def clone(self) -> StrokeSet:
        """Alias of :meth:`detach` (tensors are always copied)."""
        return self.detach()

    def resized(self, size: int | tuple[int, int]) -> StrokeSet:
        """A detached copy on a canvas of ``size``: points scaled per axis, widths by the mean factor."""
        new = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if new[0] <= 0 or new[1] <= 0:
            raise InputError(f"size must be positive, got {size!r}")
        sy, sx = new[0] / self._canvas[0], new[1] / self._canvas[1]
        pts = self.points.detach() * self.points.new_tensor([sx, sy])
        return self._new(pts, self.widths.detach() * (sx * sy) ** 0.5, self.colors, new)

    def scaled(self, factor: float) -> StrokeSet:
        """A detached copy scaled by ``factor`` (canvas, points and widths), e.g. 2 for the 2× export."""
        if not factor > 0:
            raise InputError(f"factor must be > 0, got {factor!r}")
        h, w = self._canvas
        return self.resized((max(1, round(h * factor)), max(1, round(w * factor))))

    def __getitem__(self, index: int | slice) -> StrokeSet:
        """Sketch ``index`` (a ``B = 1`` set) or a slice of sketches, as a detached copy."""
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"sketch index {index} out of range for batch size {self.batch_size}")
            index = slice(index, index + 1 if index != -1 else None)
        if not isinstance(index, slice):
            raise InputError(f"index must be an int or a slice, got {type(index).__name__}")
        pts = self.points[index]
        if pts.shape[0] == 0:
            raise IndexError("empty selection of sketches")
        return self._new(pts, self.widths[index], self.colors[index], self._canvas)

    def subset(self, strokes: Sequence[int] | range) -> StrokeSet:
        """The strokes ``strokes`` (indices, in that order) of every sketch, as a detached copy.

        Example:
            >>> s = StrokeSet(torch.rand(1, 5, 4, 2) * 10, canvas_size=10)
            >>> s.subset([4, 0]).num_strokes, torch.equal(s.subset([4, 0]).points[0, 0], s.points[0, 4])
            (2, True)
        """
        idx = [int(i) for i in strokes]
        n = self.num_strokes
        if not idx or any(not -n <= i < n for i in idx):
            raise InputError(f"stroke indices must be in 0..{n - 1} and not empty, got {list(strokes)}")
        sel = torch.tensor(idx, dtype=torch.long, device=self.points.device)
        return self._new(
            self.points.index_select(1, sel),
            self.widths.index_select(1, sel),
            self.colors.index_select(1, sel),
            self._canvas,
        )

    def __len__(self) -> int:
        return self.batch_size

    def split(self) -> list[StrokeSet]:
        """The ``B`` sketches as separate ``B = 1`` sets."""
        return [self[i] for i in range(self.batch_size)]

    @classmethod
    def cat(cls, sets: Sequence[StrokeSet]) -> StrokeSet:
        """Concatenate sets along the batch dimension (same N, k and canvas; detached copy).

        The trainable configuration is taken from the first set.
        """
        if not sets:
            raise InputError("cat needs at least one StrokeSet")
        first = sets[0]
        for s in sets[1:]:
            if s.points.shape[1:] != first.points.shape[1:] or s.canvas_size != first.canvas_size:
                raise InputError(
                    "cannot concatenate StrokeSets with different strokes/segments/canvas: "
                    f"{tuple(first.points.shape[1:])} on {first.canvas_size} vs "
                    f"{tuple(s.points.shape[1:])} on {s.canvas_size}"
                )
        return first._new(
            torch.cat([s.points.detach() for s in sets]),
            torch.cat([s.widths.detach() for s in sets]),
            torch.cat([s.colors.detach() for s in sets]),
            first.canvas_size,
        )

    stack = cat

    # ------------------------------------------------------------------ SVG
    def to_svg(self, index: int = 0) -> str:
        """SVG text of sketch ``index`` (``stroke-width = 2r``, ``viewBox`` = canvas)."""
        if not -self.batch_size <= index < self.batch_size:
            raise IndexError(f"sketch index {index} out of range for batch size {self.batch_size}")
        return strokes_to_svg(self.points[index], self.widths[index], self.colors[index], self._canvas)

    def save_svg(self, path: str | os.PathLike[str], index: int = 0) -> Path:
        """Write :meth:`to_svg` to ``path``; returns the path."""
        from ._io import atomic_write_text

        return atomic_write_text(path, self.to_svg(index))

    @classmethod
    def from_svg(
        cls,
        source: str | os.PathLike[str],
        *,
        trainable: str | Iterable[str] = ("points",),
        mixed_segments: str = "split",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> StrokeSet:
        """Read a ``B = 1`` set from SVG text or a file path.

        Args:
            source: SVG text (starting with ``<``) or a path to an ``.svg`` file.
            mixed_segments: ``"split"`` strokes into single segments when their segment counts
                differ, or ``"error"``.

        Raises:
            SVGError: Unreadable or malformed SVG, or one without strokes (see :mod:`clipasso.svg`);
                the message names the file.
            LimitError: An SVG above the SVG limits (:mod:`clipasso.limits`).
        """
        if isinstance(source, str) and source.lstrip().startswith("<"):
            doc, name = parse_svg(source), ""
        else:
            doc, name = read_svg(source), f"{source}: "
        try:
            pts, wid, col = doc.to_tensors(mixed_segments=mixed_segments, dtype=dtype, device=device)
        except SVGError as exc:
            raise _with_prefix(exc, name) from None
        return cls(pts, wid, col, canvas_size=doc.canvas_size, trainable=trainable)
