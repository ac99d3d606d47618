"""Tests of clipasso.svg: writing, exact round trips, real-world SVG reading, hostile documents."""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipasso import limits
from clipasso.errors import LimitError, SVGError, SVGWarning
from clipasso.svg import (
    SVGDocument,
    parse_path_data,
    parse_svg,
    parse_transform,
    read_svg,
    strokes_to_svg,
    write_svg,
)


def _svg(body: str, size: str = 'width="100" height="80" viewBox="0 0 100 80"') -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" {size}>{body}</svg>'


def _quiet(text: str | bytes) -> SVGDocument:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SVGWarning)
        return parse_svg(text)


def _cubic(p: list[tuple[float, float]], t: float) -> tuple[float, float]:
    u = 1 - t
    w = (u**3, 3 * u * u * t, 3 * u * t * t, t**3)
    return (sum(wi * q[0] for wi, q in zip(w, p)), sum(wi * q[1] for wi, q in zip(w, p)))


def _samples(stroke: list[tuple[float, float]], per_segment: int = 9) -> list[tuple[float, float]]:
    out = []
    for s in range(0, len(stroke) - 1, 3):
        out += [_cubic(stroke[s : s + 4], k / (per_segment - 1)) for k in range(per_segment)]
    return out


# ---------------------------------------------------------------------------------------- writing


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 3),
    n=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_our_svg_parses_back_to_identical_strokes(seed: int, k: int, n: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3 * k + 1, 2, generator=g, dtype=torch.float64) * 300 - 50).to(dtype)
    widths = (0.1 + 3 * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype)
    colors = torch.rand(n, 4, generator=g, dtype=torch.float64).to(dtype)
    colors[0, :3] = torch.tensor([0.0, 128 / 255, 1.0], dtype=dtype)  # a colour written as #rrggbb
    doc = parse_svg(strokes_to_svg(pts, widths, colors, (200, 150)))
    assert doc.canvas_size == (200, 150) and doc.ignored == {}
    p2, w2, c2 = doc.to_tensors(dtype=dtype)
    assert torch.equal(p2, pts) and torch.equal(w2, widths)
    if dtype == torch.float32:
        assert torch.equal(c2, colors)
    else:  # a percentage divided by 100 cannot hit every double
        assert float((c2 - colors).abs().max()) <= 2e-16
        assert torch.equal(c2[0, :3], colors[0, :3])


def test_written_attributes(tmp_path: Path) -> None:
    pts = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]])
    text = strokes_to_svg(pts, torch.tensor([1.5]), torch.tensor([[0.0, 0.0, 0.0, 0.25]]), (224, 224))
    assert 'stroke-width="3"' in text and 'fill="none"' in text and 'viewBox="0 0 224 224"' in text
    assert 'stroke="#000000"' in text and 'stroke-opacity="0.25"' in text
    assert "M 1 2 C 3 4 5 6 7 8" in text
    out = write_svg(
        tmp_path / "a" / "s.svg", pts, torch.tensor([1.5]), torch.tensor([[0.0, 0, 0, 1]]), (9, 9)
    )
    assert read_svg(out).points[0][3] == (7.0, 8.0)


def test_writer_refuses_what_svg_cannot_hold() -> None:
    pts = torch.zeros(1, 4, 2)
    one, black = torch.ones(1), torch.tensor([[0.0, 0, 0, 1]])
    with pytest.raises(SVGError, match="NaN"):
        strokes_to_svg(pts.clone().fill_(math.nan), one, black, (8, 8))
    with pytest.raises(SVGError, match=r"widths must be \[N\]"):
        strokes_to_svg(pts, torch.ones(2), black, (8, 8))
    with pytest.raises(SVGError, match="positive"):
        strokes_to_svg(pts, one, black, (0, 8))


# ---------------------------------------------------------------------------------------- path data


