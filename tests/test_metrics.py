"""Coverage metrics (clipasso.metrics): outline, dilation, outline recall, ink precision."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipasso.errors import InputError
from clipasso.metrics import (
    binary_dilate,
    coverage,
    disc,
    ink_mask,
    ink_precision,
    outline,
    outline_recall,
)


def _square(size: int = 32, lo: int = 8, hi: int = 24) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_disc_counts_pixel_offsets_within_the_radius() -> None:
    assert [int(disc(r).sum()) for r in (0, 1, 1.5, 2, 3)] == [1, 5, 9, 13, 29]
    with pytest.raises(InputError, match="radius"):
        disc(-1)


@given(
    cells=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), min_size=0, max_size=6),
    radius=st.sampled_from([0.0, 1.0, 1.5, 2.0, 2.9]),
)
def test_dilation_is_the_set_of_pixels_within_the_radius(cells: list[tuple[int, int]], radius: float) -> None:
    x = torch.zeros(12, 12, dtype=torch.bool)
    for r, c in cells:
        x[r, c] = True
    expected = torch.zeros_like(x)
    for i in range(12):
        for j in range(12):
            expected[i, j] = any((i - r) ** 2 + (j - c) ** 2 <= radius**2 for r, c in cells)
    assert torch.equal(binary_dilate(x, radius), expected)


def test_outline_is_the_inner_boundary_and_the_canvas_border_is_not_background() -> None:
    ring = outline(_square())
    assert int(ring.sum()) == 4 * 16 - 4
    assert bool(ring[8, 8]) and bool(ring[8, 15]) and not bool(ring[9, 9]) and not bool(ring[7, 8])
    assert not bool(outline(torch.ones(16, 16, dtype=torch.bool)).any())  # fills the canvas: no outline
    corner = torch.zeros(16, 16, dtype=torch.bool)
    corner[:8, :8] = True  # touches two borders: only the two inner sides are outline
    assert int(outline(corner).sum()) == 8 + 8 - 1


def test_outline_recall_on_fixed_cases() -> None:
    mask = _square()
    ring = outline(mask)
    assert float(outline_recall(ring, mask)) == 1.0
    assert float(outline_recall(torch.zeros_like(ring), mask)) == 0.0
    shifted = torch.roll(ring, shifts=2, dims=1)  # the whole outline drawn 2 px to the right
    assert float(outline_recall(shifted, mask, tol=2.0)) == 1.0
    # at tol 1 the left side (16 px) and the right side but its 2 end pixels at each end (12) are missed
    assert float(outline_recall(shifted, mask, tol=1.0)) == pytest.approx((60 - 16 - 12) / 60)
    assert float(outline_recall(ring, outline_pixels=ring)) == 1.0
    assert math.isnan(float(outline_recall(ring, torch.zeros_like(mask))))
    with pytest.raises(InputError, match="exactly one"):
        outline_recall(ring, mask, outline_pixels=ring)
    with pytest.raises(InputError, match="differ in shape"):
        outline_recall(ring[:16], mask)


def test_ink_precision_on_fixed_cases() -> None:
    mask = _square()
    ink = torch.zeros_like(mask)
    ink[16, 10:20] = True  # on the object
    assert float(ink_precision(ink, mask)) == 1.0
    ink[16, 26:31] = True  # 5 more pixels, 3..7 px right of the object (its last column is 23)
    assert float(ink_precision(ink, mask, dilate=3.0)) == pytest.approx(11 / 15)  # 26 is within 3
    assert float(ink_precision(ink, mask, dilate=0.0)) == pytest.approx(10 / 15)
    assert math.isnan(float(ink_precision(torch.zeros_like(mask), mask)))


def test_metrics_are_batched_and_take_float_maps() -> None:
    masks = torch.stack([_square(), _square(lo=4, hi=12)]).float()[:, None]  # [2, 1, 32, 32]
    ink = outline(masks)
    ink[1] = False
    out = coverage(ink, masks)
    assert out["outline_recall"].shape == (2, 1)
    assert out["outline_recall"][:, 0].tolist() == [1.0, 0.0]
    assert out["ink_precision"][0, 0].item() == 1.0 and math.isnan(out["ink_precision"][1, 0].item())


def test_ink_mask_reads_rgba_alpha_and_strokes_over_white() -> None:
    rgba = torch.zeros(1, 4, 4, 4)
    rgba[0, 3, 1, 1], rgba[0, 3, 2, 2] = 1.0, 0.4
    assert ink_mask(rgba).nonzero().tolist() == [[0, 1, 1]]
    assert torch.equal(ink_mask(rgba[:, 3:]), ink_mask(rgba))
    over_white = 1.0 - rgba[:, 3:].expand(1, 3, 4, 4)  # black strokes composited on white
    assert torch.equal(ink_mask(over_white), ink_mask(rgba))
    assert ink_mask(rgba, threshold=0.3).sum() == 2
    with pytest.raises(InputError, match="image must be"):
        ink_mask(torch.zeros(4, 4))
