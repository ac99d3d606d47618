"""Read and write stroke sketches as SVG.

Writing: one ``<path>`` per stroke (``M x y C … C …``), ``fill="none"``, ``stroke`` colour plus
``stroke-opacity``, ``stroke-width`` = ``2r`` (the SVG width is the full width, our ``r`` is the
half-width), round caps and joins (the look of the distance-based raster), ``viewBox`` = the
canvas. Numbers are written as the shortest decimals that read back to the same value in the
tensors' dtype, so our own SVG parses back to identical float32 strokes (float64: identical points
and widths, colours within one unit in the last place).

Reading turns the strokes of an SVG, as drawing programs export them, into cubic Bézier strokes
on a pixel canvas (``canvas_size`` = the root ``viewBox``, or ``width``/``height``):

* ``<path>`` with every command (``M L H V C S Q T A Z``, absolute and relative): lines and
  quadratics become cubics exactly, elliptical arcs become cubics of at most 90° each (radial
  error below 0.03 % of the radius), ``Z`` closes with a line. Each subpath is one stroke.
* the basic shapes ``<line> <polyline> <polygon> <rect>`` (rounded corners too) ``<circle>
  <ellipse>``, as closed strokes where they are closed;
* ``transform`` attributes (``matrix translate scale rotate skewX skewY``, lists of them) on any
  element, composed through nested groups, ``<use>`` (``x``/``y`` and ``href`` to an element or
  ``<symbol>``) and nested ``<svg>`` viewports (``viewBox``, ``preserveAspectRatio``). An affine
  map is exact on the control points; the stroke width is scaled by ``sqrt(|det|)`` of the
  transform (``vector-effect="non-scaling-stroke"``: not at all), one width per stroke;
* presentation attributes, ``style`` attributes and ``<style>`` sheets with simple selectors
  (``tag``, ``.class``, ``#id``, ``*``, compounds of those, comma lists), with CSS precedence and
  inheritance: ``stroke`` (every CSS colour syntax, ``currentColor``; a gradient is read as the
  mean of its stops), ``stroke-width`` (absolute units and %), ``stroke-opacity``, ``opacity``
  (multiplied down the tree), ``display``, ``visibility``.

A missing ``stroke`` reads as black (an outline of a filled shape), a missing ``stroke-width`` as 1,
``stroke="none"`` as a transparent stroke. What cannot be drawn as strokes (fills, text, images,
clipping and masks, dashes, markers, unknown elements) is ignored with one
:class:`~clipasso.errors.SVGWarning` per document that counts each kind, also in
:attr:`SVGDocument.ignored`.

Malformed documents raise :class:`~clipasso.errors.SVGError` naming the element and the problem;
documents above the SVG limits (size, elements, nesting depth, segments; :mod:`clipasso.limits`)
raise :class:`~clipasso.errors.LimitError`. Nothing else escapes.

Example:
    >>> import torch
    >>> from clipasso.svg import strokes_to_svg, parse_svg
    >>> pts = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 4.0], [7.0, 2.0]]])
    >>> text = strokes_to_svg(pts, torch.tensor([1.5]), torch.tensor([[0.0, 0.0, 0.0, 1.0]]), (16, 16))
    >>> doc = parse_svg(text)
    >>> doc.canvas_size, doc.widths
    ((16, 16), [1.5])
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor

from .errors import LimitError, SVGError, SVGWarning, _with_prefix
from .limits import Limits, check_limit, get_limits

__all__ = [
    "SVGDocument",
    "parse_path_data",
    "parse_svg",
    "parse_transform",
    "read_svg",
    "strokes_to_svg",
    "write_svg",
]

_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
Point = tuple[float, float]
#: An affine map ``(a, b, c, d, e, f)``: ``x' = a x + c y + e``, ``y' = b x + d y + f`` (SVG's order).
Matrix = tuple[float, float, float, float, float, float]
_IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


@dataclass
class SVGDocument:
    """Strokes read from an SVG (plain Python lists; stroke ``i`` has ``3k_i + 1`` points).

    Attributes:
        canvas_size: ``(H, W)`` in pixels: the ``viewBox`` size (or ``width``/``height``), rounded;
            a fractional size is mapped onto the rounded canvas.
        points: Per stroke, a list of ``(x, y)`` control points in canvas pixels.
        widths: Per stroke, the half-width ``r`` (``stroke-width / 2``, transformed).
        colors: Per stroke, straight RGBA (opacity = ``stroke-opacity`` times every ``opacity``
            from the element up to the root).
        ignored: What the document has that was not read, and how often (``{"fill": 3,
            "<text>": 1, ...}``); empty when everything was read.
    """

    canvas_size: tuple[int, int]
    points: list[list[Point]] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)
    colors: list[tuple[float, float, float, float]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)

    def segment_counts(self) -> list[int]:
        """Number of cubic segments of each stroke."""
        return [(len(p) - 1) // 3 for p in self.points]

    def to_tensors(
        self,
        *,
        mixed_segments: str = "split",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Stack into ``points [N, P, 2]``, ``widths [N]``, ``colors [N, 4]``.

        Args:
            mixed_segments: What to do when strokes have different segment counts: ``"split"``
                every stroke into single-segment strokes (the same curves), or ``"error"``.
            dtype: Floating dtype of the tensors.
            device: Device of the tensors.

        Raises:
            SVGError: No strokes, or mixed segment counts with ``mixed_segments="error"``.
        """
        if mixed_segments not in ("split", "error"):
            raise SVGError(f"mixed_segments must be 'split' or 'error', got {mixed_segments!r}")
        if not self.points:
            raise SVGError("the SVG contains no strokes")
        pts, wid, col = self.points, self.widths, self.colors
        counts = set(self.segment_counts())
        if len(counts) > 1:
            if mixed_segments == "error":
                raise SVGError(
                    f"strokes have different numbers of cubic segments {sorted(counts)}; "
                    "pass mixed_segments='split' to split them into single-segment strokes"
                )
            pts2, wid2, col2 = [], [], []
            for p, w, c in zip(pts, wid, col):
                for s in range(0, len(p) - 1, 3):
                    pts2.append(p[s : s + 4])
                    wid2.append(w)
                    col2.append(c)
            pts, wid, col = pts2, wid2, col2
        return (
            torch.tensor(pts, dtype=dtype, device=device),
            torch.tensor(wid, dtype=dtype, device=device),
            torch.tensor(col, dtype=dtype, device=device),
        )


# ---------------------------------------------------------------------------------------- writing


def _formatter(dtype: torch.dtype) -> type[np.floating]:
    return np.float64 if dtype == torch.float64 else np.float32


def _fmt(v: float, kind: type[np.floating] = np.float32) -> str:
    """The shortest decimal that reads back to ``v`` rounded to ``kind`` (no exponent, no ``-0``)."""
    s = np.format_float_positional(kind(v), unique=True, trim="-")
    return "0" if s == "-0" else s


def _percent(c: float, kind: type[np.floating]) -> str:
    """``100·c`` as a decimal ``s`` for which the reader's ``float(s) / 100`` gives back ``c`` in ``kind``.

    Always possible for float32 (a double step of ``100·c`` is far below a float32 step of ``c``);
    for float64 some values lie between two quotients and come back one unit in the last place off.
    """
    value = 100 * c
    for _ in range(4):
        text = _fmt(value, np.float64)
        back = float(text) / 100
        if kind(back) == kind(c):
            return text
        value = math.nextafter(value, math.inf if back < c else -math.inf)
    return _fmt(100 * c, np.float64)


def _colour_attr(rgb: Sequence[float], kind: type[np.floating] = np.float32) -> str:
    vals = [min(max(float(c), 0.0), 1.0) for c in rgb]
    ints = [round(c * 255) for c in vals]
    if all(kind(i / 255) == kind(c) for i, c in zip(ints, vals)):
        return "#{:02x}{:02x}{:02x}".format(*ints)
    return "rgb({})".format(", ".join(f"{_percent(c, kind)}%" for c in vals))


