"""The weights-free saliency (clipasso.init.weights_free) and its use by the initializers."""

from __future__ import annotations

import urllib.error
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipasso.errors import InputError, WeightsError
from clipasso.init import EdgeInitializer, SaliencyInitializer
from clipasso.init.edges import border_is_plain
from clipasso.init.weights_free import (
    colour_contrast,
    fill_holes,
    rgb_to_lab,
    spectral_residual,
    weights_free_mask,
    weights_free_relevance,
    weights_free_saliency,
)
from clipasso.metrics import binary_dilate


def _textured_scene(seed: int = 0, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A red-orange disc over a grey, blotchy random texture, and its mask."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, size // 4, size // 4, generator=g)
    texture = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear")
    texture = 0.35 + 0.3 * texture + 0.08 * torch.rand(1, 1, size, size, generator=g)
    img = texture.expand(1, 3, size, size).clone()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((yy - 0.55 * size) ** 2 + (xx - 0.45 * size) ** 2 < (0.22 * size) ** 2).float()[None, None]
    colour = torch.tensor([0.9, 0.35, 0.1]).view(1, 3, 1, 1)
    img = img * (1 - mask) + colour * mask
    return img.clamp(0, 1), mask


def test_lab_of_known_colours() -> None:
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 3, 1)
    lab = rgb_to_lab(rgb)[0, :, :, 0].T
    # CIE L*a*b* (D65) of sRGB white, black and red: (100, 0, 0), (0, 0, 0), (53.24, 80.09, 67.20)
    expect = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20]])
    assert torch.allclose(lab, expect, atol=0.05)


def test_maps_have_the_image_size_and_range() -> None:
    img, _ = _textured_scene()
    for fn in (spectral_residual, colour_contrast, weights_free_saliency, weights_free_relevance):
        s = fn(img)
        assert tuple(s.shape) == (128, 128), fn.__name__
        assert float(s.min()) >= 0 and float(s.max()) <= 1 + 1e-6, fn.__name__
    flat = torch.full((1, 3, 64, 64), 0.4)
    assert float(weights_free_saliency(flat).abs().max()) == 0.0
    with pytest.raises(InputError, match="constant"):
        weights_free_mask(flat)
    assert torch.equal(weights_free_relevance(flat), torch.ones(64, 64))  # nothing stands out


def test_fill_holes_by_hand() -> None:
    m = torch.zeros(7, 9, dtype=torch.bool)
    m[1:6, 1:6] = True
    m[2:5, 2:5] = False  # a 3x3 hole
    m[0:3, 7] = True  # a bar on the border: nothing to fill
    filled = fill_holes(m)
    assert bool(filled[2:5, 2:5].all()) and int(filled.sum()) == 25 + 3
    open_ring = m.clone()
    open_ring[3, 5] = False  # a gap in the ring: the inside is reachable from the border
    assert torch.equal(fill_holes(open_ring), open_ring)


@given(st.integers(0, 2**16), st.floats(0.3, 0.7))
def test_fill_holes_matches_scipy(seed: int, density: float) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(seed)
    m = rng.random((13, 17)) < density
    ours = fill_holes(torch.from_numpy(m)).numpy()
    assert np.array_equal(ours, ndimage.binary_fill_holes(m))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mask_finds_an_object_on_a_texture(seed: int) -> None:
    img, mask = _textured_scene(seed)
    m = weights_free_mask(img)
    inter = float((m * mask).sum())
    union = float(((m + mask) > 0).sum())
    assert inter / union > 0.7
    rel = weights_free_relevance(img)
    assert float(rel[m[0, 0] == 0].abs().max()) == 0.0  # zero off the mask


def test_edge_starts_land_on_the_object_over_a_texture() -> None:
    img, mask = _textured_scene(3)
    zone = binary_dilate(mask[0, 0] > 0.5, 3)
    share = {}
    for relevance in ("uniform", "saliency", "auto"):
        init = EdgeInitializer(relevance=relevance)
        hits = []
        for seed in range(3):
            px = init(img, 12, generator=torch.Generator().manual_seed(seed)).pixels
            assert px is not None
            hits.append(float(zone[px[:, 0], px[:, 1]].float().mean()))
        share[relevance] = sum(hits) / len(hits)
    assert share["saliency"] >= 0.9 and share["uniform"] < 0.6
    assert share["auto"] == share["saliency"]  # a textured border is not plain


def test_auto_is_the_silhouette_relevance_on_a_plain_background() -> None:
    img = torch.ones(1, 3, 96, 96)
    img[..., 20:70, 30:80] = torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1)
    assert border_is_plain(img) and not border_is_plain(_textured_scene()[0])
    a = EdgeInitializer()(img, 6, generator=torch.Generator().manual_seed(0))
    b = EdgeInitializer(relevance="silhouette")(img, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.strokes.points, b.strokes.points)
    with pytest.raises(InputError, match="relevance must be"):
        EdgeInitializer(relevance="nope")  # type: ignore[arg-type]


def test_saliency_initializer_without_vit_weights_falls_back_with_a_note(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipasso.models import loading

    def offline(url: str, timeout: float):  # type: ignore[no-untyped-def]
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(loading, "_urlopen", offline)
    monkeypatch.delenv("CLIPASSO_WEIGHTS_VIT_B_32", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    img, mask = _textured_scene(1)
    init = SaliencyInitializer(model="ViT-B/32", cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="weights-free saliency"):
        res = init(img, 8, generator=torch.Generator().manual_seed(0))
    assert init.weights_free and res.relevance is not None
    assert torch.equal(res.relevance, weights_free_relevance(img))
    zone = binary_dilate(mask[0, 0] > 0.5, 3)
    assert res.pixels is not None and float(zone[res.pixels[:, 0], res.pixels[:, 1]].float().mean()) >= 0.75
    # no fallback asked, or a weights PATH that does not exist: an error as before
    strict = SaliencyInitializer(model="ViT-B/32", cache_dir=tmp_path / "cache", fallback=False)
    with pytest.raises(WeightsError):
        strict(img, 8, generator=torch.Generator().manual_seed(0))
    missing = SaliencyInitializer(model=tmp_path / "ViT-B-32.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(WeightsError):
            missing(img, 8, generator=torch.Generator().manual_seed(0))


def test_saliency_of_a_textured_image_does_not_hang_on_rounding() -> None:
    """Rounding-level changes of the input (what another CPU's kernels make) leave the map alone
    once the image has a little texture (the module notes the noiseless synthetic case)."""
    g = torch.Generator().manual_seed(1)
    img = (0.5 + 0.05 * torch.rand(1, 1, 96, 96, generator=g)).expand(1, 3, 96, 96).clone()
    img[..., 30:70, 24:60] = torch.tensor([0.2, 0.6, 0.9]).view(3, 1, 1)
    nudged = img + 1e-6 * torch.rand(img.shape, generator=g)
    assert float((weights_free_saliency(img) - weights_free_saliency(nudged)).abs().max()) < 1e-3
