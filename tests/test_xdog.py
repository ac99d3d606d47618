"""XDoG edge maps, Gaussian blur and Otsu thresholding (clipasso.xdog)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipasso.errors import InputError
from clipasso.models import normalize
from clipasso.xdog import gaussian_blur, gaussian_kernel1d, otsu_threshold, rgb_to_grey, xdog

scipy_ndimage = pytest.importorskip("scipy.ndimage")
skimage_filters = pytest.importorskip("skimage.filters")
skimage_color = pytest.importorskip("skimage.color")


def _square(size: int = 96, lo: int = 32, hi: int = 64, dark: float = 0.1) -> torch.Tensor:
    img = torch.ones(1, 3, size, size, dtype=torch.float64)
    img[:, :, lo:hi, lo:hi] = dark
    return img


@pytest.mark.parametrize("sigma", [0.8, 8.0, 2.3])
@pytest.mark.parametrize("shape", [(31, 40), (7, 5)])  # (7, 5) with sigma 8: radius 32 >> size
def test_gaussian_blur_matches_scipy_reflect(sigma: float, shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, *shape, generator=gen, dtype=torch.float64)
    ours = gaussian_blur(x, sigma).numpy()
    ref = np.stack(
        [
            np.stack(
                [
                    scipy_ndimage.gaussian_filter(x[b, c].numpy(), sigma, mode="reflect", truncate=4.0)
                    for c in range(3)
                ]
            )
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_kernel_radius_is_scipy_truncation() -> None:
    assert gaussian_kernel1d(0.8).numel() == 2 * int(4 * 0.8 + 0.5) + 1 == 7
    assert gaussian_kernel1d(8.0).numel() == 65
    assert abs(float(gaussian_kernel1d(8.0).sum()) - 1.0) < 1e-6


def test_gaussian_blur_gradcheck() -> None:
    x = torch.rand(1, 1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 0.8), (x,), fast_mode=True)


def test_grey_matches_skimage() -> None:
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    ref = skimage_color.rgb2gray(x[0].permute(1, 2, 0).numpy())
    np.testing.assert_allclose(rgb_to_grey(x)[0, 0].numpy(), ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(seed=st.integers(0, 2**31 - 1), power=st.integers(1, 3), n=st.integers(2, 400))
def test_otsu_matches_skimage(dtype: torch.dtype, seed: int, power: int, n: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n, generator=gen, dtype=dtype) ** power
    ours = otsu_threshold(x)
    ref = np.array([skimage_filters.threshold_otsu(x[b].numpy()) for b in range(3)])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)


def test_otsu_splits_bimodal_histogram() -> None:
    gen = torch.Generator().manual_seed(0)
    low = 0.1 + 0.2 * torch.rand(500, generator=gen)
    high = 0.7 + 0.2 * torch.rand(300, generator=gen)
    x = torch.cat([low, high])[torch.randperm(800, generator=gen)].view(1, 1, 20, 40)
    t = float(otsu_threshold(x)[0])
    # t is the centre of the last bin of the lower class (skimage's convention): the lower mode's
    # largest value lies in that bin, i.e. within half a bin width above t
    half_bin = float(x.max() - x.min()) / 256 / 2
    assert float(low.max()) - half_bin <= t < float(high.min())
    assert float(low.max()) - t <= half_bin + 1e-7


def test_otsu_constant_and_batch() -> None:
    x = torch.stack([torch.full((4, 4), 0.3), torch.tensor([0.0, 1.0]).repeat(8).view(4, 4)])
    t = otsu_threshold(x)
    assert t.shape == (2,)
    assert float(t[0]) == pytest.approx(0.3)
    assert 0.0 < float(t[1]) < 1.0


def test_otsu_bad_input() -> None:
    with pytest.raises(InputError, match="NaN"):
        otsu_threshold(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(InputError, match="at least 2"):
        otsu_threshold(torch.zeros(5))


def _xdog_reference(img: np.ndarray) -> np.ndarray:
    """The recipe of METHOD §3.3 written with scipy/skimage, for one [H, W, 3] image."""
    grey = skimage_color.rgb2gray(img)
    g1 = scipy_ndimage.gaussian_filter(grey, 0.8, mode="reflect", truncate=4.0)
    g2 = scipy_ndimage.gaussian_filter(grey, 8.0, mode="reflect", truncate=4.0)
    d = g1 - 0.98 * g2
    e = np.where(d < -0.1, 1.0, 1.0 + np.tanh(200.0 * d))
    e = (e - e.min()) / (e.max() - e.min())
    return (e >= skimage_filters.threshold_otsu(e)).astype(np.float64)


def test_xdog_matches_scipy_skimage_pipeline() -> None:
    gen = torch.Generator().manual_seed(3)
    img = _square(64, 20, 44) * 0.7 + 0.3 * torch.rand(1, 3, 64, 64, generator=gen, dtype=torch.float64)
    img = (img - 0.45) / 0.27  # CLIP-like normalised range, as the initializer feeds it
    ours = xdog(img)[0, 0].numpy()
    ref = _xdog_reference(img[0].permute(1, 2, 0).numpy())
    assert (ours != ref).sum() == 0


def _distance_inside(rows: torch.Tensor, cols: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Chebyshev distance of pixels inside the square [lo, hi)² to its outermost ring (0 on the ring)."""
    return torch.minimum(torch.minimum(rows - lo, hi - 1 - rows), torch.minimum(cols - lo, hi - 1 - cols))