def strokes_to_svg(points: Tensor, widths: Tensor, colors: Tensor, canvas_size: tuple[int, int]) -> str:
    """Serialise one sketch to SVG text.

    Args:
        points: ``[N, 3k+1, 2]`` control points in pixels.
        widths: ``[N]`` half-widths (written as ``stroke-width = 2r``).
        colors: ``[N, 4]`` straight RGBA (alpha written as ``stroke-opacity``, clamped to [0, 1]).
        canvas_size: ``(H, W)``.

    Returns:
        The SVG document as a string. Numbers are the shortest decimals that read back to the same
        values in ``points``' dtype (float64 stays float64, anything else float32; float64 colours
        come back within one unit in the last place).

    Raises:
        SVGError: Wrong shapes, NaN or infinite values, or a canvas that is not positive.
    """
    if points.dim() != 3 or points.shape[-1] != 2 or (points.shape[1] - 1) % 3 or points.shape[1] < 4:
        raise SVGError(f"points must be [N, 3k+1, 2], got {list(points.shape)}")
    n = points.shape[0]
    if widths.numel() != n or colors.numel() != 4 * n:
        raise SVGError(
            f"widths must be [N] and colors [N, 4] for N = {n}, "
            f"got {list(widths.shape)} and {list(colors.shape)}"
        )
    for name, t in (("points", points), ("widths", widths), ("colors", colors)):
        if not bool(torch.isfinite(t.detach()).all()):
            raise SVGError(f"{name} contain NaN or infinite values; they cannot be written to SVG")
    try:
        h, w = (int(s) for s in canvas_size)
    except (TypeError, ValueError):
        raise SVGError(f"canvas_size must be (H, W), got {canvas_size!r}") from None
    if h < 1 or w < 1:
        raise SVGError(f"canvas_size must be positive, got {canvas_size!r}")
    kind = _formatter(points.dtype)
    pts = points.detach().cpu().double().tolist()
    wid = widths.detach().cpu().double().reshape(-1).tolist()
    col = colors.detach().cpu().double().reshape(-1, 4).tolist()
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="{_SVG_NS}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
    ]
    for p, r, c in zip(pts, wid, col):
        d = [f"M {_fmt(p[0][0], kind)} {_fmt(p[0][1], kind)}"]
        for s in range(1, len(p), 3):
            d.append("C " + " ".join(f"{_fmt(x, kind)} {_fmt(y, kind)}" for x, y in p[s : s + 3]))
        lines.append(
            f'  <path d="{" ".join(d)}" fill="none" stroke="{_colour_attr(c[:3], kind)}" '
            f'stroke-opacity="{_fmt(min(max(c[3], 0.0), 1.0), kind)}" stroke-width="{_fmt(2 * r, kind)}" '
            'stroke-linecap="round" stroke-linejoin="round"/>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def write_svg(
    path: str | os.PathLike[str], points: Tensor, widths: Tensor, colors: Tensor, canvas_size: tuple[int, int]
) -> Path:
    """Write :func:`strokes_to_svg` output to ``path`` atomically (parent folders are created)."""
    from ._io import atomic_write_text

    return atomic_write_text(path, strokes_to_svg(points, widths, colors, canvas_size))


# ---------------------------------------------------------------------------------------- geometry

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SEPARATORS = " \t\r\n\f,"
_COMMANDS = set("MmLlHhVvCcSsQqTtAaZz")


def _mul(m: Matrix, n: Matrix) -> Matrix:
    """``m · n`` (apply ``n`` first)."""
    a1, b1, c1, d1, e1, f1 = m
    a2, b2, c2, d2, e2, f2 = n
    return (
        a1 * a2 + c1 * b2,
        b1 * a2 + d1 * b2,
        a1 * c2 + c1 * d2,
        b1 * c2 + d1 * d2,
        a1 * e2 + c1 * f2 + e1,
        b1 * e2 + d1 * f2 + f1,
    )


def _apply(m: Matrix, p: Point) -> Point:
    return (m[0] * p[0] + m[2] * p[1] + m[4], m[1] * p[0] + m[3] * p[1] + m[5])


def _translate(tx: float, ty: float) -> Matrix:
    return (1.0, 0.0, 0.0, 1.0, tx, ty)


def _scale(sx: float, sy: float) -> Matrix:
    return (sx, 0.0, 0.0, sy, 0.0, 0.0)


_TRANSFORM = re.compile(r"\s*(matrix|translate|scale|rotate|skewX|skewY)\s*\(([^()]*)\)\s*,?")
_ARITY = {
    "matrix": (6,),
    "translate": (1, 2),
    "scale": (1, 2),
    "rotate": (1, 3),
    "skewX": (1,),
    "skewY": (1,),
}


def parse_transform(text: str, *, element: str = "element") -> Matrix:
    """Parse an SVG ``transform`` attribute into one affine matrix.

    Args:
        text: A transform list, e.g. ``"translate(10 20) rotate(45) scale(2, 1)"``; the functions
            apply right to left, as in SVG.
        element: Name used in error messages.

    Returns:
        ``(a, b, c, d, e, f)`` with ``x' = a x + c y + e`` and ``y' = b x + d y + f``.

    Raises:
        SVGError: Unknown functions, wrong argument counts, non-finite numbers.

    Example:
        >>> parse_transform("translate(10, 20) scale(2)")
        (2.0, 0.0, 0.0, 2.0, 10.0, 20.0)
    """
    m = _IDENTITY
    pos, text = 0, text.strip()
    while pos < len(text):
        match = _TRANSFORM.match(text, pos)
        if match is None:
            raise SVGError(f"malformed transform on <{element}>: {text[:60]!r}")
        name, args = match.group(1), match.group(2)
        nums = [float(v) for v in _NUMBER.findall(args)]
        rest = _NUMBER.sub("", args).replace(",", " ").strip()
        if rest or len(nums) not in _ARITY[name] or not all(math.isfinite(v) for v in nums):
            raise SVGError(
                f"malformed {name}(...) in the transform of <{element}>: {match.group(0).strip()!r}"
            )
        if name == "matrix":
            t: Matrix = (nums[0], nums[1], nums[2], nums[3], nums[4], nums[5])
        elif name == "translate":
            t = _translate(nums[0], nums[1] if len(nums) == 2 else 0.0)
        elif name == "scale":
            t = _scale(nums[0], nums[1] if len(nums) == 2 else nums[0])
        elif name == "rotate":
            a = math.radians(nums[0])
            t = (math.cos(a), math.sin(a), -math.sin(a), math.cos(a), 0.0, 0.0)
            if len(nums) == 3:
                t = _mul(_mul(_translate(nums[1], nums[2]), t), _translate(-nums[1], -nums[2]))
        elif name == "skewX":
            t = (1.0, 0.0, math.tan(math.radians(nums[0])), 1.0, 0.0, 0.0)
        else:
            t = (1.0, math.tan(math.radians(nums[0])), 0.0, 1.0, 0.0, 0.0)
        m = _mul(m, t)
        pos = match.end()
    return m


def _line(p0: Point, p1: Point) -> list[Point]:
    return [
        (p0[0] + (p1[0] - p0[0]) / 3, p0[1] + (p1[1] - p0[1]) / 3),
        (p0[0] + 2 * (p1[0] - p0[0]) / 3, p0[1] + 2 * (p1[1] - p0[1]) / 3),
        p1,
    ]


def _quad(p0: Point, c: Point, p1: Point) -> list[Point]:
    return [
        (p0[0] + 2 * (c[0] - p0[0]) / 3, p0[1] + 2 * (c[1] - p0[1]) / 3),
        (p1[0] + 2 * (c[0] - p1[0]) / 3, p1[1] + 2 * (c[1] - p1[1]) / 3),
        p1,
    ]


