"""Read and write stroke sketches as SVG.

Writing: one ``<path>`` per stroke (``M x y C … C …``), ``fill="none"``, ``stroke`` colour plus
``stroke-opacity``, ``stroke-width`` = ``2r`` (the SVG width is the full width, our ``r`` is the
half-width), round caps and joins (the look of the distance-based raster), ``viewBox`` = the
canvas. Coordinates are written with 4 decimals, so a round trip is exact to 1e-4 px.

Reading: ``<path>`` elements with the commands ``M L H V C S Q T Z`` in absolute and relative
form (lines and quadratics are promoted to cubics exactly, ``Z`` closes with a line), plus
``<line>``, ``<polyline>`` and ``<polygon>``. Each subpath becomes one stroke of ``k`` cubic
segments. ``transform`` attributes are refused, as are elements that are not strokes (``rect``,
``circle``, ``text``, …): :class:`~clipasso.errors.SVGError` names the element.

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
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .errors import SVGError

__all__ = ["SVGDocument", "parse_path_data", "parse_svg", "read_svg", "strokes_to_svg", "write_svg"]

_SVG_NS = "http://www.w3.org/2000/svg"
_IGNORED = {"title", "desc", "metadata", "defs", "style", "namedview", "sodipodi:namedview"}
_CONTAINERS = {"svg", "g"}
_NAMED = {
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "lime": (0.0, 1.0, 0.0),
    "green": (0.0, 128 / 255, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "gray": (128 / 255,) * 3,
    "grey": (128 / 255,) * 3,
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "orange": (1.0, 165 / 255, 0.0),
}
Point = tuple[float, float]


@dataclass
class SVGDocument:
    """Strokes read from an SVG (plain Python lists; stroke ``i`` has ``3k_i + 1`` points).

    Attributes:
        canvas_size: ``(H, W)`` from the ``viewBox`` (or ``width``/``height``).
        points: Per stroke, a list of ``(x, y)`` control points in canvas pixels.
        widths: Per stroke, the half-width ``r`` (``stroke-width / 2``).
        colors: Per stroke, straight RGBA (opacity = ``stroke-opacity · opacity``).
    """

    canvas_size: tuple[int, int]
    points: list[list[Point]] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)
    colors: list[tuple[float, float, float, float]] = field(default_factory=list)

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

        Raises:
            SVGError: No strokes, or mixed segment counts with ``mixed_segments="error"``.
        """
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
            if mixed_segments != "split":
                raise SVGError(f"mixed_segments must be 'split' or 'error', got {mixed_segments!r}")
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