@pytest.mark.parametrize("normalised", [False, True])
def test_xdog_light_square_edges_lie_on_border(normalised: bool) -> None:
    lo, hi = 32, 96
    img = _square(128, lo, hi, dark=0.9)
    if normalised:  # as the saliency initializer feeds it (CLIP-normalised)
        img = normalize(img)
    e = xdog(img)[0, 0]
    assert set(torch.unique(e).tolist()) <= {0.0, 1.0}
    rows, cols = torch.nonzero(e == 0, as_tuple=True)
    assert rows.numel() > 0
    d = _distance_inside(rows, cols, lo, hi)
    assert int(d.min()) >= 0, "an edge pixel lies outside the square"
    assert int(d.max()) <= 16, "an edge pixel lies far inside the square, away from its border"
    ring = torch.zeros_like(e, dtype=torch.bool)
    ring[lo:hi, lo:hi] = True
    ring[lo + 1 : hi - 1, lo + 1 : hi - 1] = False
    assert bool((e[ring] == 0).all()), "the square's border is not entirely found"


def test_xdog_dark_square_is_inked_exactly() -> None:
    lo, hi = 32, 64
    e = xdog(normalize(_square(96, lo, hi, dark=0.1)))[0, 0]
    expected = torch.ones_like(e)
    expected[lo:hi, lo:hi] = 0.0
    assert torch.equal(e, expected)


def test_xdog_flat_image_has_no_edges() -> None:
    e = xdog(torch.full((1, 3, 16, 16), 0.5))
    assert torch.equal(e, torch.ones(1, 1, 16, 16))


def test_xdog_batch_equals_single() -> None:
    gen = torch.Generator().manual_seed(5)
    imgs = torch.cat([_square(48, 10, 30), torch.rand(1, 3, 48, 48, generator=gen, dtype=torch.float64)])
    batched = xdog(imgs)
    for b in range(2):
        assert torch.equal(batched[b], xdog(imgs[b : b + 1])[0])


def test_xdog_soft_is_in_unit_range_and_differentiable() -> None:
    img = _square(32, 8, 24).requires_grad_(True)
    e = xdog(img, binarize=False)
    assert float(e.detach().min()) == 0.0 and float(e.detach().max()) == 1.0
    e.sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_xdog_bad_input() -> None:
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        xdog(torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="floating"):
        xdog(torch.zeros(1, 3, 8, 8, dtype=torch.long))
    with pytest.raises(InputError, match="sigma"):
        xdog(torch.zeros(1, 3, 8, 8), sigma=0.0)
