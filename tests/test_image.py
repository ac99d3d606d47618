"""Target preparation (METHOD §1) and its input checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clipasso import limits
from clipasso.errors import InputError
from clipasso.image import MIN_IMAGE_SIDE, prepare_target, read_image, read_mask


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


# ---------------------------------------------------------------------------------------- hostile files


def _encoded(fmt: str) -> bytes:
    yy, xx = np.mgrid[:24, :24]
    arr = np.stack([(yy * 10) % 256, (xx * 10) % 256, ((yy + xx) * 5) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(arr).save(buf, format=fmt, **options)
    return buf.getvalue()


_FORMATS = ["PNG", "JPEG", "WEBP"]
_GOOD = {fmt: _encoded(fmt) for fmt in _FORMATS}


@pytest.mark.parametrize("fmt", _FORMATS)
def test_good_files_round_trip(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"good.{fmt.lower()}"
    path.write_bytes(_GOOD[fmt])
    rgb, alpha, _ = read_image(path)
    with Image.open(io.BytesIO(_GOOD[fmt])) as img:
        expected = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    assert alpha is None and torch.equal(rgb, expected)


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(_FORMATS),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_fuzz_mutated_image_files(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    """Corrupt PNG/JPEG/WebP files give an InputError or a valid image, never another exception."""
    data = bytearray(_GOOD[fmt])
    for pos, byte in edits:
        data[pos % len(data)] = byte
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path_factory.mktemp("fuzz") / f"x.{fmt.lower()}"
    path.write_bytes(bytes(data))
    with limits.override(max_image_pixels=1 << 20):  # a damaged header may claim any size
        try:
            rgb, alpha, _ = read_image(path)
        except InputError:
            return
    assert rgb.ndim == 3 and rgb.shape[0] == 3 and min(rgb.shape[1:]) >= MIN_IMAGE_SIDE
    assert torch.isfinite(rgb).all() and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    assert alpha is None or alpha.shape[1:] == rgb.shape[1:]


def test_unusual_modes_convert_or_fail_clearly() -> None:
    for mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "LA", "PA", "RGBa"):
        rgb, _, _ = read_image(Image.new(mode, (20, 20)))
        assert rgb.shape == (3, 20, 20) and torch.isfinite(rgb).all(), mode
    with pytest.raises(InputError, match="cannot convert the La image"):
        read_image(Image.new("La", (20, 20)))


def test_mask_file_errors_name_the_mask(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"mask file not found: .*m\.png"):
        read_mask(tmp_path / "m.png", (32, 32))
    (tmp_path / "m.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=r"cannot read image .*m\.png"):
        read_mask(tmp_path / "m.png", (32, 32))
