"""SVG round trips with diffvg's own reader and writer (``pydiffvg.svg_to_scene`` / ``save_svg``).

Our SVG read by diffvg must be the same scene (and so render like our raster), and diffvg's SVG must
read back into the same strokes. Skipped unless the real diffvg is installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipasso.render import list_rasterizers, rasterize
from clipasso.svg import read_svg, write_svg

pytestmark = [
    pytest.mark.diffvg,
    pytest.mark.skipif("diffvg" not in list_rasterizers(), reason="the real diffvg is not installed"),
]

SIZE = (40, 48)  # (H, W): not square, so a swapped width and height shows


def _strokes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Five 2-segment strokes; colours on the 1/255 grid (pydiffvg reads hex and integer rgb() only)."""
    g = torch.Generator().manual_seed(0)
    p0 = torch.rand(5, 1, 2, generator=g) * torch.tensor([36.0, 28.0]) + 6
    pts = torch.cat([p0, p0 + (8 * (torch.rand(5, 6, 2, generator=g) - 0.5)).cumsum(1)], 1)
    widths = torch.tensor([1.5, 0.8, 2.0, 1.25, 1.0])
    rgb = torch.randint(0, 256, (5, 3), generator=g) / 255.0
    colors = torch.cat([rgb, torch.tensor([[1.0], [0.6], [0.8], [1.0], [0.5]])], 1)
    return pts, widths, colors


def test_our_svg_read_by_diffvg_is_our_scene_and_renders_like_our_raster(tmp_path: Path) -> None:
    import pydiffvg

    pts, widths, colors = _strokes()
    path = write_svg(tmp_path / "ours.svg", pts, widths, colors, SIZE)
    w, h, shapes, groups = pydiffvg.svg_to_scene(str(path))
    assert (h, w) == SIZE and len(shapes) == len(groups) == 5
    for i, (shape, group) in enumerate(zip(shapes, groups)):
        assert shape.num_control_points.tolist() == [2, 2] and not shape.is_closed
        assert torch.allclose(shape.points, pts[i], atol=1e-4)  # written with 4 decimals
        assert abs(float(shape.stroke_width) - float(widths[i])) < 1e-6  # stroke-width 2r read as r
        assert group.fill_color is None
        assert torch.allclose(group.stroke_color, colors[i], atol=1e-6)
    # diffvg renders the scene it read as our diffvg backend renders our strokes: the same samples
    scene = pydiffvg.RenderFunction.serialize_scene(w, h, shapes, groups)
    theirs = pydiffvg.RenderFunction.apply(w, h, 2, 2, 0, None, *scene).permute(2, 0, 1)
    ours = rasterize(pts, widths, colors, size=SIZE, backend="diffvg")[0]
    assert float((theirs[3] - ours[3]).abs().max()) <= 0.25  # a sample may flip at a rounded point
    assert float((theirs[3] - ours[3]).abs().mean()) < 1e-3
    # ... and like our torch raster, up to the 2×2 sampling noise (docs/rasterizer.md)
    exact = rasterize(pts, widths, colors, size=SIZE, backend="torch")[0]
    inked = (theirs[3] > 0) | (exact[3] > 0)
    assert float((theirs[3] - exact[3]).abs()[inked].mean()) < 0.1


def test_diffvg_svg_reads_back_into_the_same_strokes(tmp_path: Path) -> None:
    import pydiffvg

    pts, widths, colors = _strokes()
    shapes = [
        pydiffvg.Path(
            num_control_points=torch.tensor([2, 2]), points=p.contiguous(), stroke_width=r, is_closed=False
        )
        for p, r in zip(pts, widths)
    ]
    groups = [
        pydiffvg.ShapeGroup(shape_ids=torch.tensor([i]), fill_color=None, stroke_color=c)
        for i, c in enumerate(colors)
    ]
    path = tmp_path / "theirs.svg"
    pydiffvg.save_svg(str(path), SIZE[1], SIZE[0], shapes, groups)
    doc = read_svg(path)
    assert doc.canvas_size == SIZE
    assert doc.segment_counts() == [2] * 5
    assert torch.allclose(
        torch.tensor(doc.points, dtype=torch.float64), pts.double(), atol=1e-6
    )  # float32 written in full
    assert torch.allclose(
        torch.tensor(doc.widths, dtype=torch.float64), widths.double(), atol=1e-6
    )  # 2r written, r read
    back = torch.tensor(doc.colors, dtype=torch.float64)
    assert torch.allclose(back[:, 3], colors[:, 3].double(), atol=1e-6)
    # save_svg writes int(255·c): a colour off the 1/255 grid would come back up to 1/255 darker
    assert torch.allclose(back[:, :3], colors[:, :3].double(), atol=1e-6)
    again = rasterize(
        torch.tensor(doc.points, dtype=torch.float64),
        torch.tensor(doc.widths, dtype=torch.float64),
        back,
        size=SIZE,
        backend="torch",
    )
    original = rasterize(pts.double(), widths, colors, size=SIZE, backend="torch")
    assert torch.allclose(again, original, atol=1e-5)


@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="known gap: clipasso.svg writes colours off the 1/255 grid as rgb(p%, ...), which "
    "pydiffvg's reader cannot parse (it reads hex and integer rgb() only)",
)
def test_diffvg_reads_our_colours_off_the_255_grid(tmp_path: Path) -> None:
    import pydiffvg

    pts, widths, _ = _strokes()
    colors = torch.tensor([0.3, 0.2, 0.1, 1.0]).expand(5, 4)
    path = write_svg(tmp_path / "ours.svg", pts, widths, colors, SIZE)
    _, _, _, groups = pydiffvg.svg_to_scene(str(path))
    assert torch.allclose(groups[0].stroke_color, colors[0], atol=1 / 255)