def test_lines_and_quadratics_are_promoted_exactly() -> None:
    (line,) = parse_path_data("M 0 0 L 3 6")
    assert line == [(0.0, 0.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]
    (quad,) = parse_path_data("M 0 0 Q 3 3 6 0")
    # the cubic equals the quadratic: check the midpoint
    p = torch.tensor(quad)
    mid = 0.125 * p[0] + 0.375 * p[1] + 0.375 * p[2] + 0.125 * p[3]
    assert torch.allclose(mid, torch.tensor([3.0, 1.5]))


def test_relative_commands_and_subpaths() -> None:
    subs = parse_path_data("m 10 10 c 1 0 2 0 3 0 l 0 3 M 50 50 h 6 v -3 z m 1 1 q 1 1 2 0 t 2 0")
    assert len(subs) == 3
    assert subs[0][0] == (10.0, 10.0) and subs[0][3] == (13.0, 10.0) and subs[0][-1] == (13.0, 13.0)
    assert len(subs[0]) == 7
    assert subs[1][3] == (56.0, 50.0) and subs[1][6] == (56.0, 47.0) and subs[1][-1] == (50.0, 50.0)
    assert subs[2][0] == (51.0, 51.0) and subs[2][-1] == (55.0, 51.0)
    (s_path,) = parse_path_data("M 0 0 C 1 1 2 1 3 0 S 5 -1 6 0")
    assert s_path[4] == (4.0, -1.0)  # reflected control point


def test_compact_number_syntax() -> None:
    """Numbers run together as exporters write them: signs and dots separate, arc flags are one digit."""
    (a,) = parse_path_data("M1-2L.5.5-3e1,4")
    assert a[0] == (1.0, -2.0) and a[3] == (0.5, 0.5)
    assert len(parse_path_data("M1-2L.5.5-3e1,4")[0]) == 7  # the second pair is an implicit L
    (b,) = parse_path_data("M0 0a5 5 0 1110 0")  # flags "1" "1", then "10" "0"
    assert b[-1] == (10.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(
    x0=st.floats(-50, 50),
    y0=st.floats(-50, 50),
    x1=st.floats(-50, 50),
    y1=st.floats(-50, 50),
    rx=st.floats(0.5, 40),
    ry=st.floats(0.5, 40),
    phi=st.floats(-360, 360),
    large=st.booleans(),
    sweep=st.booleans(),
)
def test_arcs_are_cubics_on_the_ellipse(
    x0: float, y0: float, x1: float, y1: float, rx: float, ry: float, phi: float, large: bool, sweep: bool
) -> None:
    """Every sampled point of the cubics lies on an ellipse with the given radii (scaled up by one
    common factor when they cannot reach) and rotation, through both end points, turning the way the
    sweep flag says; each cubic spans at most 90°."""
    if math.hypot(x1 - x0, y1 - y0) < 1e-3:
        return
    d = f"M {x0!r} {y0!r} A {rx!r} {ry!r} {phi!r} {int(large)} {int(sweep)} {x1!r} {y1!r}"
    (arc,) = parse_path_data(d)
    assert arc[0] == (x0, y0) and arc[-1] == (x1, y1)
    assert 1 <= (len(arc) - 1) // 3 <= 4
    c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
    # the centre from the first, middle and last points: solve with the SVG formulas' result instead
    hx, hy = (x0 - x1) / 2, (y0 - y1) / 2
    xp, yp = c * hx + s * hy, -s * hx + c * hy
    lam = max(1.0, (xp / rx) ** 2 + (yp / ry) ** 2)
    rx2, ry2 = rx * math.sqrt(lam), ry * math.sqrt(lam)
    num = max(rx2**2 * ry2**2 - rx2**2 * yp**2 - ry2**2 * xp**2, 0.0)
    coef = math.sqrt(num / (rx2**2 * yp**2 + ry2**2 * xp**2)) * (-1 if large == sweep else 1)
    cxp, cyp = coef * rx2 * yp / ry2, -coef * ry2 * xp / rx2
    cx, cy = c * cxp - s * cyp + (x0 + x1) / 2, s * cxp + c * cyp + (y0 + y1) / 2
    turn = 0.0
    prev = None
    for px, py in _samples(arc):
        u, v = c * (px - cx) + s * (py - cy), -s * (px - cx) + c * (py - cy)
        assert abs(math.hypot(u / rx2, v / ry2) - 1) < 1e-3
        ang = math.atan2(v / ry2, u / rx2)
        if prev is not None:
            turn += (ang - prev + math.pi) % (2 * math.pi) - math.pi
        prev = ang
    assert (turn > 0) == sweep
    if lam == 1.0 and abs(abs(turn) - math.pi) > 1e-3:
        assert (abs(turn) > math.pi) == large


def test_degenerate_arcs() -> None:
    assert parse_path_data("M 5 5 A 3 3 0 0 1 5 5 L 6 6")[0][:4] == [
        (5.0, 5.0),
        *parse_path_data("M 5 5 L 6 6")[0][1:],
    ]
    (flat,) = parse_path_data("M 0 0 A 0 3 0 0 1 9 0")  # a zero radius is a straight line
    assert flat == parse_path_data("M 0 0 L 9 0")[0]


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ("M 0 0 C 1 1", "missing numbers"),
        ("0 0 L 1 1", "must start with a command"),
        ("M 0 0 X 5 5", "unknown command 'X'"),
        ("M 0 0 L 1 2 # 3", "unexpected character"),
        ("M 0 0 Z 4", "numbers after 'Z'"),
        ("M 0 0 A 5 5 0 2 1 9 9", "arc flag"),
        ("M 0 0 L 1e999 0", "out of range"),
    ],
)
def test_malformed_path_data(d: str, match: str) -> None:
    with pytest.raises(SVGError, match=match):
        parse_path_data(d)


