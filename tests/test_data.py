"""Sample images: drawn ones (deterministic, with exact masks) and scikit-image's bundled photos."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from clipasso import InputError
from clipasso.data import DRAWN, PHOTOS, list_samples, load_sample, sample_tensor, save_sample
from clipasso.image import prepare_target

HAVE_SKIMAGE = True
try:
    import skimage.data  # noqa: F401
except ImportError:  # pragma: no cover - scikit-image is in the dev extra
    HAVE_SKIMAGE = False

needs_skimage = pytest.mark.skipif(not HAVE_SKIMAGE, reason="scikit-image not installed")


def test_list_samples_is_drawn_then_photos() -> None:
    assert list_samples() == [*DRAWN, *PHOTOS]
    assert {"house", "mug", "chelsea", "astronaut", "coffee", "rocket", "horse"} <= set(list_samples())


@pytest.mark.parametrize("name", list(DRAWN))
def test_drawn_sample_is_deterministic_square_and_has_ink(name: str) -> None:
    a = np.asarray(load_sample(name, size=96))
    b = np.asarray(load_sample(name, size=96))
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert (a[0, 0] == 255).all() and (a[-1, -1] == 255).all()  # white corners (background)
    assert (a.min(axis=2) < 80).mean() > 0.02  # dark outlines are drawn
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # colours, not a blank canvas


@pytest.mark.parametrize("name", list(DRAWN))
def test_drawn_sample_alpha_is_the_object_mask(name: str) -> None:
    rgba = np.asarray(load_sample(name, size=128, alpha=True))
    assert rgba.shape == (128, 128, 4)
    alpha = rgba[..., 3]
    assert alpha[0, 0] == 0 and alpha[64, 64] == 255  # corner is background, centre is object
    assert 0.15 < (alpha > 127).mean() < 0.8
    # the Sketcher reads the alpha channel as the object mask
    target = prepare_target(load_sample(name, size=128, alpha=True), size=64)
    assert target.mask is not None and target.mask.shape == (1, 1, 64, 64)
    assert target.mask[0, 0, 0, 0] == 0 and target.mask[0, 0, 32, 32] == 1


def test_sample_tensor_matches_the_pil_image() -> None:
    x = sample_tensor("house", size=48)
    assert x.shape == (1, 3, 48, 48) and x.dtype == torch.float32
    ref = torch.from_numpy(np.asarray(load_sample("house", size=48), dtype=np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(x[0], ref)


def test_save_sample_writes_a_png(tmp_path: Path) -> None:
    path = save_sample("mug", tmp_path / "sub" / "mug.png", size=40)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (40, 40) and im.mode == "RGB"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize("bad", [0, 15, -3, 2.5, True, "64"])
def test_bad_size_is_an_input_error(bad: Any) -> None:
    with pytest.raises(InputError, match="size"):
        load_sample("house", size=bad)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown sample 'zebra'.*house"):
        load_sample("zebra")


@needs_skimage
@pytest.mark.parametrize("name", list(PHOTOS))
def test_photos_load_as_rgb(name: str) -> None:
    img = load_sample(name)
    assert img.mode == "RGB" and min(img.size) >= 256
    small = load_sample(name, size=100)
    assert max(small.size) == 100
    assert abs(small.size[0] / small.size[1] - img.size[0] / img.size[1]) < 0.02  # aspect kept


@needs_skimage
def test_horse_has_a_mask_and_other_photos_do_not() -> None:
    rgba = np.asarray(load_sample("horse", size=120, alpha=True))
    assert rgba.shape[2] == 4
    dark = rgba[..., :3].mean(axis=2) < 128
    inked = rgba[..., 3] > 127
    assert (dark == inked).mean() > 0.97  # the silhouette is the mask
    with pytest.raises(InputError, match="no known object mask"):
        load_sample("chelsea", alpha=True)


def test_photo_without_scikit_image_is_a_clear_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "skimage" or m.startswith("skimage.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r"scikit-image.*pip install scikit-image"):
        load_sample("coffee")
    assert np.asarray(load_sample("house", size=32)).shape == (32, 32, 3)  # drawn samples still work