def _arc(p0: Point, rx: float, ry: float, phi_deg: float, large: bool, sweep: bool, p1: Point) -> list[Point]:
    """An elliptical arc (SVG endpoint form) as cubic control points after ``p0``.

    The centre form follows the SVG specification's implementation notes (radii scaled up when
    they cannot reach ``p1``); each piece of at most 90° is the standard cubic with handle
    ``4/3 tan(δ/4)``.
    """
    if p0 == p1:
        return []  # the spec omits the arc
    rx, ry = abs(rx), abs(ry)
    if rx == 0 or ry == 0:
        return _line(p0, p1)
    phi = math.radians(phi_deg % 360.0)
    cos_p, sin_p = math.cos(phi), math.sin(phi)
    dx, dy = (p0[0] - p1[0]) / 2, (p0[1] - p1[1]) / 2
    x1 = cos_p * dx + sin_p * dy
    y1 = -sin_p * dx + cos_p * dy
    lam = (x1 / rx) ** 2 + (y1 / ry) ** 2
    if lam > 1:
        rx, ry = rx * math.sqrt(lam), ry * math.sqrt(lam)
    num = rx * rx * ry * ry - rx * rx * y1 * y1 - ry * ry * x1 * x1
    den = rx * rx * y1 * y1 + ry * ry * x1 * x1
    coef = math.sqrt(max(num / den, 0.0)) if den > 0 else 0.0
    if large == sweep:
        coef = -coef
    cxp, cyp = coef * rx * y1 / ry, -coef * ry * x1 / rx
    cx = cos_p * cxp - sin_p * cyp + (p0[0] + p1[0]) / 2
    cy = sin_p * cxp + cos_p * cyp + (p0[1] + p1[1]) / 2
    theta1 = math.atan2((y1 - cyp) / ry, (x1 - cxp) / rx)
    theta2 = math.atan2((-y1 - cyp) / ry, (-x1 - cxp) / rx)
    delta = theta2 - theta1
    if sweep and delta < 0:
        delta += 2 * math.pi
    elif not sweep and delta > 0:
        delta -= 2 * math.pi
    pieces = max(1, math.ceil(abs(delta) / (math.pi / 2) - 1e-9))
    step = delta / pieces
    handle = 4.0 / 3.0 * math.tan(step / 4)

    def on_ellipse(x: float, y: float) -> Point:
        return (cx + rx * cos_p * x - ry * sin_p * y, cy + rx * sin_p * x + ry * cos_p * y)

    out: list[Point] = []
    a = theta1
    for k in range(pieces):
        b = a + step
        ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
        out.append(on_ellipse(ca - handle * sa, sa + handle * ca))
        out.append(on_ellipse(cb + handle * sb, sb - handle * cb))
        out.append(p1 if k == pieces - 1 else on_ellipse(cb, sb))
        a = b
    return out


def _width_scale(m: Matrix, points: list[Point]) -> float:
    """How much the affine map ``m`` widens a stroke along the cubic ``points`` (one factor per stroke).

    A pen of width ``w`` moving in direction ``t`` draws a band of width ``w · |det A| / |A t|``
    after the linear part ``A``: exact for straight strokes and any similarity (where it is the
    scale); for a curve under a non-uniform map it is the mean over the curve, weighted by length.
    """
    a, b, c, d = m[0], m[1], m[2], m[3]
    det = abs(a * d - b * c)
    if det == 0:
        return 0.0
    if abs(a - d) < 1e-12 * (abs(a) + abs(d)) and abs(b + c) < 1e-12 * (abs(b) + abs(c) + 1e-300):
        return math.sqrt(det)  # a similarity: the same in every direction
    total = weighted = 0.0
    for s in range(0, len(points) - 1, 3):
        p0, p1, p2, p3 = points[s : s + 4]
        for t in (0.1, 0.3, 0.5, 0.7, 0.9):  # the tangent at five points of each segment
            u = 1 - t
            tx = 3 * (u * u * (p1[0] - p0[0]) + 2 * u * t * (p2[0] - p1[0]) + t * t * (p3[0] - p2[0]))
            ty = 3 * (u * u * (p1[1] - p0[1]) + 2 * u * t * (p2[1] - p1[1]) + t * t * (p3[1] - p2[1]))
            speed = math.hypot(tx, ty)
            mapped = math.hypot(a * tx + c * ty, b * tx + d * ty)
            if speed > 0 and mapped > 0:
                total += speed
                weighted += speed * (det * speed / mapped)  # length weight × det / |A t̂|
    return weighted / total if total > 0 else math.sqrt(det)


class _PathScanner:
    """Reads numbers and arc flags from path data, with positions for error messages."""

    def __init__(self, d: str, element: str) -> None:
        self.d, self.pos, self.element = d, 0, element

    def skip(self) -> None:
        while self.pos < len(self.d) and self.d[self.pos] in _SEPARATORS:
            self.pos += 1

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.d)

    def peek(self) -> str:
        return self.d[self.pos]

    def error(self, problem: str) -> SVGError:
        near = self.d[max(0, self.pos - 10) : self.pos + 20]
        return SVGError(
            f"malformed path data in <{self.element}> at character {self.pos}: {problem} (near {near!r})"
        )

    def number(self, cmd: str) -> float:
        self.skip()
        match = _NUMBER.match(self.d, self.pos)
        if match is None:
            raise self.error(f"command {cmd!r} is missing numbers")
        self.pos = match.end()
        value = float(match.group(0))
        if not math.isfinite(value):
            raise self.error(f"the number {match.group(0)!r} is out of range")
        return value

    def flag(self, cmd: str) -> bool:
        self.skip()
        if self.pos >= len(self.d) or self.d[self.pos] not in "01":
            raise self.error(f"command {cmd!r} needs an arc flag 0 or 1")
        self.pos += 1
        return self.d[self.pos - 1] == "1"