def test_path_segment_limit() -> None:
    d = "M 0 0 " + "L 1 1 " * 50
    with limits.override(max_svg_segments=20), pytest.raises(LimitError, match="max_svg_segments"):
        parse_path_data(d)
    assert len(parse_path_data(d)[0]) == 151


# ---------------------------------------------------------------------------------------- transforms


def _matrix(m: tuple[float, ...]) -> np.ndarray:
    a, b, c, d, e, f = m
    return np.array([[a, c, e], [b, d, f], [0, 0, 1]])


def test_transform_functions() -> None:
    t = math.tan(math.radians(30))
    cases = {
        "translate(3)": (1, 0, 0, 1, 3, 0),
        "translate(3, -4)": (1, 0, 0, 1, 3, -4),
        "scale(2)": (2, 0, 0, 2, 0, 0),
        "scale(2 -1)": (2, 0, 0, -1, 0, 0),
        "rotate(90)": (0, 1, -1, 0, 0, 0),
        "skewX(30)": (1, 0, t, 1, 0, 0),
        "skewY(30)": (1, t, 0, 1, 0, 0),
        "matrix(1 2 3 4 5 6)": (1, 2, 3, 4, 5, 6),
    }
    for text, expected in cases.items():
        np.testing.assert_allclose(parse_transform(text), expected, atol=1e-12, err_msg=text)
    # a list applies right to left; rotate(a, cx, cy) turns about (cx, cy)
    listed = _matrix(parse_transform("translate(10,20) rotate(30) scale(2, 3)"))
    manual = _matrix(cases["translate(3)"]) * 0
    manual = (
        _matrix((1, 0, 0, 1, 10, 20)) @ _matrix(parse_transform("rotate(30)")) @ _matrix((2, 0, 0, 3, 0, 0))
    )
    np.testing.assert_allclose(listed, manual, atol=1e-12)
    about = _matrix(parse_transform("rotate(90 10 5)"))
    np.testing.assert_allclose(about @ [10, 5, 1], [10, 5, 1], atol=1e-12)
    np.testing.assert_allclose(about @ [11, 5, 1], [10, 6, 1], atol=1e-12)


@pytest.mark.parametrize(
    "text",
    ["rotate(45", "scale()", "foo(1)", "translate(1 2 3)", "matrix(1 2 3)", "scale(1e999)", "rotate(1) x"],
)
def test_malformed_transforms(text: str) -> None:
    with pytest.raises(SVGError, match=r"transform|malformed"):
        parse_transform(text)


def test_nested_transforms_compose_and_scale_widths() -> None:
    doc = parse_svg(
        _svg(
            '<g transform="translate(10,20)" stroke-width="2"><g transform="scale(2)">'
            '<path d="M 0 0 L 5 0"/><path d="M 0 0 L 5 0" vector-effect="non-scaling-stroke"/></g>'
            '<path transform="rotate(90)" d="M 0 0 L 5 0"/></g>'
        )
    )
    assert doc.points[0][0] == (10.0, 20.0) and doc.points[0][-1] == (20.0, 20.0)
    assert doc.widths[:2] == [2.0, 1.0]  # scaled by 2, then not scaled at all
    np.testing.assert_allclose(doc.points[2][-1], (10.0, 25.0), atol=1e-12)
    assert doc.widths[2] == pytest.approx(1.0)


def test_a_non_uniform_scale_widens_each_stroke_across_its_direction() -> None:
    doc = parse_svg(_svg('<g transform="scale(3 1)"><path d="M 0 0 L 10 0"/><path d="M 0 0 L 0 10"/></g>'))
    # a horizontal line keeps the pen's height (1); a vertical one gets the stretched width (3)
    assert doc.widths == pytest.approx([0.5, 1.5])


