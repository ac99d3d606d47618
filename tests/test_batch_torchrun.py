"""``torchrun -m clipasso sketch DIR``: 2 CPU processes (gloo, loopback) share a folder of images.

The same outputs as one process, each image written by exactly one rank, no gaps; a rank killed
mid-image loses only that image, and ``--resume`` completes exactly the missing ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipasso.cli import main

ROOT = Path(__file__).resolve().parents[1]
_CONFIG = "[sketch]\nimage_size = 32\ncheckpoint_every = 1\neval_every = 2\n"
_NAMES = ["a", "b", "c", "sub/d", "sub/e", "sub/f"]


def _photo(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((32, 32, 3), 255, np.uint8)
    arr[2 + 3 * k : 14 + 3 * k, 4 + k : 26 - k] = (40, 40 * k, 90)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], Path]:
    """A folder of 6 images (one in a subfolder), the flags, and one process's outputs."""
    root = tmp_path_factory.mktemp("torchrun")
    for k, name in enumerate(_NAMES):
        _photo(root / "in" / f"{name}.png", k)
    (root / "c.toml").write_text(_CONFIG)
    flags = ["--config", str(root / "c.toml"), "--loss", "edges", "--initializer", "random"]
    flags += ["--iterations", "4", "--num-sketches", "1", "--strokes", "3", "-q", "--device", "cpu"]
    assert main(["sketch", str(root / "in"), "-o", str(root / "one"), *flags]) == 0
    return root, flags, root / "one"


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC", "RANK", "WORLD_SIZE"))}
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the host name resolves to
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _summary(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "summary.json").read_text())


def _same_sketches(out: Path, reference: Path, names: list[str]) -> None:
    for name in names:
        ours, theirs = out / name / "sketch.svg", reference / name / "sketch.svg"
        assert ours.read_bytes() == theirs.read_bytes(), name


def test_two_ranks_write_what_one_process_writes(photos: tuple[Path, list[str], Path]) -> None:
    root, flags, one = photos
    out = root / "two"
    run = _torchrun("-m", "clipasso", "sketch", str(root / "in"), "-o", str(out), *flags)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = _summary(out)
    assert summary["world_size"] == 2 and (summary["done"], summary["failed"]) == (6, 0)
    records = summary["images"]
    assert [r["output"] for r in records] == _NAMES  # no gaps, no duplicates, in order
    # each image written by exactly one rank: pending image i belongs to rank i mod 2
    assert [r["rank"] for r in records] == [i % 2 for i in range(6)]
    for i, name in enumerate(_NAMES):
        assert json.loads((out / name / "job.json").read_text())["rank"] == i % 2
    _same_sketches(out, one, _NAMES)
    # one line per image, from its rank (the two ranks' lines may interleave in the pipe)
    assert run.stdout.count("best loss") == 6
    assert all(run.stdout.count(f"-> {out / name}/") == 1 for name in _NAMES)


def test_two_ranks_each_batch_their_own_images(photos: tuple[Path, list[str], Path]) -> None:
    """``--batch-images 2`` under torchrun: sharding stays by image (rank r: images r, r + 2, ...),
    each rank batches its own share, and the sketches are one process's to float rounding."""
    import re

    root, flags, one = photos
    out = root / "batched"
    run = _torchrun(
        "-m", "clipasso", "sketch", str(root / "in"), "-o", str(out), *flags, "--batch-images", "2"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    records = _summary(out)["images"]
    assert [r["output"] for r in records] == _NAMES and [r["status"] for r in records] == ["done"] * 6
    assert [r["rank"] for r in records] == [i % 2 for i in range(6)]

    def numbers(path: Path) -> list[float]:
        return [
            float(x)
            for x in re.findall(
                r"-?\d+(?:\.\d+)?(?:e-?\d+)?", " ".join(re.findall(r' d="([^"]*)"', path.read_text()))
            )
        ]

    for name in _NAMES:
        ours, theirs = numbers(out / name / "sketch.svg"), numbers(one / name / "sketch.svg")
        assert len(ours) == len(theirs) > 0 and np.allclose(ours, theirs, rtol=0, atol=1e-2), name


def test_a_killed_rank_loses_only_its_image_and_resume_completes_the_rest(
    photos: tuple[Path, list[str], Path],
) -> None:
    root, flags, one = photos
    out = root / "killed"
    args = ["sketch", str(root / "in"), "-o", str(out), *flags, "--checkpoint"]
    run = _torchrun(str(ROOT / "tests" / "_dying_rank.py"), *args)
    assert run.returncode != 0  # rank 1 died; torchrun stopped rank 0 too
    assert not (out / "summary.json").exists()
    finished = {n for n in _NAMES if (out / n / "job.json").is_file()}
    # rank 1 (images b, sub/d, sub/f) finished b, died in sub/d and never began sub/f
    assert "b" in finished and "sub/d" not in finished and "sub/f" not in finished
    assert (out / ".checkpoints" / "sub" / "d-3.pt").is_file()
    assert not list(out.rglob(".*.tmp"))  # nothing half-written is left (rank 0 was interrupted)

    run = _torchrun("-m", "clipasso", "sketch", *args[1:], "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = _summary(out)
    status = {r["output"]: r["status"] for r in summary["images"]}
    assert sorted(status) == sorted(_NAMES)
    assert {n for n, s in status.items() if s == "skipped"} == finished  # exactly the missing ones
    assert {n for n, s in status.items() if s == "done"} == set(_NAMES) - finished
    _same_sketches(out, one, _NAMES)
