"""Tests of clipasso.strokes.StrokeSet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from clipasso.errors import InputError, SVGError
from clipasso.render import composite, rasterize
from clipasso.strokes import StrokeSet


def _points(b: int = 2, n: int = 5, k: int = 1, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p0 = torch.rand(b, n, 1, 2, generator=g) * size
    return torch.cat([p0, p0 + (0.1 * size * (torch.rand(b, n, 3 * k, 2, generator=g) - 0.5)).cumsum(2)], 2)


def test_shapes_and_defaults() -> None:
    s = StrokeSet(_points(1, 7)[0], canvas_size=64)
    assert (s.batch_size, s.num_strokes, s.num_segments, s.canvas_size) == (1, 7, 1, (64, 64))
    assert s.points.shape == (1, 7, 4, 2) and s.widths.shape == (1, 7) and s.colors.shape == (1, 7, 4)
    assert torch.all(s.widths == 1.5) and torch.equal(s.colors[0, 0], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert [n for n, _ in s.named_parameters()] == ["points"]
    assert sorted(n for n, _ in s.named_buffers()) == ["colors", "widths"]
    assert set(s.state_dict()) == {"points", "widths", "colors"}
    assert len(s) == 1 and "num_strokes=7" in repr(s)


def test_trainable_choice() -> None:
    s = StrokeSet(_points(), trainable=("points", "widths", "colors"))
    assert sorted(n for n, _ in s.named_parameters()) == ["colors", "points", "widths"]
    s2 = StrokeSet(_points(), trainable="colors")
    assert [n for n, _ in s2.named_parameters()] == ["colors"]
    with pytest.raises(InputError, match="trainable"):
        StrokeSet(_points(), trainable=("opacity",))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points": torch.zeros(3, 5, 2)}, "3k\\+1"),
        ({"points": torch.zeros(2, 3, 4, 3)}, "shape"),
        ({"points": torch.full((3, 4, 2), math.nan)}, "NaN"),
        ({"points": torch.zeros(3, 4, 2), "widths": torch.ones(4)}, "widths"),
        ({"points": torch.zeros(3, 4, 2), "colors": torch.ones(3, 3)}, "colors"),
        ({"points": torch.zeros(3, 4, 2), "widths": -1.0}, ">= 0"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        StrokeSet(**kwargs)


def test_render_matches_functional_and_gradients_flow() -> None:
    s = StrokeSet(_points(), widths=torch.rand(2, 5) + 0.5, colors=torch.rand(2, 5, 4), canvas_size=(48, 64))
    img = s.render()
    assert img.shape == (2, 3, 48, 64)
    assert torch.allclose(img, composite(rasterize(s.points, s.widths, s.colors, size=(48, 64))))
    assert torch.equal(s(), img)
    img.mean().backward()
    assert s.points.grad is not None and float(s.points.grad.abs().sum()) > 0


def test_render_at_twice_the_size_equals_scaled_set() -> None:
    s = StrokeSet(_points(1, 6, size=32), canvas_size=32)
    big = s.scaled(2)
    assert big.canvas_size == (64, 64)
    assert torch.allclose(big.points, s.points * 2) and torch.allclose(big.widths, s.widths * 2)
    assert torch.allclose(s.render(size=64), big.render(), atol=1e-5)
    r = s.resized((32, 64))
    assert torch.allclose(r.points[..., 0], s.points[..., 0] * 2) and torch.allclose(
        r.points[..., 1], s.points[..., 1]
    )
    with pytest.raises(InputError):
        s.scaled(0)


def test_indexing_cat_and_copies() -> None:
    s = StrokeSet(_points(3, 4), colors=torch.rand(3, 4, 4), trainable=("points", "colors"))
    one = s[1]
    assert one.batch_size == 1 and torch.equal(one.points[0], s.points[1].detach())
    assert torch.equal(s[-1].points[0], s.points[2].detach())
    assert one.trainable == ("points", "colors")
    both = StrokeSet.cat([s[2], s[0]])
    assert both.batch_size == 2 and torch.equal(both.colors[1], s.colors[0].detach())
    assert [x.batch_size for x in s.split()] == [1, 1, 1]
    assert torch.allclose(StrokeSet.cat(s.split()).render(), s.render())
    d = s.detach()
    d.points.data += 1
    assert not torch.equal(d.points, s.points)
    with pytest.raises(IndexError):
        s[3]
    with pytest.raises(InputError, match="concatenate"):
        StrokeSet.cat([s, StrokeSet(_points(1, 5))])


def test_clamp_colors() -> None:
    s = StrokeSet(_points(), colors=torch.tensor([0.2, -0.5, 1.5, 1.7]), trainable=("points", "colors"))
    s.clamp_colors_()
    assert torch.equal(s.colors[0, 0], torch.tensor([0.2, 0.0, 1.0, 1.0]))
    assert isinstance(s.colors, torch.nn.Parameter)


def test_svg_round_trip(tmp_path: Path) -> None:
    s = StrokeSet(
        _points(2, 5, k=2), widths=torch.rand(2, 5) + 0.3, colors=torch.rand(2, 5, 4), canvas_size=(64, 80)
    )
    t = StrokeSet.from_svg(s.to_svg(1))
    assert t.canvas_size == (64, 80) and t.num_segments == 2
    assert float((t.points - s.points[1:2]).abs().max().detach()) <= 1e-3
    assert float((t.widths - s.widths[1:2]).abs().max().detach()) <= 1e-3
    assert float((t.colors - s.colors[1:2]).abs().max().detach()) <= 1e-3
    path = s.save_svg(tmp_path / "sketch.svg", index=0)
    u = StrokeSet.from_svg(path, trainable=("points", "widths"))
    assert float((u.points - s.points[:1]).abs().max().detach()) <= 1e-3
    assert sorted(n for n, _ in u.named_parameters()) == ["points", "widths"]
    with pytest.raises(SVGError):
        StrokeSet.from_svg("<svg><rect/></svg>")