def test_use_symbol_and_nested_viewports() -> None:
    doc = parse_svg(
        _svg(
            '<defs><path id="p" d="M 0 0 L 4 0"/>'
            '<symbol id="s" viewBox="0 0 10 10"><path d="M 0 0 L 10 0"/></symbol></defs>'
            '<use href="#p" x="5" y="6" transform="scale(2)"/>'
            '<use xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="#s" x="50" y="0"'
            ' width="20" height="20"/>'
            '<svg x="10" y="40" width="30" height="10" viewBox="0 0 6 2"><path d="M 0 1 L 6 1"/></svg>'
        )
    )
    assert len(doc.points) == 3  # the <defs> draw nothing by themselves
    assert doc.points[0][0] == (10.0, 12.0) and doc.points[0][-1] == (18.0, 12.0)
    assert doc.points[1][0] == (50.0, 0.0) and doc.points[1][-1] == (70.0, 0.0)
    assert doc.widths[1] == pytest.approx(1.0)
    assert doc.points[2][0] == (10.0, 45.0) and doc.points[2][-1] == (40.0, 45.0)


def test_circular_use_is_an_error() -> None:
    with pytest.raises(SVGError, match="circular"):
        parse_svg(_svg('<g id="a"><path d="M 0 0 L 1 1"/><use href="#a"/></g>'))
    with pytest.raises(SVGError, match="circular"):
        parse_svg(_svg('<defs><use id="x" href="#y"/><use id="y" href="#x"/></defs><use href="#x"/>'))


# ---------------------------------------------------------------------------------------- shapes


def test_basic_shapes_become_closed_cubic_strokes() -> None:
    doc = parse_svg(
        _svg(
            '<circle cx="30" cy="30" r="10"/><ellipse cx="60" cy="30" rx="12" ry="5"/>'
            '<rect x="10" y="50" width="30" height="20" rx="4"/><rect x="50" y="50" width="30" height="20"/>'
            '<rect x="0" y="0" width="0" height="5"/><circle cx="1" cy="1" r="-2"/>'
        )
    )
    assert doc.segment_counts() == [4, 4, 8, 4]  # the zero-size rect and negative circle draw nothing
    for stroke in doc.points:
        assert stroke[0] == pytest.approx(stroke[-1])
    for x, y in _samples(doc.points[0]):
        assert math.hypot(x - 30, y - 30) == pytest.approx(10, rel=3e-4)
    for x, y in _samples(doc.points[1]):
        assert math.hypot((x - 60) / 12, (y - 30) / 5) == pytest.approx(1, rel=3e-4)
    xs, ys = zip(*_samples(doc.points[2]))
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((10, 40, 50, 70), abs=1e-9)
    assert doc.points[3][:4:3] == [(50.0, 50.0), (80.0, 50.0)]


def test_lines_polylines_polygons() -> None:
    doc = parse_svg(
        _svg(
            '<line x1="1" y1="2" x2="7" y2="2"/><polyline points="0,0 3,0 3,3"/>'
            '<polygon points="0 0 4 0 4 4"/>'
        )
    )
    assert doc.segment_counts() == [1, 2, 3]
    assert doc.points[2][-1] == (0.0, 0.0)
    with pytest.raises(SVGError, match="odd number"):
        parse_svg(_svg('<polyline points="0,0 3"/>'))


# ---------------------------------------------------------------------------------------- style


def test_foreign_document() -> None:
    text = _svg(
        '<title>x</title><g stroke="red" stroke-width="4" style="stroke-opacity:0.5">'
        '<path d="M 1 1 C 2 2 3 3 4 4" fill="none"/>'
        '<line x1="0" y1="0" x2="9" y2="0" stroke="#0f0" opacity="0.5"/>'
        '<polyline points="0,0 3,0 3,3" stroke="rgb(0, 0, 255)"/></g>',
        size='width="100px" height="80px"',
    )
    doc = parse_svg(text)
    assert doc.canvas_size == (80, 100)
    assert doc.widths == [2.0, 2.0, 2.0]
    assert doc.colors[0] == (1.0, 0.0, 0.0, 0.5)
    assert doc.colors[1] == (0.0, 1.0, 0.0, 0.25)
    assert doc.colors[2] == (0.0, 0.0, 1.0, 0.5)
    assert doc.segment_counts() == [1, 1, 2]
    pts, _, _ = doc.to_tensors()  # mixed counts: split into single segments
    assert pts.shape == (4, 4, 2)
    with pytest.raises(SVGError, match="different numbers"):
        doc.to_tensors(mixed_segments="error")


def test_style_sheets_and_precedence() -> None:
    doc = _quiet(
        _svg(
            "<style><![CDATA[ /* Illustrator */ .st0{fill:none;stroke:#1D1D1B;stroke-width:2}"
            " path.thick, #special { stroke-width: 6 } g > path { stroke: red }"
            " @media print { .st0 { stroke: blue } }"
            " * { stroke-opacity: 0.5 } ]]></style>"
            '<path class="st0" d="M 0 0 L 1 1"/>'
            '<path class="st0 thick" d="M 0 0 L 1 1"/>'
            '<path id="special" class="st0" stroke-width="1" style="stroke-width:8" d="M 0 0 L 1 1"/>'
            '<path stroke-width="3" class="st0" d="M 0 0 L 1 1"/>'
        )
    )
    assert doc.widths == [1.0, 3.0, 4.0, 1.0]  # class < tag.class < inline style; CSS beats attributes
    assert doc.colors[0] == pytest.approx((29 / 255, 29 / 255, 27 / 255, 0.5))
    assert doc.ignored == {"CSS rules other than simple selectors": 2}  # "g > path" and "@media"


