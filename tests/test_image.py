"""Target preparation (METHOD §1) and its input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipasso.errors import InputError
from clipasso.image import MIN_IMAGE_SIDE, prepare_target, read_image


def _rgba(h: int = 60, w: int = 40) -> Image.Image:
    arr = np.zeros((h, w, 4), dtype=np.uint8)
    arr[..., :3] = 30
    arr[10:30, 10:20, 3] = 255  # an opaque dark block; the rest transparent
    return Image.fromarray(arr, "RGBA")


def test_alpha_is_composited_on_white_and_kept_as_mask() -> None:
    t = prepare_target(_rgba(64, 64), size=64)
    assert t.mask is not None and t.mask.shape == (1, 1, 64, 64)
    assert t.mask[0, 0, 20, 15] == 1 and t.mask[0, 0, 50, 50] == 0
    assert torch.allclose(t.image[0, :, 50, 50], torch.ones(3))
    assert torch.allclose(t.image[0, :, 20, 15], torch.full((3,), 30 / 255), atol=1e-6)


def test_square_pil_resize_matches_pil_bicubic() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    expected = np.asarray(img.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    got = prepare_target(img).image[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_non_square_is_stretched() -> None:
    t = prepare_target(torch.rand(3, 300, 100))
    assert t.image.shape == (1, 3, 224, 224) and t.original_size == (300, 100)


def test_fix_scale_pads_to_white_square() -> None:
    img = torch.zeros(3, 100, 50)
    t = prepare_target(img, size=130, fix_scale=True)  # side = 100 + 20 = 120 -> resized to 130
    assert t.image[0, :, 65, 2].min() > 0.99  # left padding is white
    assert t.image[0, :, 65, 65].max() < 0.01  # the centre is the black image


def test_explicit_mask_and_matting() -> None:
    img = torch.rand(3, 32, 32)
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    t = prepare_target(img, size=32, mask=mask)
    assert t.mask is not None and torch.equal(t.mask[0, 0], mask)

    def matting(x: torch.Tensor) -> torch.Tensor:
        return mask[None, None]

    t = prepare_target(img, size=32, matting=matting)
    assert torch.allclose(t.image[0, :, 0, 0], torch.ones(3))
    assert t.mask is not None and torch.equal(t.mask[0, 0], mask)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.png", "not found"),
        (lambda p: p, "directory"),
        (lambda p: _write(p / "empty.png", b""), "empty"),
        (lambda p: _write(p / "text.png", b"hello"), "cannot read image"),
    ],
)
def test_bad_files(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=message):
        prepare_target(make(tmp_path))


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read image"):
        prepare_target(path)


def test_bad_tensors_and_masks() -> None:
    with pytest.raises(InputError, match="too small"):
        read_image(torch.rand(3, MIN_IMAGE_SIDE - 1, 64))
    with pytest.raises(InputError, match="NaN"):
        read_image(torch.full((3, 32, 32), float("nan")))
    with pytest.raises(InputError, match="channels"):
        read_image(torch.rand(5, 32, 32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        read_image(torch.rand(3, 32, 32) * 3)
    with pytest.raises(InputError, match=r"mask .* has size 16x16 but the image is 32x32"):
        prepare_target(torch.rand(3, 32, 32), size=32, mask=torch.ones(16, 16))


def test_input_kinds_agree(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    from_path = prepare_target(path, size=48).image
    from_array = prepare_target(arr, size=48).image
    from_tensor = prepare_target(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, size=48).image
    assert torch.equal(from_path, from_array)
    torch.testing.assert_close(from_tensor, from_path, atol=1e-6, rtol=0)
