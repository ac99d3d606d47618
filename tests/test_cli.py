"""The command line: sketches end to end, outputs, bad inputs, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipasso import outputs
from clipasso.cli import main
from clipasso.testing import tiny_clip_file


def _photo(path: Path, size: int = 64) -> Path:
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.3) ** 2
    arr = np.full((size, size, 3), 255, np.uint8)
    arr[disc] = (40, 60, 90)
    Image.fromarray(arr).save(path)
    return path


FAST = ["--iterations", "3", "--num-sketches", "2", "--strokes", "4", "-q", "--device", "cpu"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("clipasso: error:")
    return err[0]


def test_sketch_with_tiny_clip_writes_every_output(tmp_path: Path) -> None:
    img = _photo(tmp_path / "disc.png")
    code = main(
        [
            "sketch",
            str(img),
            "-o",
            str(tmp_path / "out"),
            *FAST,
            "--clip-weights",
            str(tiny_clip_file("resnet")),
            "--saliency-weights",
            str(tiny_clip_file("vit")),
        ]
    )
    assert code == 0
    out = tmp_path / "out" / "disc"
    root = ET.parse(out / "sketch.svg").getroot()
    assert root.tag.endswith("svg") and len([e for e in root.iter() if e.tag.endswith("path")]) == 4
    with Image.open(out / "sketch.png") as png:
        assert png.format == "PNG" and png.size == (448, 448)
    with Image.open(out / "progress.gif") as gif:
        assert gif.format == "GIF"
    for name in ("saliency.png", "loss.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
    scores = json.loads((out / "candidates" / "scores.json").read_text())
    assert len(scores["candidates"]) == 2
    assert sorted(p.name for p in (out / "candidates").glob("*.svg")) == ["seed0.svg", "seed1000.svg"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["num_strokes"] == 4 and config["image"] == str(img)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary folders left


def test_two_images_and_a_ladder_with_edges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", 80)
    code = main(
        [
            "sketch",
            str(a),
            str(b),
            "-o",
            str(tmp_path / "out"),
            "--loss",
            "edges",  # weights-free: the initializer defaults to edges
            "--iterations",
            "3",
            "--num-sketches",
            "1",
            "--strokes",
            "2,3",
            "-q",
        ]
    )
    assert code == 0
    for name in ("a", "b"):
        folder = tmp_path / "out" / name
        assert (folder / "strokes-2" / "sketch.svg").exists() and (
            folder / "strokes-3" / "sketch.svg"
        ).exists()
        with Image.open(folder / "ladder.png") as ladder:
            assert ladder.width > 2 * 224
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "best loss" in lines[0]


def _truncated_png(path: Path) -> Path:
    _photo(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "not found"),
        (lambda d: (d / "t.png").write_text("not an image") and d / "t.png", "cannot read image"),
        (lambda d: _truncated_png(d / "trunc.png"), "cannot read image"),
        (lambda d: (d / "z.png").write_bytes(b"") or d / "z.png", "empty"),
        (lambda d: _photo(d / "tiny.png", size=8), "too small"),
    ],
)
def test_bad_images_exit_2_without_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    bad = make(src)
    code = main(["sketch", str(bad), "-o", str(tmp_path / "out"), "--loss", "edges", *FAST])
    assert code == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_wrong_mask_size_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _photo(tmp_path / "a.png", 64)
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    code = main(
        ["sketch", str(img), "--mask", str(mask), "-o", str(tmp_path / "out"), "--loss", "edges", *FAST]
    )
    assert code == 2 and "mask" in _one_line_error(capsys)
    assert not (tmp_path / "out" / "a").exists()


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sketch", "-o", str(tmp_path)]) == 2
    assert "no IMAGE" in _one_line_error(capsys)
    assert main(["sketch", "x.png", "--strokes", "0"]) == 2
    _one_line_error(capsys)
    assert main(["sketch", "x.png", "--loss", "nope", "-q"]) == 2
    assert "unknown loss" in _one_line_error(capsys)
    assert main(["sketch", "x.png", "--target-pool", "-3", "-q"]) == 2
    assert "target_pool" in _one_line_error(capsys)
    assert main(["sketch", "x.png", "--identity-weight", "2", "-q"]) == 2
    assert "identity_weight" in _one_line_error(capsys)


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--iterations", "7", "--seed", "3", "--precision", "fp32", "--target-pool", "16"]
    flags += ["--views", "2", "--identity-weight", "0.2"]
    flags += ["--prune-after", "50", "--prune-tolerance", "0.005", "--prune-until", "300"]
    assert main(["sketch", "--print-config", *flags]) == 0
    text = capsys.readouterr().out
    assert "prune_after = 50" in text and "prune_tolerance = 0.005" in text and "prune_until = 300" in text
    assert "iterations = 7" in text and "seed = 3" in text and 'precision = "fp32"' in text
    assert "target_pool = 16" in text and "num_views = 2" in text and "identity_weight = 0.2" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["sketch", "--print-config", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == text


def test_interrupted_save_keeps_old_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = _photo(tmp_path / "a.png")
    args = [
        "sketch",
        str(img),
        "-o",
        str(tmp_path / "out"),
        "--loss",
        "edges",
        "--initializer",
        "random",
        *FAST,
    ]
    assert main(args) == 0
    old_svg = (tmp_path / "out" / "a" / "sketch.svg").read_bytes()

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "save_progress_gif", boom)  # dies half-way through writing
    assert main([*args, "--seed", "5"]) == 130
    assert (tmp_path / "out" / "a" / "sketch.svg").read_bytes() == old_svg
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]


def test_info_and_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clipasso", "info"], capture_output=True, text=True, check=True
    )
    assert "rasterizers" in out.stdout and "torch" in out.stdout and "weights" in out.stdout


def test_warm_start_from_svg(tmp_path: Path) -> None:
    img = _photo(tmp_path / "a.png")
    base = ["-o", str(tmp_path / "out"), "--loss", "edges", "--initializer", "random", *FAST]
    assert main(["sketch", str(img), *base]) == 0
    svg = tmp_path / "out" / "a" / "sketch.svg"
    warm = tmp_path / "warm.svg"
    warm.write_bytes(svg.read_bytes())
    args = ["sketch", str(img), "-o", str(tmp_path / "out2"), "--loss", "edges", "--init-svg", str(warm)]
    args += ["--saliency-weights", str(tiny_clip_file("vit")), "--iterations", "0", "--strokes", "6", "-q"]
    assert main(args) == 0
    root = ET.parse(tmp_path / "out2" / "a" / "sketch.svg").getroot()
    assert len([e for e in root.iter() if e.tag.endswith("path")]) == 6


def test_preset_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sketch", "--print-config", "--preset", "reference", "--iterations", "9"]) == 0
    text = capsys.readouterr().out
    assert 'precision = "fp32"' in text and "channels_last = false" in text and "lr = 1.0" in text
    assert "iterations = 9" in text  # flags apply on top of the preset
    assert main(["sketch", "--print-config", "--preset", "nope"]) == 2
    assert "unknown preset" in _one_line_error(capsys)


def test_prune_after_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sketch", "--print-config", "--prune-after", "50"]) == 0
    text = capsys.readouterr().out
    assert "prune_after = 50" in text and "prune_keep = 1" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["sketch", "--print-config", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == text
    assert main(["sketch", "--print-config", "--prune-after", "-1"]) == 2
    assert "prune_after" in _one_line_error(capsys)


def test_race_tolerance_flags_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    """The flags' round trip is in test_print_config_round_trips; here, the impossible settings."""
    assert main(["sketch", "--print-config", "--prune-tolerance", "0.005"]) == 2  # no race to refine
    assert "prune_tolerance" in _one_line_error(capsys)
    assert main(["sketch", "--print-config", "--prune-after", "50", "--prune-until", "10"]) == 2
    assert "prune_until (10) must be at or after prune_after (50)" in _one_line_error(capsys)