def test_inheritance_visibility_display_and_opacity() -> None:
    doc = parse_svg(
        _svg(
            '<g stroke="blue" opacity="0.5" color="lime"><g opacity="0.5">'
            '<path d="M 0 0 L 1 1" stroke-opacity="0.5"/>'
            '<path d="M 0 0 L 1 1" stroke="currentColor" style="opacity: 50%"/></g></g>'
            '<g style="display:none"><path d="M 0 0 L 9 9"/></g>'
            '<g visibility="hidden"><path d="M 0 0 L 9 9"/><path visibility="visible" d="M 0 0 L 2 2"/></g>'
            '<g stroke="green"><path d="M 0 0 L 1 1" stroke="inherit"/></g>'
        )
    )
    assert len(doc.points) == 4 and doc.points[2][-1] == (2.0, 2.0)
    assert doc.colors[0] == pytest.approx((0, 0, 1, 0.125))  # opacities multiply down the tree
    assert doc.colors[1] == pytest.approx((0, 1, 0, 0.125))
    assert doc.colors[3][:3] == pytest.approx((0, 128 / 255, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("#abc", (0xAA / 255, 0xBB / 255, 0xCC / 255, 1)),
        ("#abc8", (0xAA / 255, 0xBB / 255, 0xCC / 255, 0x88 / 255)),
        ("#A0B1C2", (0xA0 / 255, 0xB1 / 255, 0xC2 / 255, 1)),
        ("rgb(10%, 20%, 100%)", (0.1, 0.2, 1.0, 1)),
        ("rgba(255,0,0,0.5)", (1, 0, 0, 0.5)),
        ("rgb(0 255 0 / 25%)", (0, 1, 0, 0.25)),
        ("hsl(120, 100%, 25%)", (0, 0.5, 0, 1)),
        ("cornflowerblue", (100 / 255, 149 / 255, 237 / 255, 1)),
        ("REBECCAPURPLE", (0x66 / 255, 0x33 / 255, 0x99 / 255, 1)),
        ("#CD853F icc-color(acmecmyk, 0.11, 0.48, 0.83, 0.00)", (0xCD / 255, 0x85 / 255, 0x3F / 255, 1)),
        ("none", (0, 0, 0, 0)),
    ],
)
def test_colour_syntax(value: str, expected: tuple[float, ...]) -> None:
    doc = parse_svg(_svg(f'<path d="M 0 0 L 1 1" stroke={quoteattr(value)}/>'))
    assert doc.colors[0] == pytest.approx(expected, abs=1e-9)


def test_gradient_strokes_take_the_mean_of_their_stops() -> None:
    doc = _quiet(
        _svg(
            '<linearGradient id="a"><stop offset="0" stop-color="#f00"/>'
            '<stop offset="1" style="stop-color:#00f"/>'
            '</linearGradient><linearGradient id="b" href="#a"/>'
            '<path d="M 0 0 L 1 1" stroke="url(#b)"/><path d="M 0 0 L 1 1" stroke="url(#nothing) #0f0"/>'
        )
    )
    assert doc.colors == [(0.5, 0.0, 0.5, 1.0), (0.0, 1.0, 0.0, 1.0)]
    assert len(doc.ignored) == 2


def test_stroke_width_units() -> None:
    doc = parse_svg(
        _svg(
            "".join(
                f'<path d="M 0 0 L 1 1" stroke-width="{w}"/>'
                for w in ("2px", "1.5pt", "1mm", "0.25in", "10%")
            )
        )
    )
    diag = math.sqrt((100**2 + 80**2) / 2)
    assert [2 * r for r in doc.widths] == pytest.approx([2, 2, 96 / 25.4, 24, diag / 10])
    with pytest.raises(SVGError, match="unit"):
        parse_svg(_svg('<path d="M 0 0 L 1 1" stroke-width="2em"/>'))
    with pytest.raises(SVGError, match="negative"):
        parse_svg(_svg('<path d="M 0 0 L 1 1" stroke-width="-2"/>'))


