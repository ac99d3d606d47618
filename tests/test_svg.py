"""Tests of clipasso.svg: writing, exact round trips and foreign SVG parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipasso.errors import SVGError
from clipasso.svg import parse_path_data, parse_svg, read_svg, strokes_to_svg, write_svg


def _svg(body: str, size: str = 'width="100" height="80" viewBox="0 0 100 80"') -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" {size}>{body}</svg>'


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 3), n=st.integers(1, 6))
def test_round_trip_is_exact(seed: int, k: int, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3 * k + 1, 2, generator=g, dtype=torch.float64) * 300 - 50
    widths = 0.1 + 3 * torch.rand(n, generator=g, dtype=torch.float64)
    colors = torch.rand(n, 4, generator=g, dtype=torch.float64)
    doc = parse_svg(strokes_to_svg(pts, widths, colors, (200, 150)))
    assert doc.canvas_size == (200, 150)
    p2, w2, c2 = doc.to_tensors(dtype=torch.float64)
    assert float((p2 - pts).abs().max()) <= 1e-3
    assert float((w2 - widths).abs().max()) <= 1e-3
    assert float((c2 - colors).abs().max()) <= 1e-3


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


def test_viewbox_offset_is_removed() -> None:
    doc = parse_svg(_svg('<path d="M 15 25 L 18 25"/>', size='viewBox="10 20 30 40"'))
    assert doc.canvas_size == (40, 30) and doc.points[0][0] == (5.0, 5.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<svg", "malformed"),
        ("<html/>", "root element"),
        (_svg('<rect x="1" y="1" width="3" height="3"/>'), "<rect>"),
        (_svg('<circle cx="1" cy="1" r="3"/>'), "<circle>"),
        (_svg("<text>hi</text>"), "<text>"),
        (_svg('<g transform="scale(2)"><path d="M 0 0 L 1 1"/></g>'), "transform"),
        (_svg('<path d="M 0 0 A 5 5 0 0 1 10 10"/>'), "arc"),
        (_svg('<path d="M 0 0 C 1 1"/>'), "missing numbers"),
        (_svg('<path d="M 0 0 L 1 1" stroke="chartreuse-ish"/>'), "colour"),
        ('<svg xmlns="http://www.w3.org/2000/svg"><path d="M 0 0 L 1 1"/></svg>', "canvas size"),
    ],
)
def test_errors(text: str, match: str) -> None:
    with pytest.raises(SVGError, match=match):
        parse_svg(text)


def test_empty_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SVGError, match="no strokes"):
        parse_svg(_svg("")).to_tensors()
    with pytest.raises(SVGError, match="not found"):
        read_svg(tmp_path / "nope.svg")


def test_fill_is_ignored_with_warning() -> None:
    with pytest.warns(UserWarning, match="fill"):
        doc = parse_svg(_svg('<path d="M 0 0 L 4 4" fill="black"/>'))
    assert math.isclose(doc.widths[0], 0.5)  # SVG default stroke-width 1