_EDGES = ["--loss", "edges", "--initializer", "random", *FAST]


@pytest.mark.parametrize("where", ["output", "image folder", "ancestor"])
def test_unusable_output_location_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """-o naming a file (or a file where a folder must go) exits 2 with one line, before the run."""
    img = _photo(tmp_path / "a.png")
    blocker = tmp_path / "taken"
    blocker.write_text("precious")
    out = {"output": blocker, "image folder": tmp_path / "out", "ancestor": blocker / "deeper"}[where]
    if where == "image folder":
        out.mkdir()
        (out / "a").write_text("precious")

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("the optimisation must not start")

    from clipasso.sketcher import Sketcher

    monkeypatch.setattr(Sketcher, "sketch", no_work)
    assert main(["sketch", str(img), "-o", str(out), *_EDGES]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)
    assert blocker.read_text() == "precious"


def test_a_failing_save_keeps_the_result_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output folder becomes unwritable during the run: the finished sketch is saved under the
    temporary directory and the message says where (exit 1)."""
    img = _photo(tmp_path / "a.png")
    out = tmp_path / "out"
    real = outputs.save_outputs_atomic

    def disk_full(write: object, folder: Path) -> Path:
        if Path(folder).parent == out:
            raise OSError(28, "No space left on device")
        return real(write, folder)

    monkeypatch.setattr(outputs, "save_outputs_atomic", disk_full)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["sketch", str(img), "-o", str(out), *_EDGES]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "they were saved in" in err
    rescued = list((tmp_path / "tmp").glob("clipasso-rescue-a-*/a/sketch.svg"))
    assert len(rescued) == 1 and str(rescued[0].parent) in err


def test_outputs_get_the_umask_modes(tmp_path: Path) -> None:
    """Files 0o666 and folders 0o777 less the umask, as `open`/`mkdir` give (not the 0o600/0o700 of
    temporary files)."""
    import os
    import stat

    img = _photo(tmp_path / "a.png")
    old = os.umask(0o027)
    try:
        assert main(["sketch", str(img), "-o", str(tmp_path / "out"), *_EDGES]) == 0
    finally:
        os.umask(old)
    folder = tmp_path / "out" / "a"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert stat.S_IMODE((folder / "candidates").stat().st_mode) == 0o750
    for name in ("sketch.svg", "sketch.png", "config.json", "candidates/scores.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o640, name


def test_missing_weights_fail_before_the_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = _photo(tmp_path / "a.png")
    missing = tmp_path / "nowhere" / "ViT-B-32.pt"
    weights = ["--clip-weights", str(tiny_clip_file("resnet")), "--saliency-weights", str(missing)]
    code = main(["sketch", str(img), "-o", str(tmp_path / "out"), "--iterations", "3", *weights])
    captured = capsys.readouterr()
    assert code == 2 and str(missing) in captured.err
    assert "0/3" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_help_and_version_do_not_import_torch() -> None:
    """`clipasso --help` / `--version` answer without importing torch (well under a second)."""
    script = (
        "import sys\nfrom clipasso.cli import main\n"
        "for argv in (['--version'], ['--help'], ['sketch', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_weights_free_mode_starts_on_edges_and_reseeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sketch", "--print-config", "--loss", "edges"]) == 0
    text = capsys.readouterr().out
    assert 'initializer = "edges"' in text and "reseed_every" not in text  # None: 50 for edges
    assert main(["sketch", "--print-config", "--loss", "edges", "--initializer", "random"]) == 0
    assert 'initializer = "random"' in capsys.readouterr().out
    assert main(["sketch", "--print-config", "--loss", "edges", "--reseed-every", "0"]) == 0
    assert "reseed_every = 0" in capsys.readouterr().out
    assert main(["sketch", "x.png", "--reseed-every", "-1", "-q"]) == 2
    assert "reseed_every" in _one_line_error(capsys)