def test_what_is_not_read_is_warned_about_once() -> None:
    text = _svg(
        '<text>hi</text><image href="x.png"/><foo/>'
        '<path d="M 0 0 L 4 4" fill="black"/><path d="M 0 0 L 4 4" fill="red" stroke-dasharray="2 1"/>'
        '<path d="M 0 0 L 4 4" clip-path="url(#c)"/>'
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = parse_svg(text)
    assert len(caught) == 1 and issubclass(caught[0].category, SVGWarning)
    assert "fills (2)" in str(caught[0].message) and "<text> (1)" in str(caught[0].message)
    assert doc.ignored == {
        "<text>": 1,
        "<image>": 1,
        "unknown <foo>": 1,
        "fills": 2,
        "dashes (drawn solid)": 1,
        "clip-path": 1,
    }
    assert len(doc.points) == 3 and math.isclose(doc.widths[0], 0.5)  # SVG default stroke-width 1


def test_inkscape_layers_and_foreign_namespaces() -> None:
    doc = parse_svg(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"'
        ' xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd" width="210mm" height="297mm"'
        ' viewBox="0 0 210 297"><sodipodi:namedview pagecolor="#fff"/><metadata><x/></metadata>'
        '<g inkscape:label="Layer 1" inkscape:groupmode="layer" transform="translate(-10,-20)">'
        '<path style="fill:none;stroke:#000000;stroke-width:0.264583" d="m 20,30 c 10,0 20,10 30,10"/></g>'
        '<g inkscape:label="hidden" style="display:none"><path d="M 0 0 L 5 5"/></g></svg>'
    )
    assert doc.canvas_size == (297, 210) and len(doc.points) == 1
    assert doc.points[0][0] == (10.0, 10.0) and doc.points[0][-1] == (40.0, 20.0)


def test_viewbox_offset_and_fractional_canvas() -> None:
    doc = parse_svg(_svg('<path d="M 15 25 L 18 25"/>', size='viewBox="10 20 30 40"'))
    assert doc.canvas_size == (40, 30) and doc.points[0][0] == (5.0, 5.0)
    doc = parse_svg(_svg('<path d="M 0 0 L 0.5 0.5"/>', size='viewBox="0 0 0.5 0.5"'))
    assert doc.canvas_size == (1, 1) and doc.points[0][-1] == (1.0, 1.0)  # mapped onto one pixel


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<svg", "malformed"),
        ("<html/>", "root element"),
        (_svg('<path d="M 0 0 C 1 1"/>'), "missing numbers"),
        (_svg('<path d="M 0 0 L 1 1" stroke="chartreuse-ish"/>'), "colour"),
        ('<svg xmlns="http://www.w3.org/2000/svg"><path d="M 0 0 L 1 1"/></svg>', "canvas size"),
        (_svg("", size='viewBox="0 0 100"'), "malformed viewBox"),
        (_svg("", size='viewBox="0 0 -5 10"'), "malformed viewBox"),
        (_svg("", size='viewBox="0 0 nan 10"'), "malformed viewBox"),
        (_svg("", size='viewBox="0 0 1e999 10"'), "malformed viewBox"),
        (_svg("", size='viewBox="a b c d"'), "malformed viewBox"),
        (_svg("", size='width="10" height="0"'), "positive"),
        (_svg("", size='width="10%" height="10"'), "percentage"),
        (_svg('<g transform="rotate(1"><path d="M 0 0 L 1 1"/></g>'), "transform"),
        (_svg('<path d="M 0 0 L 1 1" opacity="x"/>'), "opacity"),
        (_svg('<circle r="1" cx="zz"/>'), "cx"),
        (_svg('<path d="M 0 0 L 1e300 0" transform="scale(1e300)"/>'), "out of range"),
        ('<!DOCTYPE svg [<!ENTITY a "x"><!ENTITY b "&a;&a;">]><svg/>', "references"),
        ('<!DOCTYPE svg [<!ENTITY % p "x">]><svg/>', "parameter or external"),
        ('<!DOCTYPE svg [<!ENTITY e SYSTEM "file:///etc/passwd">]><svg>&e;</svg>', "external"),
        ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9">&nbsp;</svg>', "undefined entity"),
    ],
)
def test_errors(text: str, match: str) -> None:
    with pytest.raises(SVGError, match=match):
        parse_svg(text)


def test_bytes_and_encodings() -> None:
    body = _svg('<path d="M 0 0 L 1 1" stroke="red"/><desc>é</desc>')
    assert parse_svg(body.encode("utf-16")).colors == [(1.0, 0.0, 0.0, 1.0)]
    assert parse_svg(b"\xef\xbb\xbf" + body.encode()).colors[0][0] == 1.0
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?>' + body
    assert len(parse_svg(latin.encode("latin-1")).points) == 1
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    with pytest.raises(SVGError, match="not text"):
        parse_svg(png)
    with pytest.raises(SVGError, match="unknown text encoding"):
        parse_svg(b'<?xml version="1.0" encoding="no-such-codec"?><svg/>')