def parse_path_data(d: str, *, element: str = "path") -> list[list[Point]]:
    """Parse SVG path data into subpaths of cubic control points.

    Args:
        d: The ``d`` attribute.
        element: Name used in error messages.

    Returns:
        One list of ``3k + 1`` points per subpath with at least one segment.

    Raises:
        SVGError: Malformed data (the message gives the position).
        LimitError: More cubic segments than the limit ``max_svg_segments``.

    Example:
        >>> parse_path_data("M 0 0 L 3 0")
        [[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]]
        >>> len(parse_path_data("M 0 0 A 5 5 0 1 1 10 0")[0])  # a half circle: two 90° cubics
        7
    """
    max_segments = get_limits().max_svg_segments
    sc = _PathScanner(d, element)
    subpaths: list[list[Point]] = []
    cur: list[Point] = []
    pos: Point = (0.0, 0.0)
    start: Point = (0.0, 0.0)
    last_ctrl: Point | None = None
    last_cmd = ""
    cmd = ""
    segments = 0

    def flush() -> None:
        nonlocal cur
        if len(cur) >= 4:
            subpaths.append(cur)
        cur = []

    while not sc.at_end():
        ch = sc.peek()
        if ch in _COMMANDS:
            cmd = ch
            sc.pos += 1
        elif ch.isalpha():
            raise sc.error(f"unknown command {ch!r}")
        elif not cmd:
            raise sc.error("path data must start with a command (M or m)")
        elif cmd in "Zz":
            raise sc.error("numbers after 'Z'")
        elif _NUMBER.match(d, sc.pos) is None:
            raise sc.error(f"unexpected character {ch!r}")
        rel = cmd.islower()
        up = cmd.upper()
        ox, oy = pos if rel else (0.0, 0.0)
        if up == "Z":
            if cur and pos != start:
                cur.extend(_line(pos, start))
            pos = start
            flush()
            last_ctrl, last_cmd = None, "Z"
            continue
        if up == "M":
            flush()
            pos = (ox + sc.number(cmd), oy + sc.number(cmd))
            start = pos
            cur = [pos]
            cmd = "l" if rel else "L"  # further pairs are implicit line-tos
            last_ctrl, last_cmd = None, "M"
            continue
        if not cur:
            cur = [pos]
            start = pos
        before = len(cur)
        if up == "L":
            p1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            cur.extend(_line(pos, p1))
            pos, last_ctrl = p1, None
        elif up == "H":
            p1 = (ox + sc.number(cmd), pos[1])
            cur.extend(_line(pos, p1))
            pos, last_ctrl = p1, None
        elif up == "V":
            p1 = (pos[0], oy + sc.number(cmd))
            cur.extend(_line(pos, p1))
            pos, last_ctrl = p1, None
        elif up == "C":
            c1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            c2 = (ox + sc.number(cmd), oy + sc.number(cmd))
            p1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            cur.extend([c1, c2, p1])
            pos, last_ctrl = p1, c2
        elif up == "S":
            reflect = last_cmd in ("C", "S") and last_ctrl is not None
            c1 = (2 * pos[0] - last_ctrl[0], 2 * pos[1] - last_ctrl[1]) if reflect and last_ctrl else pos
            c2 = (ox + sc.number(cmd), oy + sc.number(cmd))
            p1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            cur.extend([c1, c2, p1])
            pos, last_ctrl = p1, c2
        elif up == "Q":
            c = (ox + sc.number(cmd), oy + sc.number(cmd))
            p1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            cur.extend(_quad(pos, c, p1))
            pos, last_ctrl = p1, c
        elif up == "T":
            reflect = last_cmd in ("Q", "T") and last_ctrl is not None
            c = (2 * pos[0] - last_ctrl[0], 2 * pos[1] - last_ctrl[1]) if reflect and last_ctrl else pos
            p1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            cur.extend(_quad(pos, c, p1))
            pos, last_ctrl = p1, c
        else:  # "A": rx ry rotation large-arc sweep x y
            rx, ry, phi = sc.number(cmd), sc.number(cmd), sc.number(cmd)
            large, sweep = sc.flag(cmd), sc.flag(cmd)
            p1 = (ox + sc.number(cmd), oy + sc.number(cmd))
            cur.extend(_arc(pos, rx, ry, phi, large, sweep, p1))
            pos, last_ctrl = p1, None
        last_cmd = up
        segments += (len(cur) - before) // 3
        if segments > max_segments:
            check_limit(segments, "max_svg_segments", f"the number of cubic segments in <{element}>")
    flush()
    return subpaths


# ---------------------------------------------------------------------------------------- values

_UNITS = {
    "": 1.0,
    "px": 1.0,
    "pt": 4 / 3,
    "pc": 16.0,
    "mm": 96 / 25.4,
    "cm": 96 / 2.54,
    "in": 96.0,
    "q": 96 / 101.6,
}
_LENGTH = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z]*|%)\s*")


def _length(value: str, what: str, *, percent_of: float | None = None) -> float:
    """A length in user units (px): plain numbers, absolute units, and % of ``percent_of``."""
    m = _LENGTH.fullmatch(value)
    if not m:
        raise SVGError(f"malformed {what} {value!r}")
    number, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(number):
        raise SVGError(f"{what} {value!r} is out of range")
    if unit == "%":
        if percent_of is None:
            raise SVGError(f"{what} {value!r}: a percentage is not supported here")
        return number / 100 * percent_of
    if unit not in _UNITS:
        raise SVGError(f"{what} {value!r}: unsupported unit {unit!r} (px, pt, pc, mm, cm, in, Q or %)")
    return number * _UNITS[unit]


def _numbers(value: str, what: str) -> list[float]:
    text = value.strip()
    nums = [float(v) for v in _NUMBER.findall(text)]
    if _NUMBER.sub("", text).strip(_SEPARATORS) or not all(math.isfinite(v) for v in nums):
        raise SVGError(f"malformed {what} {value[:60]!r}")
    return nums


# CSS Color Module Level 4 named colours (the 147 keywords of SVG 1.1 / CSS 3, and rebeccapurple).
_NAMED_TABLE = """
aliceblue f0f8ff antiquewhite faebd7 aqua 00ffff aquamarine 7fffd4 azure f0ffff beige f5f5dc
bisque ffe4c4 black 000000 blanchedalmond ffebcd blue 0000ff blueviolet 8a2be2 brown a52a2a
burlywood deb887 cadetblue 5f9ea0 chartreuse 7fff00 chocolate d2691e coral ff7f50
cornflowerblue 6495ed cornsilk fff8dc crimson dc143c cyan 00ffff darkblue 00008b darkcyan 008b8b
darkgoldenrod b8860b darkgray a9a9a9 darkgreen 006400 darkgrey a9a9a9 darkkhaki bdb76b
darkmagenta 8b008b darkolivegreen 556b2f darkorange ff8c00 darkorchid 9932cc darkred 8b0000
darksalmon e9967a darkseagreen 8fbc8f darkslateblue 483d8b darkslategray 2f4f4f
darkslategrey 2f4f4f darkturquoise 00ced1 darkviolet 9400d3 deeppink ff1493 deepskyblue 00bfff
dimgray 696969 dimgrey 696969 dodgerblue 1e90ff firebrick b22222 floralwhite fffaf0
forestgreen 228b22 fuchsia ff00ff gainsboro dcdcdc ghostwhite f8f8ff gold ffd700
goldenrod daa520 gray 808080 grey 808080 green 008000 greenyellow adff2f honeydew f0fff0
hotpink ff69b4 indianred cd5c5c indigo 4b0082 ivory fffff0 khaki f0e68c lavender e6e6fa
lavenderblush fff0f5 lawngreen 7cfc00 lemonchiffon fffacd lightblue add8e6 lightcoral f08080
lightcyan e0ffff lightgoldenrodyellow fafad2 lightgray d3d3d3 lightgreen 90ee90 lightgrey d3d3d3
lightpink ffb6c1 lightsalmon ffa07a lightseagreen 20b2aa lightskyblue 87cefa
lightslategray 778899 lightslategrey 778899 lightsteelblue b0c4de lightyellow ffffe0 lime 00ff00
limegreen 32cd32 linen faf0e6 magenta ff00ff maroon 800000 mediumaquamarine 66cdaa
mediumblue 0000cd mediumorchid ba55d3 mediumpurple 9370db mediumseagreen 3cb371
mediumslateblue 7b68ee mediumspringgreen 00fa9a mediumturquoise 48d1cc mediumvioletred c71585
midnightblue 191970 mintcream f5fffa mistyrose ffe4e1 moccasin ffe4b5 navajowhite ffdead
navy 000080 oldlace fdf5e6 olive 808000 olivedrab 6b8e23 orange ffa500 orangered ff4500
orchid da70d6 palegoldenrod eee8aa palegreen 98fb98 paleturquoise afeeee palevioletred db7093
papayawhip ffefd5 peachpuff ffdab9 peru cd853f pink ffc0cb plum dda0dd powderblue b0e0e6
purple 800080 rebeccapurple 663399 red ff0000 rosybrown bc8f8f royalblue 4169e1
saddlebrown 8b4513 salmon fa8072 sandybrown f4a460 seagreen 2e8b57 seashell fff5ee sienna a0522d
silver c0c0c0 skyblue 87ceeb slateblue 6a5acd slategray 708090 slategrey 708090 snow fffafa
springgreen 00ff7f steelblue 4682b4 tan d2b48c teal 008080 thistle d8bfd8 tomato ff6347
turquoise 40e0d0 violet ee82ee wheat f5deb3 white ffffff whitesmoke f5f5f5 yellow ffff00
yellowgreen 9acd32
"""
_NAMED: dict[str, tuple[float, float, float]] = {
    name: (int(hx[0:2], 16) / 255, int(hx[2:4], 16) / 255, int(hx[4:6], 16) / 255)
    for name, hx in zip(_NAMED_TABLE.split()[0::2], _NAMED_TABLE.split()[1::2])
}
RGB = tuple[float, float, float]


