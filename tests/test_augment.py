"""The reference views: torchvision-equal parameters, shared sketch/target params, seeding, batches."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
from hypothesis import given
from hypothesis import strategies as st
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from clipasso.augment import (
    ReferenceViews,
    apply_view,
    base_view,
    clip_normalize,
    sample_view_params,
)
from clipasso.errors import InputError
from clipasso.models import normalize


def _reference_pipeline() -> T.Compose:
    return T.Compose(
        [
            T.RandomPerspective(fill=0, p=1.0, distortion_scale=0.5),
            T.RandomResizedCrop(224, scale=(0.8, 0.8), ratio=(1.0, 1.0)),
        ]
    )


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("size", [(224, 224), (240, 200)])
def test_views_equal_torchvision_classes_with_the_same_seed(seed: int, size: tuple[int, int]) -> None:
    # torchvision's transform classes (what the reference calls) with the global seed vs ours with a
    # generator seeded the same: the same draws in the same order, so the same pixels.
    pair = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(99))
    pipeline = _reference_pipeline()
    torch.manual_seed(seed)
    expected = torch.stack([pipeline(pair) for _ in range(4)], dim=1)  # [2, 4, 3, 224, 224]
    views = ReferenceViews(4, normalize=False)
    xs, ys = views(pair[:1], pair[1:], generators=torch.Generator().manual_seed(seed))
    assert xs.shape == (1, 5, 3, 224, 224)
    torch.testing.assert_close(xs[:, 1:], expected[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(ys[:, 1:], expected[1:], rtol=0, atol=1e-6)


def test_view_zero_is_identity_plus_normalisation_at_224() -> None:
    img = torch.rand(2, 3, 224, 224)
    xs, ys = ReferenceViews(4)(img, img[:1], train=False)
    assert xs.shape == (2, 1, 3, 224, 224) and ys is not None and ys.shape == (1, 1, 3, 224, 224)
    torch.testing.assert_close(xs[:, 0], normalize(img), rtol=0, atol=0)
    torch.testing.assert_close(ys[:, 0], normalize(img[:1]), rtol=0, atol=0)


def test_base_view_resizes_short_side_bicubic_then_centre_crops() -> None:
    img = torch.rand(1, 3, 300, 260)
    out = base_view(img, 224)
    expected = TF.center_crop(
        TF.resize(img, [224], interpolation=InterpolationMode.BICUBIC, antialias=True), [224, 224]
    )
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_paired_with_itself_gets_identical_views(seed: int) -> None:
    img = torch.rand(3, 3, 224, 224)
    gens = [torch.Generator().manual_seed(seed + 10 * b) for b in range(3)]
    xs, ys = ReferenceViews(3)(img, img, generators=gens)
    assert ys is not None
    torch.testing.assert_close(xs, ys, rtol=0, atol=0)
    xs1, ys1 = ReferenceViews(3)(img, img, generators=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(xs1, ys1, rtol=0, atol=0)


def test_same_seed_same_views_and_other_seed_other_views() -> None:
    img = torch.rand(1, 3, 224, 224)
    a, _ = ReferenceViews(2)(img, None, generators=torch.Generator().manual_seed(3))
    b, _ = ReferenceViews(2)(img, None, generators=torch.Generator().manual_seed(3))
    c, _ = ReferenceViews(2)(img, None, generators=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a[:, 1:] - c[:, 1:]).abs().max() > 1e-3
    # The module's own generator: two fresh modules with one seed agree; successive calls differ.
    m1, m2 = ReferenceViews(2, seed=7), ReferenceViews(2, seed=7)
    first, _ = m1(img)
    torch.testing.assert_close(first, m2(img)[0], rtol=0, atol=0)
    second, _ = m1(img)
    assert (first[:, 1:] - second[:, 1:]).abs().max() > 1e-3
    m1.reset()
    torch.testing.assert_close(m1(img)[0], first, rtol=0, atol=0)


def test_per_sketch_generators_equal_separate_calls() -> None:
    sketches = torch.rand(3, 3, 224, 224)
    target = torch.rand(1, 3, 224, 224)
    views = ReferenceViews(2)
    xs, ys = views(sketches, target, generators=[torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    assert ys is not None and ys.shape[0] == 3
    for b, s in enumerate((1, 2, 3)):
        x1, y1 = views(sketches[b : b + 1], target, generators=[torch.Generator().manual_seed(s)])
        assert y1 is not None
        torch.testing.assert_close(xs[b : b + 1], x1, rtol=0, atol=0)
        torch.testing.assert_close(ys[b : b + 1], y1, rtol=0, atol=0)


def test_single_generator_shares_views_across_the_batch() -> None:
    img = torch.rand(1, 3, 224, 224)
    xs, ys = ReferenceViews(2)(img.expand(3, -1, -1, -1), img, generators=torch.Generator().manual_seed(0))
    assert ys is not None and ys.shape[0] == 1  # one target batch, computed once
    for b in range(3):
        torch.testing.assert_close(xs[b], xs[0], rtol=0, atol=0)
    torch.testing.assert_close(xs[:1], ys, rtol=0, atol=0)
    # Independent generators give different views of the same image.
    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    xi, _ = ReferenceViews(2)(img.expand(3, -1, -1, -1), None, generators=gens)
    assert (xi[0, 1:] - xi[1, 1:]).abs().max() > 1e-3


def test_fill_is_black_before_normalisation() -> None:
    white = torch.ones(1, 3, 224, 224)
    params = sample_view_params(224, 224, torch.Generator().manual_seed(0))
    raw = apply_view(white, params, 224)
    assert raw.min() < 1e-3  # black corners pulled in by the perspective
    assert raw.max() <= 1.0 + 1e-6
    xs, _ = ReferenceViews(1, identity_view=False)(white, generators=torch.Generator().manual_seed(0))
    black = clip_normalize(torch.zeros(3, 1, 1))[:, 0, 0]
    corner = xs[0, 0, :, 0, 0]
    torch.testing.assert_close(corner, black, rtol=0, atol=0.05)


@given(
    height=st.integers(min_value=8, max_value=400),
    width=st.integers(min_value=8, max_value=400),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    scale=st.floats(min_value=0.1, max_value=1.0),
)
def test_sampled_params_are_within_the_image(height: int, width: int, seed: int, scale: float) -> None:
    p = sample_view_params(height, width, torch.Generator().manual_seed(seed), crop_scale=(scale, scale))
    dw, dh = int(0.5 * (width // 2)), int(0.5 * (height // 2))
    xs = [e[0] for e in p.endpoints]
    ys = [e[1] for e in p.endpoints]
    assert all(0 <= x < width for x in xs) and all(0 <= y < height for y in ys)
    assert xs[0] <= dw and xs[3] <= dw and xs[1] >= width - dw - 1 and xs[2] >= width - dw - 1
    assert ys[0] <= dh and ys[1] <= dh and ys[2] >= height - dh - 1 and ys[3] >= height - dh - 1
    top, left, h, w = p.crop
    assert 0 <= top and 0 <= left and top + h <= height and left + w <= width and h > 0 and w > 0


def test_default_crop_is_200_pixels_at_224() -> None:
    for seed in range(5):
        p = sample_view_params(224, 224, torch.Generator().manual_seed(seed))
        assert p.crop[2:] == (200, 200)  # round(sqrt(0.8) * 224)


def test_views_are_differentiable() -> None:
    img = torch.rand(1, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    params = sample_view_params(10, 10, torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda x: apply_view(x, params, 8), (img,))
    sketch = torch.rand(2, 3, 224, 224, requires_grad=True)
    xs, _ = ReferenceViews(2)(sketch, torch.rand(1, 3, 224, 224))
    xs.square().sum().backward()
    assert sketch.grad is not None and torch.isfinite(sketch.grad).all() and sketch.grad.abs().sum() > 0


def test_bad_inputs_raise_input_error() -> None:
    views = ReferenceViews(2)
    with pytest.raises(InputError, match="sketch"):
        views(torch.rand(3, 224, 224))
    with pytest.raises(InputError, match="target batch"):
        views(torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32))
    with pytest.raises(InputError, match="size"):
        views(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 30, 32))
    with pytest.raises(InputError, match="generators"):
        views(torch.rand(2, 3, 32, 32), generators=[torch.Generator()])
    with pytest.raises(InputError, match="num_views"):
        ReferenceViews(-1)
    with pytest.raises(InputError, match="distortion_scale"):
        ReferenceViews(1, distortion_scale=2.0)