def test_size_depth_and_element_limits() -> None:
    deep = _svg("<g>" * 400 + '<path d="M 0 0 L 1 1"/>' + "</g>" * 400)
    with pytest.raises(LimitError, match="max_svg_depth") as info:
        parse_svg(deep)
    assert info.value.limit == 256 and info.value.value == 257
    with limits.override(max_svg_depth=10_000):  # iterative: far deeper than Python's recursion limit
        very_deep = _svg("<g>" * 5000 + '<path d="M 0 0 L 1 1"/>' + "</g>" * 5000)
        assert len(parse_svg(very_deep).points) == 1
    many = _svg('<path d="M 0 0 L 1 1"/>' * 200)
    with limits.override(max_svg_elements=100), pytest.raises(LimitError, match="max_svg_elements"):
        parse_svg(many)
    with limits.override(max_svg_bytes=1000), pytest.raises(LimitError, match="max_svg_bytes"):
        parse_svg(many)
    with limits.override(max_svg_segments=50), pytest.raises(LimitError, match="max_svg_segments"):
        parse_svg(many)
    assert len(parse_svg(many).points) == 200


def test_bombs_stop_at_the_limits() -> None:
    # quadratic blow-up: one long entity used many times
    bomb = f'<!DOCTYPE svg [<!ENTITY e "{"x" * 10_000}">]><svg>' + "&e;" * 10_000 + "</svg>"
    with pytest.raises(LimitError, match="entities expanded"):
        parse_svg(bomb)
    # exponential <use>: each level draws the one below ten times
    levels = ['<path id="l0" d="M 0 0 L 1 1"/>']
    levels += [f'<g id="l{i}">' + f'<use href="#l{i - 1}"/>' * 10 + "</g>" for i in range(1, 8)]
    uses = _svg("<defs>" + "".join(levels) + '</defs><use href="#l7"/>')
    with limits.override(max_svg_elements=5000), pytest.raises(LimitError, match="max_svg_elements"):
        parse_svg(uses)


def test_empty_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SVGError, match="no strokes"):
        parse_svg(_svg("")).to_tensors()
    with pytest.raises(SVGError, match="not found"):
        read_svg(tmp_path / "nope.svg")
    with pytest.raises(SVGError, match="directory"):
        read_svg(tmp_path)
    (tmp_path / "empty.svg").write_bytes(b"  \n")
    with pytest.raises(SVGError, match="empty"):
        read_svg(tmp_path / "empty.svg")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.svg"
    path.write_text(_svg("", size='viewBox="0 0 1"'))
    with pytest.raises(SVGError, match=r"bad\.svg: malformed viewBox"):
        read_svg(path)
    path.write_bytes(b"\x00\xff" * 1000)
    with pytest.raises(SVGError, match=r"bad\.svg: .*not text"):
        read_svg(path)
    path.write_text(_svg('<path d="M 0 0 L 1 1"/>' * 100))
    with limits.override(max_svg_bytes=500), pytest.raises(LimitError, match=r"size of .*bad\.svg") as info:
        read_svg(path)
    assert info.value.name == "max_svg_bytes" and info.value.value == path.stat().st_size


# ---------------------------------------------------------------------------------------- fuzzing

# Documents come from a seeded generator (hypothesis draws the seeds): drawing trees node by node
# through hypothesis costs ~30 ms a document, this ~1 ms, so a few hundred fit in a second or two.
_NUMS = ["0", "-0", ".5", "1e400", "nan", "inf", "", "1e-400", "5px", "3%", "2em", "1,2", "-.5e2"]
_COMMANDS = [*"MmLlHhVvCcSsQqTtAaZz,", "0", "1", " "]
_FUNCS = ["matrix", "translate", "scale", "rotate", "skewX", "skewY", "bogus"]
_COLOURS = [
    "red",
    "none",
    "#abc",
    "#12345",
    "rgb(1,2,3)",
    "hsl(1,2%,3%)",
    "currentColor",
    "url(#g)",
    "inherit",
]
_TAGS = [
    "g", "path", "line", "polyline", "polygon", "rect", "circle", "ellipse", "use", "svg", "symbol", "defs",
    "text", "image", "switch", "a", "style", "linearGradient", "stop", "foo",
]  # fmt: skip
_LENGTHS = ("x", "y", "width", "height", "r", "rx", "ry", "cx", "cy", "x1", "y1", "x2", "y2")
_CSS = [".st0{stroke:red}", "#a{stroke-width:3}", "g > p {x:1}", "@media{", "}{", "* {opacity: .5}"]


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return str(rng.randint(-1000, 1000))
    if kind < 0.7:
        return f"{rng.uniform(-1e6, 1e6):g}"
    return rng.choice(_NUMS)