def _fmt(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _colour_attr(rgb: Sequence[float]) -> str:
    vals = [min(max(float(c), 0.0), 1.0) for c in rgb]
    ints = [round(c * 255) for c in vals]
    if all(abs(i / 255 - c) < 1e-6 for i, c in zip(ints, vals)):
        return "#{:02x}{:02x}{:02x}".format(*ints)
    return "rgb({})".format(", ".join(f"{_fmt(100 * c)}%" for c in vals))


def strokes_to_svg(points: Tensor, widths: Tensor, colors: Tensor, canvas_size: tuple[int, int]) -> str:
    """Serialise one sketch to SVG text.

    Args:
        points: ``[N, 3k+1, 2]`` control points in pixels.
        widths: ``[N]`` half-widths (written as ``stroke-width = 2r``).
        colors: ``[N, 4]`` straight RGBA (alpha written as ``stroke-opacity``).
        canvas_size: ``(H, W)``.

    Returns:
        The SVG document as a string.
    """
    if points.dim() != 3 or points.shape[-1] != 2 or (points.shape[1] - 1) % 3 or points.shape[1] < 4:
        raise SVGError(f"points must be [N, 3k+1, 2], got {list(points.shape)}")
    h, w = (int(s) for s in canvas_size)
    pts = points.detach().cpu().double().tolist()
    wid = widths.detach().cpu().double().reshape(-1).tolist()
    col = colors.detach().cpu().double().reshape(-1, 4).tolist()
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="{_SVG_NS}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
    ]
    for p, r, c in zip(pts, wid, col):
        d = [f"M {_fmt(p[0][0])} {_fmt(p[0][1])}"]
        for s in range(1, len(p), 3):
            d.append("C " + " ".join(f"{_fmt(x)} {_fmt(y)}" for x, y in p[s : s + 3]))
        lines.append(
            f'  <path d="{" ".join(d)}" fill="none" stroke="{_colour_attr(c[:3])}" '
            f'stroke-opacity="{_fmt(min(max(c[3], 0.0), 1.0))}" stroke-width="{_fmt(2 * r)}" '
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


# ---------------------------------------------------------------------------------------- reading

_TOKEN = re.compile(r"[MmLlHhVvCcSsQqTtZzAa]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ARGS = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "Z": 0}


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


def parse_path_data(d: str, *, element: str = "path") -> list[list[Point]]:
    """Parse SVG path data into subpaths of cubic control points.

    Args:
        d: The ``d`` attribute.
        element: Name used in error messages.

    Returns:
        One list of ``3k + 1`` points per subpath with at least one segment.

    Raises:
        SVGError: Unsupported commands (arcs) or malformed data.

    Example:
        >>> parse_path_data("M 0 0 L 3 0")
        [[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]]
    """
    tokens = _TOKEN.findall(d)
    if "".join(tokens).strip() == "" and d.strip():
        raise SVGError(f"malformed path data in <{element}>: {d[:40]!r}")
    subpaths: list[list[Point]] = []
    cur: list[Point] = []
    pos: Point = (0.0, 0.0)
    start: Point = (0.0, 0.0)
    last_ctrl: Point | None = None
    last_cmd = ""
    i = 0
    cmd = ""

    def num() -> float:
        nonlocal i
        if i >= len(tokens) or tokens[i].isalpha():
            raise SVGError(f"malformed path data in <{element}>: command {cmd!r} is missing numbers")
        i += 1
        return float(tokens[i - 1])

    def flush() -> None:
        nonlocal cur
        if len(cur) >= 4:
            subpaths.append(cur)
        cur = []

    while i < len(tokens):
        tok = tokens[i]
        if tok.isalpha():
            cmd = tok
            i += 1
            if cmd.upper() == "A":
                raise SVGError(f"<{element}> uses the arc command 'A', which is not supported")
        elif not cmd:
            raise SVGError(f"malformed path data in <{element}>: it must start with a command, got {tok!r}")
        elif cmd.upper() == "Z":
            raise SVGError(f"malformed path data in <{element}>: numbers after 'Z'")
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
            pos = (ox + num(), oy + num())
            start = pos
            cur = [pos]
            cmd = "l" if rel else "L"  # further pairs are implicit line-tos
            last_ctrl, last_cmd = None, "M"
            continue
        if not cur:
            cur = [pos]
            start = pos
        if up == "L":
            p1 = (ox + num(), oy + num())
            cur.extend(_line(pos, p1))
            pos, last_ctrl = p1, None
        elif up == "H":
            p1 = ((ox if rel else 0.0) + num(), pos[1])
            cur.extend(_line(pos, p1))
            pos, last_ctrl = p1, None
        elif up == "V":
            p1 = (pos[0], (oy if rel else 0.0) + num())
            cur.extend(_line(pos, p1))
            pos, last_ctrl = p1, None
        elif up == "C":
            c1 = (ox + num(), oy + num())
            c2 = (ox + num(), oy + num())
            p1 = (ox + num(), oy + num())
            cur.extend([c1, c2, p1])
            pos, last_ctrl = p1, c2
        elif up == "S":
            c1 = (
                (2 * pos[0] - last_ctrl[0], 2 * pos[1] - last_ctrl[1])
                if last_cmd in "CS" and last_ctrl
                else pos
            )
            c2 = (ox + num(), oy + num())
            p1 = (ox + num(), oy + num())
            cur.extend([c1, c2, p1])
            pos, last_ctrl = p1, c2
        elif up == "Q":
            c = (ox + num(), oy + num())
            p1 = (ox + num(), oy + num())
            cur.extend(_quad(pos, c, p1))
            pos, last_ctrl = p1, c
        elif up == "T":
            c = (
                (2 * pos[0] - last_ctrl[0], 2 * pos[1] - last_ctrl[1])
                if last_cmd in "QT" and last_ctrl
                else pos
            )
            p1 = (ox + num(), oy + num())
            cur.extend(_quad(pos, c, p1))
            pos, last_ctrl = p1, c
        else:  # pragma: no cover - the tokenizer only yields known letters
            raise SVGError(f"unsupported path command {cmd!r} in <{element}>")
        last_cmd = up
    flush()
    return subpaths


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


def _length(value: str | None, what: str) -> float | None:
    if value is None:
        return None
    m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(px)?\s*", value)
    if not m:
        raise SVGError(f"unsupported {what} {value!r} (only plain numbers or px)")
    return float(m.group(1))


def _parse_colour(value: str, element: str) -> tuple[tuple[float, float, float], float]:
    v = value.strip().lower()
    if v in ("none", "transparent"):
        return (0.0, 0.0, 0.0), 0.0
    if v in _NAMED:
        return _NAMED[v], 1.0
    if v.startswith("#") and len(v) in (4, 7):
        hexs = v[1:] if len(v) == 7 else "".join(ch * 2 for ch in v[1:])
        try:
            return tuple(int(hexs[j : j + 2], 16) / 255 for j in (0, 2, 4)), 1.0  # type: ignore[return-value]
        except ValueError:
            pass
    m = re.fullmatch(r"rgba?\(([^)]*)\)", v)
    if m:
        parts = [x.strip() for x in m.group(1).split(",")]
        if len(parts) in (3, 4):
            try:
                rgb = tuple(float(x[:-1]) / 100 if x.endswith("%") else float(x) / 255 for x in parts[:3])
                alpha = float(parts[3]) if len(parts) == 4 else 1.0
                return rgb, alpha  # type: ignore[return-value]
            except ValueError:
                pass
    raise SVGError(f"unsupported stroke colour {value!r} in <{element}>")


def _style(el: ET.Element) -> dict[str, str]:
    out = {k: v for k, v in el.attrib.items()}
    for item in el.attrib.get("style", "").split(";"):
        if ":" in item:
            key, val = item.split(":", 1)
            out[key.strip()] = val.strip()
    return out


def parse_svg(text: str) -> SVGDocument:
    """Parse SVG text into strokes.

    Presentation attributes (``stroke``, ``stroke-width``, ``stroke-opacity``, ``opacity``) are
    read from the element, its ``style`` and inherited from enclosing ``<g>`` elements. A missing
    ``stroke`` reads as black, a missing ``stroke-width`` as 1 (SVG's default), ``stroke="none"``
    as a transparent stroke. Fills are ignored (with a warning when one is set explicitly).

    Raises:
        SVGError: Malformed XML, no canvas size, transforms, or unsupported elements (named).
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SVGError(f"malformed SVG (XML error: {exc})") from exc
    if _local(root.tag) != "svg":
        raise SVGError(f"the root element must be <svg>, got <{_local(root.tag)}>")
    view = root.attrib.get("viewBox")
    ox = oy = 0.0
    if view:
        vals = [float(x) for x in re.split(r"[\s,]+", view.strip()) if x]
        if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
            raise SVGError(f"malformed viewBox {view!r}")
        ox, oy, w, h = vals
    else:
        w0, h0 = _length(root.attrib.get("width"), "width"), _length(root.attrib.get("height"), "height")
        if w0 is None or h0 is None:
            raise SVGError("the SVG has neither a viewBox nor width and height: the canvas size is unknown")
        w, h = w0, h0
    doc = SVGDocument(canvas_size=(round(h), round(w)))
    fill_warned = False

    def visit(el: ET.Element, inherited: dict[str, str]) -> None:
        nonlocal fill_warned
        name = _local(el.tag)
        if name in _IGNORED or (el.tag.startswith("{") and not el.tag.startswith("{" + _SVG_NS)):
            return
        if "transform" in el.attrib:
            raise SVGError(
                f"<{name}> has a transform attribute ({el.attrib['transform']!r}); "
                "transforms are not supported"
            )
        style = {**inherited, **_style(el)}
        style.pop("style", None)
        if name in _CONTAINERS:
            for child in el:
                visit(child, {k: v for k, v in style.items() if k not in ("width", "height", "viewBox", "d")})
            return
        if name == "path":
            subpaths = parse_path_data(el.attrib.get("d", ""), element="path")
        elif name == "line":
            try:
                x1, y1, x2, y2 = (float(el.attrib.get(a, "0")) for a in ("x1", "y1", "x2", "y2"))
            except ValueError as exc:
                raise SVGError(f"malformed <line>: {exc}") from exc
            subpaths = [[(x1, y1), *_line((x1, y1), (x2, y2))]]
        elif name in ("polyline", "polygon"):
            nums = [
                float(v)
                for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", el.attrib.get("points", ""))
            ]
            if len(nums) < 4 or len(nums) % 2:
                raise SVGError(f"malformed points in <{name}>")
            verts = list(zip(nums[0::2], nums[1::2]))
            if name == "polygon":
                verts.append(verts[0])
            sp: list[Point] = [verts[0]]
            for a, b in itertools.pairwise(verts):
                sp.extend(_line(a, b))
            subpaths = [sp]
        else:
            raise SVGError(
                f"unsupported SVG element <{name}>: only path, line, polyline and polygon strokes are read"
            )
        fill = style.get("fill")
        if fill is not None and fill.strip().lower() != "none" and not fill_warned:
            warnings.warn(
                f"<{name}> has fill={fill!r}; fills are ignored, only strokes are read", stacklevel=3
            )
            fill_warned = True
        rgb, alpha = _parse_colour(style.get("stroke", "black"), name)
        try:
            alpha *= float(style.get("stroke-opacity", "1")) * float(style.get("opacity", "1"))
        except ValueError as exc:
            raise SVGError(f"malformed opacity in <{name}>: {exc}") from exc
        sw = _length(style.get("stroke-width", "1"), "stroke-width")
        r = 0.5 * (sw if sw is not None else 1.0)
        for sub in subpaths:
            doc.points.append([(x - ox, y - oy) for x, y in sub])
            doc.widths.append(r)
            doc.colors.append((*rgb, min(max(alpha, 0.0), 1.0)))

    for child in root:
        visit(child, {k: v for k, v in _style(root).items() if k not in ("width", "height", "viewBox")})
    return doc


def read_svg(path: str | os.PathLike[str]) -> SVGDocument:
    """Read and parse an SVG file (see :func:`parse_svg`)."""
    p = Path(path)
    if not p.is_file():
        raise SVGError(f"SVG file not found: {p}")
    return parse_svg(p.read_text(encoding="utf-8"))