def _channel(text: str, scale: float) -> float:
    text = text.strip()
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text) / scale
    if not math.isfinite(value):
        raise ValueError(text)
    return min(max(value, 0.0), 1.0)


def _hsl(h: float, s: float, lum: float) -> RGB:
    def f(n: float) -> float:
        k = (n + h / 30) % 12
        return lum - s * min(lum, 1 - lum) * max(-1.0, min(k - 3, 9 - k, 1.0))

    return (f(0), f(8), f(4))


def _parse_colour(value: str, element: str, current: str | None = None) -> tuple[RGB, float]:
    """A CSS colour → ``(rgb, alpha)``; ``current`` is the ``color`` property for ``currentColor``."""
    v = value.strip().lower()
    v = re.sub(r"\s*icc-color\(.*\)$", "", v)  # an ICC colour after the sRGB fallback
    if v in ("none", "transparent"):
        return (0.0, 0.0, 0.0), 0.0
    if v == "currentcolor":
        return _parse_colour(current or "black", element)
    if v in _NAMED:
        return _NAMED[v], 1.0
    if v.startswith("#") and len(v) in (4, 5, 7, 9) and all(ch in "0123456789abcdef" for ch in v[1:]):
        hexs = v[1:] if len(v) > 5 else "".join(ch * 2 for ch in v[1:])
        rgb = (int(hexs[0:2], 16) / 255, int(hexs[2:4], 16) / 255, int(hexs[4:6], 16) / 255)
        return rgb, int(hexs[6:8], 16) / 255 if len(hexs) == 8 else 1.0
    m = re.fullmatch(r"(rgba?|hsla?)\(([^)]*)\)", v)
    if m:
        body = m.group(2).strip()
        if "," in body:
            parts = [x.strip() for x in body.split(",")]
        else:  # CSS 4: "r g b / a"
            main, _, alpha_part = body.partition("/")
            parts = main.split() + ([alpha_part.strip()] if alpha_part else [])
        if len(parts) in (3, 4):
            try:
                alpha = _channel(parts[3], 1.0) if len(parts) == 4 else 1.0
                if m.group(1).startswith("rgb"):
                    return (_channel(parts[0], 255), _channel(parts[1], 255), _channel(parts[2], 255)), alpha
                hue = float(parts[0].removesuffix("deg"))
                if math.isfinite(hue):
                    return _hsl(hue % 360, _channel(parts[1], 1.0), _channel(parts[2], 1.0)), alpha
            except ValueError:
                pass
    raise SVGError(f"unsupported stroke colour {value[:60]!r} in <{element}>")


def _opacity(value: str, what: str, element: str) -> float:
    try:
        return _channel(value, 1.0)
    except ValueError:
        raise SVGError(f"malformed {what} {value[:40]!r} in <{element}>") from None


# ---------------------------------------------------------------------------------------- CSS

#: The properties the reader uses; ``_INHERITED`` pass from parent to child.
_PROPERTIES = {
    "stroke",
    "stroke-width",
    "stroke-opacity",
    "opacity",
    "fill",
    "color",
    "display",
    "visibility",
    "vector-effect",
    "stroke-dasharray",
    "marker",
    "marker-start",
    "marker-mid",
    "marker-end",
    "clip-path",
    "mask",
    "filter",
}
_INHERITED = {"stroke", "stroke-width", "stroke-opacity", "fill", "color", "visibility", "stroke-dasharray"}
_INHERITED |= {"marker", "marker-start", "marker-mid", "marker-end"}
_SIMPLE_SELECTOR = re.compile(r"(\*|[A-Za-z_][\w-]*)?((?:[.#][\w-]+)*)")


@dataclass
class _Rule:
    tag: str | None
    classes: tuple[str, ...]
    ident: str | None
    specificity: tuple[int, int, int, int]
    declarations: dict[str, str]


def _declarations(text: str, keep: set[str] | None = None) -> dict[str, str]:
    """``prop: value; ...`` → a dict of the properties in ``keep`` (default: those the reader uses)."""
    keep = _PROPERTIES if keep is None else keep
    out: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, val = item.partition(":")
        key = key.strip().lower()
        if sep and key in keep:
            out[key] = re.sub(r"\s*!important\s*$", "", val.strip(), flags=re.IGNORECASE)
    return out


def _parse_css(text: str, order_start: int, unsupported: list[str]) -> list[_Rule]:
    """Rules with simple selectors from a style sheet; others are listed in ``unsupported``."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL).replace("<![CDATA[", "").replace("]]>", "")
    rules: list[_Rule] = []
    pos, order = 0, order_start
    while pos < len(text):
        brace = text.find("{", pos)
        if brace < 0:
            break
        prelude = text[pos:brace].strip()
        depth, end = 1, brace + 1
        while end < len(text) and depth:  # the block's end (nested blocks of at-rules included)
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        body = text[brace + 1 : end - 1]
        pos = end
        while prelude.startswith("@") and ";" in prelude:  # "@import ...;" before the rule
            prelude = prelude.split(";", 1)[1].strip()
        if prelude.startswith("@"):
            unsupported.append(prelude.split()[0])
            continue
        decls = _declarations(body)
        for selector in prelude.split(","):
            sel = selector.strip()
            m = _SIMPLE_SELECTOR.fullmatch(sel)
            if not sel or m is None:
                unsupported.append(sel)
                continue
            tag = m.group(1) if m.group(1) not in (None, "*") else None
            parts = re.findall(r"[.#][\w-]+", m.group(2))
            classes = tuple(p[1:] for p in parts if p[0] == ".")
            idents = [p[1:] for p in parts if p[0] == "#"]
            if len(idents) > 1:
                continue  # "#a#b" matches nothing
            spec = (len(idents), len(classes), int(tag is not None), order)
            rules.append(_Rule(tag, classes, idents[0] if idents else None, spec, decls))
            order += 1
    return rules


class _StyleSheet:
    """The document's rules, indexed by the most selective part of their selector."""

    def __init__(self, rules: list[_Rule]) -> None:
        self.index: dict[str, list[_Rule]] = {}
        for rule in rules:
            if rule.ident is not None:
                key = "#" + rule.ident
            elif rule.classes:
                key = "." + rule.classes[0]
            else:
                key = rule.tag or "*"
            self.index.setdefault(key, []).append(rule)

    def match(self, el: ET.Element, name: str) -> dict[str, str]:
        if not self.index:
            return {}
        classes = el.attrib.get("class", "").split()
        ident = el.attrib.get("id")
        keys = ["*", name, *("." + c for c in classes)] + (["#" + ident] if ident else [])
        found: dict[int, _Rule] = {}
        for key in keys:
            for rule in self.index.get(key, ()):
                if (
                    (rule.tag is None or rule.tag == name)
                    and (rule.ident is None or rule.ident == ident)
                    and all(c in classes for c in rule.classes)
                ):
                    found[id(rule)] = rule
        out: dict[str, str] = {}
        for rule in sorted(found.values(), key=lambda r: r.specificity):
            out.update(rule.declarations)
        return out


# ---------------------------------------------------------------------------------------- reading

_CONTAINERS = {"g", "a"}
_SHAPES = {"path", "line", "polyline", "polygon", "rect", "circle", "ellipse"}
#: Elements that draw nothing by themselves (or are only used by reference).
_SILENT = {
    "defs",
    "symbol",
    "clipPath",
    "mask",
    "pattern",
    "marker",
    "linearGradient",
    "radialGradient",
    "filter",
    "style",
    "script",
    "title",
    "desc",
    "metadata",
    "font",
    "font-face",
    "cursor",
    "view",
    "animate",
    "animateMotion",
    "animateTransform",
    "animateColor",
    "set",
    "mpath",
    "stop",
    "solidColor",
    "solidcolor",
}
_CHUNK = 1 << 16


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


