"""The command line on hostile and awkward inputs: one line on stderr, exit 2, nothing written;
an unexpected exception is still exit 1."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipasso import sketcher
from clipasso.cli import main

FAST = ["--iterations", "2", "--num-sketches", "1", "--strokes", "3", "-q", "--device", "cpu"]
EDGES = ["--loss", "edges", "--initializer", "random"]


def _photo(path: Path, size: int = 48) -> Path:
    arr = np.full((size, size, 3), 255, np.uint8)
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = (40, 60, 90)
    Image.fromarray(arr).save(path)
    return path


def _bomb(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return path


def _run(args: list[str], capsys: pytest.CaptureFixture[str], out: Path) -> str:
    """Run the CLI; check exit 2, one line on stderr and no output; return the line."""
    code = main([*args, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("clipasso: error:"), err
    assert not out.exists() or not any(out.iterdir())
    return err[0]


_SVG = '<svg xmlns="http://www.w3.org/2000/svg" {size}>{body}</svg>'


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_SVG.format(size='viewBox="0 0 oops"', body=""), "malformed viewBox"),
        (_SVG.format(size='viewBox="0 0 9 9"', body="<g>" * 3000 + "</g>" * 3000), "max_svg_depth"),
        (bytes(range(256)) * 8, "not text"),
        (_SVG.format(size='viewBox="0 0 9 9"', body='<path d="M 0 0 L"/>'), "missing numbers"),
        (_SVG.format(size='viewBox="0 0 9 9"', body=""), "no strokes"),
    ],
    ids=["viewbox", "deep", "binary", "path-data", "empty"],
)
def test_bad_init_svg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, match: str
) -> None:
    svg = tmp_path / "warm.svg"
    if isinstance(content, bytes):
        svg.write_bytes(content)
    else:
        svg.write_text(content)
    line = _run(
        ["sketch", str(_photo(tmp_path / "a.png")), "--loss", "edges", "--init-svg", str(svg), *FAST],
        capsys,
        tmp_path / "out",
    )
    assert match in line and "warm.svg" in line


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[sketch]\nloss_options = 3\n", "loss_options must be a table"),
        ("[sketch]\ninitializer_options = 'svg'\n", "initializer_options must be a table"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
        ("[sketch]\nimage_size = 1000000000\n", "max_canvas_side"),
        ("[sketch]\nnum_strokes = 'many'\n", "num_strokes must be a positive integer"),
        ("[sketch]\nloss_options = { nope = 1 }\n", "unexpected keyword argument 'nope'"),
        ("[sketch]\nloss_options = { sigmas = 'abc' }\n", "option sigmas must be"),
    ],
)
def test_bad_config_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, match: str
) -> None:
    cfg = tmp_path / "c.toml"
    if isinstance(content, bytes):
        cfg.write_bytes(content)
    else:
        cfg.write_text(content)
    t0 = time.perf_counter()
    line = _run(
        ["sketch", str(_photo(tmp_path / "a.png")), *EDGES, "--config", str(cfg), *FAST],
        capsys,
        tmp_path / "out",
    )
    assert match in line
    assert time.perf_counter() - t0 < 10  # fails fast: no run starts


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--iterations", "1000000000"], "max_iterations"),
        (["--strokes", "3,100000"], "max_strokes"),  # a ladder's later count is checked before work
        (["--num-sketches", "100000"], "max_sketches"),
        (["--views", "100000"], "max_views"),
        (["--device", "cuda:64"], "CUDA"),
        (["--device", "nonsense"], "invalid device"),
        (["--width", "nan"], "width must be a positive finite number"),
    ],
)
def test_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], match: str) -> None:
    if flags[:2] == ["--device", "cuda:64"] and torch.cuda.device_count() > 64:  # pragma: no cover
        pytest.skip("this machine has more than 64 CUDA devices")
    line = _run(["sketch", str(_photo(tmp_path / "a.png")), *EDGES, *FAST, *flags], capsys, tmp_path / "out")
    assert match in line


def test_image_above_the_pixel_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _run(["sketch", str(_bomb(tmp_path / "bomb.png")), *EDGES, *FAST], capsys, tmp_path / "out")
    assert "bomb.png" in line and "60000x60000" in line and "max_image_pixels = 178956970" in line
    assert "CLIPASSO_MAX_IMAGE_PIXELS" in line


def test_pixel_limit_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPASSO_MAX_IMAGE_PIXELS", "1000")
    line = _run(["sketch", str(_photo(tmp_path / "a.png")), *EDGES, *FAST], capsys, tmp_path / "out")
    assert "max_image_pixels = 1000" in line and "48x48" in line


def test_damaged_checkpoint_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _photo(tmp_path / "a.png")
    ckpt = tmp_path / "out" / ".checkpoints" / "a-3.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 not really a zip")
    code = main(["sketch", str(img), *EDGES, *FAST, "--resume", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot read checkpoint" in err[0] and "a-3.pt" in err[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".checkpoints"]  # no sketch written


def test_bad_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "RN101.pt"
    weights.write_bytes(b"\x00" * 1000)
    line = _run(
        [
            "sketch",
            str(_photo(tmp_path / "a.png")),
            "--clip-weights",
            str(weights),
            "--initializer",
            "random",
            *FAST,
        ],
        capsys,
        tmp_path / "out",
    )
    assert "RN101.pt" in line and "could not read CLIP weights" in line


def test_an_unexpected_exception_is_still_an_internal_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sketcher.Sketcher, "sketch", broken)
    code = main(["sketch", str(_photo(tmp_path / "a.png")), *EDGES, *FAST, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    # one line naming the image; the other images of a call would still be sketched
    assert code == 1 and err.strip().splitlines() == [
        f"clipasso: error: {tmp_path / 'a.png'}: internal error: ZeroDivisionError: a bug"
    ]
