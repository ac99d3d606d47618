"""Resource limits (clipasso.limits): defaults, environment, overrides, and where they are enforced."""

from __future__ import annotations

import dataclasses
import struct
import threading
import zlib
from pathlib import Path

import pytest
import torch

from clipasso import Limits, SketchConfig, limits
from clipasso.errors import InputError, LimitError
from clipasso.image import prepare_target, read_image, read_mask
from clipasso.render import rasterize


def test_defaults_are_far_above_real_use() -> None:
    d = Limits()
    assert d.max_image_pixels == 178_956_970  # Pillow's own hard limit
    assert d.max_canvas_side >= 224 * 8 and d.max_strokes >= 256 and d.max_iterations >= 20 * 2000
    cfg = SketchConfig()
    assert cfg.num_strokes <= d.max_strokes and cfg.image_size <= d.max_canvas_side


def test_environment_moves_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPASSO_MAX_STROKES", "2_000")
    assert limits.get_limits().max_strokes == 2000
    limits.check_limit(2000, "max_strokes", "num_strokes")
    with pytest.raises(LimitError):
        limits.check_limit(2001, "max_strokes", "num_strokes")
    monkeypatch.setenv("CLIPASSO_MAX_STROKES", "many")
    with pytest.raises(InputError, match="CLIPASSO_MAX_STROKES='many' is not an integer"):
        limits.get_limits()
    monkeypatch.setenv("CLIPASSO_MAX_STROKES", "0")
    with pytest.raises(InputError, match="positive"):
        limits.get_limits()


def test_override_is_scoped_and_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPASSO_MAX_ITERATIONS", "50")
    seen: list[int] = []
    with limits.override(max_iterations=10) as inside:
        assert inside.max_iterations == 10 and limits.get_limits().max_iterations == 10
        thread = threading.Thread(target=lambda: seen.append(limits.get_limits().max_iterations))
        thread.start()
        thread.join()
        limits.check_limit(10, "max_iterations", "iterations")
        with pytest.raises(LimitError):
            limits.check_limit(11, "max_iterations", "iterations")
    assert seen == [50]  # another thread sees the environment, not this block
    assert limits.get_limits().max_iterations == 50
    with pytest.raises(InputError, match="unknown limit"):
        with limits.override(max_bananas=3):
            pass
    with pytest.raises(InputError, match="positive integer"):
        Limits(max_strokes=0)


def test_limit_errors_say_what_and_how() -> None:
    with pytest.raises(LimitError) as info:
        limits.check_limit(5000, "max_strokes", "num_strokes")
    exc = info.value
    assert (exc.name, exc.value, exc.limit) == ("max_strokes", 5000, 1024)
    assert "num_strokes is 5000, above the limit max_strokes = 1024" in str(exc)
    assert "CLIPASSO_MAX_STROKES" in str(exc) and isinstance(exc, InputError)


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but that holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def test_image_pixels_are_checked_before_decoding(tmp_path: Path) -> None:
    bomb = _png_header(tmp_path / "bomb.png", 100_000, 100_000)  # 10^10 pixels in 60 bytes
    with pytest.raises(LimitError, match=r"bomb\.png \(100000x100000 px\) is 10000000000") as info:
        read_image(bomb)
    assert info.value.limit == Limits().max_image_pixels
    with pytest.raises(LimitError, match="mask"):
        read_mask(bomb, (16, 16))
    with limits.override(max_image_pixels=100), pytest.raises(LimitError, match="max_image_pixels"):
        read_image(_png_header(tmp_path / "small.png", 20, 20))


def test_clipasso_limit_replaces_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (10, 20, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 1600 pixels
    rgb, _, _ = read_image(path)
    assert rgb.shape == (3, 40, 40) and Image.MAX_IMAGE_PIXELS == 100  # and its setting is restored
    with limits.override(max_image_pixels=1599), pytest.raises(LimitError, match="1600"):
        read_image(path)


def test_canvas_and_raster_sizes() -> None:
    with pytest.raises(LimitError, match="max_canvas_side"):
        prepare_target(torch.rand(3, 32, 32), size=10**6)
    pts = torch.full((1, 4, 2), 8.0)
    with pytest.raises(LimitError, match=r"100000x100000 raster"):
        rasterize(pts, 1.0, (0, 0, 0, 1), size=(100_000, 100_000))


def test_every_field_has_an_environment_variable() -> None:
    names = [f.name for f in dataclasses.fields(Limits)]
    env = {limits.env_var(n): "7" for n in names}
    assert all(getattr(Limits.from_env(env), n) == 7 for n in names)