def _value(rng: random.Random, key: str) -> str:
    if key == "d":
        return " ".join(
            rng.choice(_COMMANDS) if rng.random() < 0.4 else _number(rng) for _ in range(rng.randint(0, 40))
        )
    if key == "transform":
        return " ".join(
            f"{rng.choice(_FUNCS)}({' '.join(_number(rng) for _ in range(rng.randint(0, 7)))})"
            for _ in range(rng.randint(0, 3))
        )
    if key in ("stroke", "fill"):
        return (
            rng.choice(_COLOURS)
            if rng.random() < 0.8
            else "".join(chr(rng.randint(32, 126)) for _ in range(6))
        )
    if key in ("points", "viewBox"):
        return " ".join(_number(rng) for _ in range(rng.randint(0, 9)))
    if key == "style":
        props = ["stroke", "display", "opacity", "stroke-width", "visibility"]
        return ";".join(
            f"{rng.choice(props)}:{rng.choice(_COLOURS + _NUMS)}" for _ in range(rng.randint(0, 3))
        )
    if key == "href":
        return rng.choice(["#a", "#b", "#root", "#missing", "file.svg#x"])
    if key == "id":
        return rng.choice(["a", "b", "g"])
    if key == "class":
        return rng.choice(["st0", "st1", "st0 st1"])
    return _number(rng)


_KEYS = ["d", "transform", "stroke", "fill", "stroke-width", "opacity", "stroke-opacity", "points", "viewBox"]
_KEYS += ["style", "href", "id", "class", *_LENGTHS]


def _element(rng: random.Random, depth: int = 0) -> str:
    tag = rng.choice(_TAGS)
    if tag == "style":
        return f"<style>{rng.choice(_CSS)}</style>"
    keys = rng.sample(_KEYS, rng.randint(0, 4))
    attrs = "".join(f" {k}={quoteattr(_value(rng, k))}" for k in keys)
    children = "".join(_element(rng, depth + 1) for _ in range(rng.randint(0, 3))) if depth < 4 else ""
    return f"<{tag}{attrs}>{children}</{tag}>"


def _document(seed: int) -> str:
    rng = random.Random(seed)
    size = rng.choice(['viewBox="0 0 64 48"', 'width="64" height="48"', 'viewBox="-5 -5 10 10"'])
    body = "".join(_element(rng) for _ in range(rng.randint(0, 5)))
    return f'<svg xmlns="http://www.w3.org/2000/svg" id="root" {size}>{body}</svg>'


def _check_outcome(data: str | bytes) -> None:
    """Either a sane document or one of the documented errors; nothing else may escape."""
    try:
        doc = _quiet(data)
    except (SVGError, LimitError):
        return
    h, w = doc.canvas_size
    assert h >= 1 and w >= 1
    assert len(doc.points) == len(doc.widths) == len(doc.colors)
    for stroke, r, colour in zip(doc.points, doc.widths, doc.colors):
        assert len(stroke) >= 4 and (len(stroke) - 1) % 3 == 0
        assert all(math.isfinite(x) and math.isfinite(y) for x, y in stroke)
        assert math.isfinite(r) and r >= 0
        assert all(0 <= c <= 1 for c in colour)
    try:
        pts, widths, colors = doc.to_tensors()
    except SVGError as exc:
        assert "no strokes" in str(exc)
    else:
        assert pts.shape[0] == widths.shape[0] == colors.shape[0] >= 1


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 2**32))
def test_fuzz_generated_documents(seed: int) -> None:
    _check_outcome(_document(seed))


@settings(max_examples=1000, deadline=None)
@given(
    st.integers(0, 2**32),
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from(["set", "del", "ins"])),
        max_size=6,
    ),
    st.integers(0, 10**6),
)
def test_fuzz_mutated_documents(seed: int, edits: list[tuple[int, int, str]], cut: int) -> None:
    data = bytearray(_document(seed).encode())
    for pos, byte, kind in edits:
        i = pos % (len(data) + 1)
        if kind == "set" and i < len(data):
            data[i] = byte
        elif kind == "del" and i < len(data):
            del data[i]
        else:
            data.insert(i, byte)
    if cut % 3 == 0:
        data = data[: cut % (len(data) + 1)]
    _check_outcome(bytes(data))
    _check_outcome(bytes(data).decode("latin-1"))