def _decode(data: bytes) -> str:
    """Bytes → text: a BOM, else the XML declaration's encoding, else UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    else:
        m = re.match(rb"\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']", data[:256])
        encoding = m.group(1).decode("ascii") if m else "utf-8"
    try:
        return data.decode(encoding)
    except LookupError:
        raise SVGError(f"unknown text encoding {encoding!r} in the XML declaration") from None
    except UnicodeDecodeError as exc:
        raise SVGError(
            f"the document is not text in {encoding} (invalid byte at offset {exc.start}); is it an SVG file?"
        ) from None


_ENTITY = re.compile(r"<!ENTITY\s+(%\s*)?([^\s\"']+)\s+(\"[^\"]*\"|'[^']*'|SYSTEM|PUBLIC)", re.DOTALL)


def _check_entities(text: str, limits: Limits) -> None:
    """Refuse entity tricks: recursive or markup entities, and expansions above the size limit."""
    head = text[: text.find("<svg")] if "<svg" in text else text
    if "<!ENTITY" not in head:
        return
    declarations = list(_ENTITY.finditer(head))
    if len(declarations) != head.count("<!ENTITY"):
        raise SVGError("the DTD has an entity declaration that cannot be read")
    expanded = 0
    for m in declarations:
        name, value = m.group(2), m.group(3)
        if m.group(1) or value in ("SYSTEM", "PUBLIC"):
            raise SVGError(f"the DTD declares a parameter or external entity {name!r}; that is not supported")
        if "&" in value or "<" in value or "%" in value:
            raise SVGError(f"the entity {name!r} contains references or markup; that is not supported")
        expanded += text.count(f"&{name};") * (len(value) - 2)
    check_limit(
        len(text) + expanded, "max_svg_bytes", "the SVG's size with its entities expanded (characters)"
    )


def _parse_xml(text: str, limits: Limits) -> ET.Element:
    """Parse with the element count and nesting depth checked while parsing (so a bomb stops early)."""
    _check_entities(text, limits)
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    root: ET.Element | None = None
    depth = elements = 0

    def drain() -> None:
        nonlocal root, depth, elements
        for event, item in cast("Iterator[tuple[str, object]]", parser.read_events()):
            if event == "start":
                depth += 1
                elements += 1
                if root is None and isinstance(item, ET.Element):
                    root = item
                if depth > limits.max_svg_depth:
                    check_limit(depth, "max_svg_depth", "the SVG's element nesting depth")
                if elements > limits.max_svg_elements:
                    check_limit(elements, "max_svg_elements", "the number of SVG elements")
            else:
                depth -= 1

    try:
        for start in range(0, len(text), _CHUNK):
            parser.feed(text[start : start + _CHUNK])
            drain()
        parser.close()
        drain()
    except ET.ParseError as exc:
        raise SVGError(f"malformed SVG (XML error: {exc})") from None
    if root is None:
        raise SVGError("malformed SVG: no element")
    return root


@dataclass
class _State:
    """What an element inherits: the transform to canvas pixels, properties, opacity, viewport."""

    ctm: Matrix
    props: dict[str, str]
    opacity: float
    viewport: tuple[float, float]
    depth: int
    uses: tuple[int, ...] = ()


class _Reader:
    def __init__(self, root: ET.Element, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.ids: dict[str, ET.Element] = {}
        unsupported: list[str] = []
        rules: list[_Rule] = []
        for el in root.iter():
            ident = el.attrib.get("id")
            if ident is not None and ident not in self.ids:
                self.ids[ident] = el
            if _local(el.tag) == "style" and self._is_svg(el):
                rules += _parse_css("".join(el.itertext()), len(rules), unsupported)
        self.sheet = _StyleSheet(rules)
        self.ignored: dict[str, int] = {}
        if unsupported:
            self.ignore("CSS rules other than simple selectors", len(unsupported))
        self.segments = 0
        self.instances = 0

    @staticmethod
    def _is_svg(el: ET.Element) -> bool:
        return not el.tag.startswith("{") or el.tag.startswith("{" + _SVG_NS + "}")

    def ignore(self, what: str, count: int = 1) -> None:
        self.ignored[what] = self.ignored.get(what, 0) + count

    # -------------------------------------------------------------- the canvas
    def canvas(self) -> tuple[tuple[int, int], Matrix, tuple[float, float]]:
        attrib = self.root.attrib
        view = attrib.get("viewBox")
        if view is not None and view.strip():
            vals = _numbers(view, "viewBox")
            if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
                raise SVGError(
                    f"malformed viewBox {view[:60]!r} (expected min-x min-y width height, sizes > 0)"
                )
            ox, oy, w, h = vals
        else:
            width, height = attrib.get("width"), attrib.get("height")
            if width is None or height is None:
                raise SVGError(
                    "the SVG has neither a viewBox nor width and height: the canvas size is unknown"
                )
            ox = oy = 0.0
            w, h = _length(width, "width"), _length(height, "height")
            if not (w > 0 and h > 0):
                raise SVGError(f"the SVG's width and height must be positive, got {width!r} and {height!r}")
        cw, ch = max(1, round(w)), max(1, round(h))
        ctm = _mul(_scale(cw / w, ch / h), _translate(-ox, -oy))
        return (ch, cw), ctm, (w, h)

    # -------------------------------------------------------------- properties
    def style(self, el: ET.Element, name: str, parent: dict[str, str]) -> dict[str, str]:
        own = {k: v.strip() for k, v in el.attrib.items() if k in _PROPERTIES}
        own.update(self.sheet.match(el, name))
        own.update(_declarations(el.attrib.get("style", "")))
        props = {k: v for k, v in parent.items() if k in _INHERITED}
        for key, value in own.items():
            if value == "inherit":
                if key in parent:
                    props[key] = parent[key]
            else:
                props[key] = value
        return props

    def paint(self, value: str, element: str, props: dict[str, str]) -> tuple[RGB, float]:
        v = value.strip()
        if not v.lower().startswith("url("):
            return _parse_colour(v, element, props.get("color"))
        m = re.match(r"url\(\s*['\"]?#?([^)'\"]*)['\"]?\s*\)\s*(.*)$", v, re.DOTALL)
        fallback = m.group(2).strip() if m else ""
        if fallback and fallback.lower() != "none":
            self.ignore("gradient or pattern strokes (drawn in their fallback colour)")
            return _parse_colour(fallback, element, props.get("color"))
        self.ignore("gradient or pattern strokes (drawn in the mean colour of their stops)")
        stops = self.stops(self.ids.get(m.group(1)) if m else None)
        if not stops:
            return (0.0, 0.0, 0.0), 1.0
        rgb = tuple(sum(s[0][i] for s in stops) / len(stops) for i in range(3))
        return (rgb[0], rgb[1], rgb[2]), sum(s[1] for s in stops) / len(stops)

    def stops(self, el: ET.Element | None) -> list[tuple[RGB, float]]:
        """The ``(rgb, alpha)`` of a gradient's stops (following ``href`` to inherited stops)."""
        seen: set[int] = set()
        while el is not None and id(el) not in seen:
            seen.add(id(el))
            found = []
            for stop in el:
                if _local(stop.tag) == "stop":
                    props = dict(stop.attrib)
                    props.update(_declarations(stop.attrib.get("style", ""), {"stop-color", "stop-opacity"}))
                    rgb, alpha = _parse_colour(props.get("stop-color", "black"), "stop")
                    found.append(
                        (rgb, alpha * _opacity(props.get("stop-opacity", "1"), "stop-opacity", "stop"))
                    )
            if found:
                return found
            href = el.attrib.get("href", el.attrib.get(_XLINK_HREF, ""))
            el = self.ids.get(href[1:]) if href.startswith("#") else None
        return []

    # -------------------------------------------------------------- traversal
    def read(self) -> SVGDocument:
        size, ctm, viewport = self.canvas()
        doc = SVGDocument(canvas_size=size)
        root_state = _State(ctm=ctm, props={}, opacity=1.0, viewport=viewport, depth=0)
        stack: list[tuple[ET.Element, _State, bool]] = [(self.root, root_state, True)]
        while stack:
            el, parent, is_root = stack.pop()
            for child, state in self.visit(el, parent, doc, is_root):
                stack.append((child, state, False))
        doc.ignored = dict(self.ignored)
        return doc

    def visit(
        self, el: ET.Element, parent: _State, doc: SVGDocument, is_root: bool = False
    ) -> Iterator[tuple[ET.Element, _State]]:
        """Read one element; yields its children (reversed, for the stack) with their state."""
        if not isinstance(el.tag, str) or not self._is_svg(el):
            return
        name = _local(el.tag)
        if name in _SILENT:
            return
        self.instances += 1
        if self.instances > self.limits.max_svg_elements:
            check_limit(self.instances, "max_svg_elements", "the number of SVG elements (with <use> copies)")
        depth = parent.depth + 1
        if depth > self.limits.max_svg_depth:
            check_limit(depth, "max_svg_depth", "the SVG's nesting depth (with <use> references)")
        props = self.style(el, name, parent.props)
        if props.get("display", "").strip().lower() == "none":
            return
        ctm = parent.ctm
        if "transform" in el.attrib:
            ctm = _mul(ctm, parse_transform(el.attrib["transform"], element=name))
        opacity = parent.opacity
        if "opacity" in props:
            opacity *= _opacity(props["opacity"], "opacity", name)
        for key in ("clip-path", "mask", "filter"):
            if props.get(key, "none").strip().lower() != "none":
                self.ignore(key)
        state = _State(ctm, props, opacity, parent.viewport, depth, parent.uses)
        if name == "svg" and not is_root:
            state.ctm, state.viewport = self.viewport(el, state, el.attrib.get("x"), el.attrib.get("y"))
        if name in _CONTAINERS or name == "svg":
            yield from ((child, state) for child in reversed(list(el)))
        elif name == "switch":
            for child in el:  # the first child without conditions we cannot evaluate
                if isinstance(child.tag, str) and not any(
                    k in child.attrib for k in ("requiredFeatures", "requiredExtensions", "systemLanguage")
                ):
                    yield child, state
                    break
        elif name == "use":
            yield from self.use(el, state)
        elif name in _SHAPES:
            self.shape(el, name, state, doc)
        elif name in ("text", "image", "foreignObject", "video", "audio", "canvas", "iframe"):
            self.ignore(f"<{name}>")
        else:
            self.ignore(f"unknown <{name}>")

    def viewport(
        self, el: ET.Element, state: _State, x: str | None, y: str | None
    ) -> tuple[Matrix, tuple[float, float]]:
        """A nested ``<svg>`` (or a ``<symbol>`` through ``<use>``): its position, size and viewBox."""
        vw, vh = state.viewport
        tx = _length(x, "x", percent_of=vw) if x else 0.0
        ty = _length(y, "y", percent_of=vh) if y else 0.0
        width, height = el.attrib.get("width", "100%"), el.attrib.get("height", "100%")
        w, h = _length(width, "width", percent_of=vw), _length(height, "height", percent_of=vh)
        ctm = _mul(state.ctm, _translate(tx, ty))
        view = el.attrib.get("viewBox")
        if not view or not view.strip() or w <= 0 or h <= 0:
            return ctm, (max(w, 0.0), max(h, 0.0))
        vals = _numbers(view, "viewBox")
        if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
            raise SVGError(f"malformed viewBox {view[:60]!r} on <{_local(el.tag)}>")
        sx, sy = w / vals[2], h / vals[3]
        aspect = el.attrib.get("preserveAspectRatio", "xMidYMid meet").split()
        align = aspect[0] if aspect else "xMidYMid"
        dx = dy = 0.0
        if align != "none":
            s = max(sx, sy) if len(aspect) > 1 and aspect[1] == "slice" else min(sx, sy)
            sx = sy = s
            fx = {"xMin": 0.0, "xMid": 0.5, "xMax": 1.0}.get(align[:4], 0.5)
            fy = {"YMin": 0.0, "YMid": 0.5, "YMax": 1.0}.get(align[4:], 0.5)
            dx, dy = fx * (w - vals[2] * s), fy * (h - vals[3] * s)
        ctm = _mul(_mul(ctm, _translate(dx, dy)), _mul(_scale(sx, sy), _translate(-vals[0], -vals[1])))
        return ctm, (vals[2], vals[3])

    def use(self, el: ET.Element, state: _State) -> Iterator[tuple[ET.Element, _State]]:
        href = el.attrib.get("href", el.attrib.get(_XLINK_HREF, "")).strip()
        if not href.startswith("#"):
            self.ignore("<use> of other files")
            return
        target = self.ids.get(href[1:])
        if target is None:
            self.ignore("<use> of missing elements")
            return
        if id(target) in state.uses or target is el:
            raise SVGError(f"<use href={href!r}> refers to itself (a circular reference)")
        vw, vh = state.viewport
        x, y = el.attrib.get("x"), el.attrib.get("y")
        tx = _length(x, "x", percent_of=vw) if x else 0.0
        ty = _length(y, "y", percent_of=vh) if y else 0.0
        inner = _State(
            _mul(state.ctm, _translate(tx, ty)), state.props, state.opacity, state.viewport, state.depth
        )
        inner.uses = (*state.uses, id(target))
        if _local(target.tag) in ("symbol", "svg"):
            sized = ET.Element("symbol", dict(target.attrib))
            for key in ("width", "height"):
                if key in el.attrib:
                    sized.attrib[key] = el.attrib[key]
            inner.ctm, inner.viewport = self.viewport(sized, inner, None, None)
            if "transform" in target.attrib and _local(target.tag) == "symbol":
                inner.ctm = _mul(inner.ctm, parse_transform(target.attrib["transform"], element="symbol"))
            inner.props = self.style(target, _local(target.tag), inner.props)
            yield from ((child, inner) for child in reversed(list(target)))
        else:
            yield target, inner

    # -------------------------------------------------------------- shapes
    def shape(self, el: ET.Element, name: str, state: _State, doc: SVGDocument) -> None:
        props = state.props
        if props.get("visibility", "visible").strip().lower() in ("hidden", "collapse"):
            return
        subpaths = self.geometry(el, name, state)
        if not subpaths:
            return
        fill = props.get("fill")
        if fill is not None and fill.strip().lower() not in ("none", "transparent"):
            self.ignore("fills")
        if props.get("stroke-dasharray", "none").strip().lower() not in ("none", ""):
            self.ignore("dashes (drawn solid)")
        if any(
            props.get(k, "none").strip().lower() != "none"
            for k in ("marker", "marker-start", "marker-mid", "marker-end")
        ):
            self.ignore("markers")
        rgb, alpha = self.paint(props.get("stroke", "black"), name, props)
        alpha *= _opacity(props.get("stroke-opacity", "1"), "stroke-opacity", name) * state.opacity
        vw, vh = state.viewport
        diag = math.sqrt((vw * vw + vh * vh) / 2)
        sw = _length(props.get("stroke-width", "1"), f"stroke-width of <{name}>", percent_of=diag)
        if sw < 0:
            raise SVGError(f"negative stroke-width {props.get('stroke-width')!r} in <{name}>")
        fixed = props.get("vector-effect", "").strip() == "non-scaling-stroke"
        color = (rgb[0], rgb[1], rgb[2], min(max(alpha, 0.0), 1.0))
        for sub in subpaths:
            self.segments += (len(sub) - 1) // 3
            if self.segments > self.limits.max_svg_segments:
                check_limit(self.segments, "max_svg_segments", "the number of cubic segments in the SVG")
            pts = [_apply(state.ctm, p) for p in sub]
            r = 0.5 * sw * (1.0 if fixed else _width_scale(state.ctm, sub))
            if not all(math.isfinite(x) and math.isfinite(y) for x, y in pts) or not math.isfinite(r):
                raise SVGError(f"<{name}> has coordinates out of range after its transforms")
            doc.points.append(pts)
            doc.widths.append(r)
            doc.colors.append(color)

    def geometry(self, el: ET.Element, name: str, state: _State) -> list[list[Point]]:
        attrib = el.attrib
        vw, vh = state.viewport

        def length(key: str, of: float, default: str = "0") -> float:
            return _length(attrib.get(key, default), f"{key} of <{name}>", percent_of=of)

        if name == "path":
            d = attrib.get("d", "")
            if len(d) > self.limits.max_svg_bytes:
                check_limit(len(d), "max_svg_bytes", "the path data's length (characters)")
            return parse_path_data(d, element="path" + (f" id={attrib['id']!r}" if "id" in attrib else ""))
        if name == "line":
            p0, p1 = (length("x1", vw), length("y1", vh)), (length("x2", vw), length("y2", vh))
            return [[p0, *_line(p0, p1)]]
        if name in ("polyline", "polygon"):
            nums = _numbers(attrib.get("points", ""), f"points of <{name}>")
            if len(nums) % 2:
                raise SVGError(f"malformed points in <{name}>: an odd number of coordinates ({len(nums)})")
            if len(nums) // 2 > self.limits.max_svg_segments:
                check_limit(len(nums) // 2, "max_svg_segments", f"the number of points in <{name}>")
            verts = list(zip(nums[0::2], nums[1::2]))
            if len(verts) < 2:
                return []
            if name == "polygon" and verts[-1] != verts[0]:
                verts.append(verts[0])
            sp: list[Point] = [verts[0]]
            for p, q in itertools.pairwise(verts):
                sp.extend(_line(p, q))
            return [sp]
        diag = math.sqrt((vw * vw + vh * vh) / 2)
        if name == "circle":
            cx, cy, r = length("cx", vw), length("cy", vh), length("r", diag)
            return self.ellipse(cx, cy, r, r)
        if name == "ellipse":
            rx_text, ry_text = attrib.get("rx", "auto"), attrib.get("ry", "auto")
            rx = _length(rx_text, "rx of <ellipse>", percent_of=vw) if rx_text != "auto" else None
            ry = _length(ry_text, "ry of <ellipse>", percent_of=vh) if ry_text != "auto" else None
            rx, ry = (rx if rx is not None else ry), (ry if ry is not None else rx)
            return self.ellipse(length("cx", vw), length("cy", vh), rx or 0.0, ry or 0.0)
        # rect
        x, y, w, h = length("x", vw), length("y", vh), length("width", vw), length("height", vh)
        if w <= 0 or h <= 0:
            return []
        rx_text, ry_text = attrib.get("rx", "auto"), attrib.get("ry", "auto")
        rx = _length(rx_text, "rx of <rect>", percent_of=vw) if rx_text != "auto" else None
        ry = _length(ry_text, "ry of <rect>", percent_of=vh) if ry_text != "auto" else None
        rx, ry = (rx if rx is not None else ry), (ry if ry is not None else rx)
        rx, ry = min(max(rx or 0.0, 0.0), w / 2), min(max(ry or 0.0, 0.0), h / 2)
        if rx == 0 or ry == 0:
            rx = ry = 0.0
        corners = [  # (start of the side, end of the side, the corner's arc end)
            ((x + rx, y), (x + w - rx, y), (x + w, y + ry)),
            ((x + w, y + ry), (x + w, y + h - ry), (x + w - rx, y + h)),
            ((x + w - rx, y + h), (x + rx, y + h), (x, y + h - ry)),
            ((x, y + h - ry), (x, y + ry), (x + rx, y)),
        ]
        pts: list[Point] = [corners[0][0]]
        for start, end, arc_end in corners:
            if end != start:
                pts.extend(_line(pts[-1], end))
            if rx > 0:
                pts.extend(_arc(pts[-1], rx, ry, 0.0, False, True, arc_end))
        return [pts] if len(pts) >= 4 else []

    @staticmethod
    def ellipse(cx: float, cy: float, rx: float, ry: float) -> list[list[Point]]:
        if rx <= 0 or ry <= 0:
            return []
        pts: list[Point] = [(cx + rx, cy)]
        for k in range(1, 5):  # four quarters, clockwise on screen (the SVG's direction)
            a = k * math.pi / 2
            end = (cx + rx * round(math.cos(a)), cy + ry * round(math.sin(a)))
            pts.extend(_arc(pts[-1], rx, ry, 0.0, False, True, end))
        return [pts]


def parse_svg(text: str | bytes, *, source: str | None = None) -> SVGDocument:
    """Parse an SVG document into strokes (see the module docstring for what is read).

    Args:
        text: The document, as text or as bytes (decoded by its BOM or XML declaration, else UTF-8).
        source: A name for messages (e.g. the file path), prefixed to every error.

    Returns:
        The strokes and the canvas; :attr:`SVGDocument.ignored` lists what was not read (and an
        :class:`~clipasso.errors.SVGWarning` says it once).

    Raises:
        SVGError: Malformed XML, text, numbers, transforms or colours; no canvas size (named).
        LimitError: Above ``max_svg_bytes``, ``max_svg_elements``, ``max_svg_depth`` or
            ``max_svg_segments`` (:mod:`clipasso.limits`).
    """
    prefix = f"{source}: " if source else ""
    limits = get_limits()
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            check_limit(len(data), "max_svg_bytes", "the SVG's size (bytes)")
            text = _decode(data)
        elif not isinstance(text, str):
            raise SVGError(f"expected SVG text or bytes, got {type(text).__name__}")
        else:
            check_limit(len(text), "max_svg_bytes", "the SVG's size (characters)")
        root = _parse_xml(text, limits)
        if _local(root.tag) != "svg":
            raise SVGError(f"the root element must be <svg>, got <{_local(root.tag)}>")
        doc = _Reader(root, limits).read()
    except (SVGError, LimitError) as exc:
        if not prefix:
            raise
        raise _with_prefix(exc, prefix) from None
    except RecursionError:  # pragma: no cover - the traversal is iterative; a last line of defence
        raise SVGError(f"{prefix}the SVG is nested too deeply to read") from None
    if doc.ignored:
        summary = ", ".join(f"{what} ({n})" for what, n in sorted(doc.ignored.items()))
        warnings.warn(f"{prefix}SVG: only strokes are read; ignored: {summary}", SVGWarning, stacklevel=2)
    return doc


def read_svg(path: str | os.PathLike[str]) -> SVGDocument:
    """Read and parse an SVG file (see :func:`parse_svg`); errors name the file.

    Raises:
        SVGError: A missing file, a directory, an unreadable or malformed document.
        LimitError: A file above the SVG limits (its size is checked before it is read).
    """
    p = Path(path)
    if not p.exists():
        raise SVGError(f"SVG file not found: {p}")
    if not p.is_file():
        raise SVGError(f"expected an SVG file, got a directory or special file: {p}")
    try:
        size = p.stat().st_size
        check_limit(size, "max_svg_bytes", f"the size of {p} (bytes)")
        data = p.read_bytes()
    except OSError as exc:
        raise SVGError(f"cannot read SVG file {p}: {exc.strerror or exc}") from None
    if not data.strip():
        raise SVGError(f"{p}: the SVG file is empty")
    return parse_svg(data, source=str(p))
