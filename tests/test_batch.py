"""Many images: finding them in folders, sharding, finished outputs, summary, resume (clipasso.batch)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clipasso import SketchConfig, batch
from clipasso.batch import BatchItem, find_images, is_finished, settings_digest, shard
from clipasso.callbacks import Callback
from clipasso.cli import main
from clipasso.distributed import World, local_device
from clipasso.errors import InputError
from clipasso.sketcher import Sketcher


def _photo(path: Path, size: int = 32, shade: int = 60) -> Path:
    """A dark box on white; ``shade`` moves and colours it (different shades: different sketches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size, 3), 255, np.uint8)
    top = 2 + shade % 11
    arr[top : top + size // 2, size // 5 : 4 * size // 5] = (40, shade, 90)
    Image.fromarray(arr).save(path)
    return path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------------------------------------- finding


def test_find_images_recursive_sorted_hidden_and_extensions(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("b.PNG", "a/z.jpeg", "a/y.JpG", "a/b/c.webp", "a/x.tif", "a/w.bmp", "a/v.tiff"):
        _touch(root / rel)
    for rel in (".hidden.png", "a/.h/x.png", "a/notes.txt", "a/anim.gif", "a/noext"):
        _touch(root / rel)
    items, problems = find_images([root])
    assert problems == []
    assert [i.name for i in items] == ["a/b/c", "a/v", "a/w", "a/x", "a/y", "a/z", "b"]
    assert [i.source.relative_to(root).as_posix() for i in items if i.source] == [
        "a/b/c.webp",
        "a/v.tiff",
        "a/w.bmp",
        "a/x.tif",
        "a/y.JpG",
        "a/z.jpeg",
        "b.PNG",
    ]


def test_files_and_folders_mixed_get_unique_names(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "cat.png")
    _touch(root / "cat.jpg")
    _touch(root / "my photo.png")
    loose = _touch(tmp_path / "cat.png")
    items, _ = find_images([loose, root])
    assert [i.name for i in items] == ["cat", "cat-2", "cat-3", "my_photo"]
    assert items[0].source == loose and items[1].source == root / "cat.jpg"


def test_symlink_loops_end_and_each_folder_is_visited_once(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "a" / "x.png")
    os.symlink(root, root / "a" / "loop")  # a -> .. -> a ...
    os.symlink(root / "a", root / "again")  # the same folder twice
    os.symlink(tmp_path / "missing.png", root / "broken.png")  # a broken link is a file that fails
    items, problems = find_images([root])
    assert problems == []
    assert [i.name for i in items] == ["a/x", "broken"]


def test_output_and_finished_folders_are_not_searched(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "a.png")
    _touch(root / "out" / "a" / "sketch.png")  # -o inside the input folder
    _touch(root / "old" / "b" / "sketch.png")  # an image folder of an earlier run
    _touch(root / "old" / "b" / "job.json")
    items, _ = find_images([root], exclude=[root / "out"])
    assert [i.name for i in items] == ["a"]


def test_empty_and_unreadable_folders_are_failed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "in" / "locked").mkdir(parents=True)
    _touch(tmp_path / "in" / "a.png")
    real = os.scandir

    def scandir(path: object) -> object:
        if Path(str(path)).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(batch.os, "scandir", scandir)
    items, problems = find_images([empty, tmp_path / "in"])
    assert [i.name for i in items] == ["a"]
    assert [(Path(p.source).name, p.status) for p in problems] == [("empty", "failed"), ("locked", "failed")]
    assert "no images" in (problems[0].reason or "") and "Permission denied" in (problems[1].reason or "")


def test_masks_are_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _touch(folder / "a.png")
    with pytest.raises(InputError, match="not for a folder"):
        find_images([folder], masks=[tmp_path / "m.png"])
    with pytest.raises(InputError, match="one mask per image"):
        find_images([folder, folder], masks=[tmp_path / "m.png"])


_PART = st.text(alphabet="abcXY.-_ 1", min_size=1, max_size=4).filter(lambda p: p not in (".", ".."))
_EXT = st.sampled_from([".png", ".PNG", ".jpg", ".Jpeg", ".txt", ".gif", ""])


@given(st.lists(st.tuples(st.lists(_PART, min_size=0, max_size=2), _PART, _EXT), max_size=12))
def test_find_images_property(tmp_path_factory: pytest.TempPathFactory, files: list) -> None:  # type: ignore[type-arg]
    """Every non-hidden image file is found once, in sorted path order, under a unique name."""
    root = tmp_path_factory.mktemp("tree")
    made: set[tuple[str, ...]] = set()
    for folders, stem, ext in files:
        rel = (*folders, stem + ext)
        try:
            _touch(root.joinpath(*rel))
        except OSError:  # a name that is a folder already, or the reverse
            continue
        made.add(rel)
    expected = sorted(
        rel
        for rel in made
        if root.joinpath(*rel).is_file()
        and not any(p.startswith(".") for p in rel)
        and os.path.splitext(rel[-1])[1].lower() in batch.IMAGE_EXTENSIONS
    )
    items, _ = find_images([root])
    assert [i.source.relative_to(root).parts for i in items if i.source] == expected
    assert len({i.name for i in items}) == len(items)
    assert find_images([root])[0] == items  # deterministic


@given(st.integers(0, 40), st.integers(1, 7))
def test_shards_partition_the_items(n: int, size: int) -> None:
    items = [BatchItem(None, str(i)) for i in range(n)]
    shares = [shard(items, r, size) for r in range(size)]
    names = [it.name for share in shares for it in share]
    assert sorted(names, key=int) == [it.name for it in items]  # no gaps, no duplicates
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(InputError):
        shard(items, size, size)


def test_world_from_env_and_one_device_per_local_rank() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    world = World.from_env({**env, "TORCHELASTIC_RESTART_COUNT": "2"})
    assert (world.rank, world.size, world.local_rank, world.restart_count) == (3, 4, 1, 2)
    assert world.distributed and not World.from_env({"RANK": "0"}).distributed
    with pytest.raises(InputError, match="not a rank"):
        World.from_env({**env, "RANK": "4"})
    with pytest.raises(InputError, match="integers"):
        World.from_env({**env, "RANK": "x"})
    assert [local_device("auto", World(r, 4, r), cuda_devices=2) for r in range(4)] == [
        "cuda:0",
        "cuda:1",
        "cuda:0",
        "cuda:1",
    ]
    assert local_device("cuda", World(1, 2, 1), cuda_devices=1) == "cuda:0"
    assert local_device("cuda:1", World(0, 2, 0), cuda_devices=2) == "cuda:1"
    assert local_device("auto", World(), cuda_devices=2) == "auto"  # one process: as configured


# ---------------------------------------------------------------------------------------------- CLI

_CONFIG = "[sketch]\nimage_size = 32\ncheckpoint_every = 1\neval_every = 2\n"


def _args(tmp_path: Path, *inputs: Path, out: str = "out", extra: tuple[str, ...] = ()) -> list[str]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(_CONFIG)
    return [
        "sketch",
        *map(str, inputs),
        "-o",
        str(tmp_path / out),
        "--config",
        str(cfg),
        "--loss",
        "edges",
        "--initializer",
        "random",
        "--iterations",
        "3",
        "--num-sketches",
        "1",
        "--strokes",
        "3",
        "-q",
        "--device",
        "cpu",
        *extra,
    ]


def test_folder_batch_keeps_going_writes_summary_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photos"
    _photo(src / "a.png")
    _photo(src / "sub" / "b.jpg", shade=120)
    (src / "sub" / "bad.png").write_text("not an image")
    loose = _photo(tmp_path / "c.png", shade=200)
    args = _args(tmp_path, src, loose)
    assert main(args) == 1  # one failure: exit 1, the others done
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipasso: error: ") and "bad.png" in err[0]
    out = tmp_path / "out"
    for name in ("a", "sub/b", "c"):
        assert (out / name / "sketch.svg").is_file() and (out / name / "job.json").is_file()
    assert not (out / "sub" / "bad").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["skipped"]) == (3, 1, 0)
    assert [(r["output"], r["status"]) for r in summary["images"]] == [
        ("a", "done"),
        ("sub/b", "done"),
        ("sub/bad", "failed"),
        ("c", "done"),
    ]
    bad = summary["images"][2]
    assert "cannot read image" in bad["reason"] and "\n" not in bad["reason"] and bad["error"] == "InputError"
    # a bad file can fail within the 1 ms the seconds are rounded to
    assert all(r["seconds"] > 0 if r["status"] == "done" else r["seconds"] >= 0 for r in summary["images"])
    assert summary["settings"]["image_size"] == 32 and summary["strokes"] == [3]
    svg = (out / "a" / "sketch.svg").read_bytes()

    # the bad file is fixed: --resume sketches it alone, the finished ones are skipped
    _photo(src / "sub" / "bad.png", shade=10)
    assert main([*args, "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["images"]] == ["skipped", "skipped", "done", "skipped"]
    assert (out / "a" / "sketch.svg").read_bytes() == svg
    # more iterations: nothing is finished for them; the image with a checkpoint (the one --resume
    # sketched) goes on from it, the others start again
    assert main([*args, "--resume", "--iterations", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 4 and summary["settings"]["iterations"] == 4


def test_a_single_file_keeps_its_exit_codes_and_writes_no_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _photo(tmp_path / "a.png")
    bad = tmp_path / "b.png"
    bad.write_text("no")
    assert main(_args(tmp_path, good, bad)) == 2  # files only: a bad input is exit 2, as before
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert (tmp_path / "out" / "a" / "job.json").is_file()
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_folder_without_images_fails_the_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(_args(tmp_path, tmp_path / "empty")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no images found" in err[0] and str(tmp_path / "empty") in err[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed"] == 1 and summary["images"][0]["status"] == "failed"


class _Interrupt(Callback):
    def on_step(self, sketcher: Any, state: Any) -> None:
        if state.iteration == 1:
            raise KeyboardInterrupt


def test_resume_continues_an_interrupted_image_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted during its second image, the batch resumes it from the checkpoint, and every
    output is what an uninterrupted run writes."""
    src = tmp_path / "photos"
    _photo(src / "a.png")
    _photo(src / "b.png", shade=150)
    assert main(_args(tmp_path, src, out="ref")) == 0
    original = Sketcher.sketch
    calls: list[str] = []

    steps: list[int] = []

    class Steps(Callback):
        def on_step(self, sketcher: Any, state: Any) -> None:
            steps.append(state.iteration)

    def sketch(self: Sketcher, image: object = None, **kwargs: object) -> object:
        calls.append(Path(str(image)).name)
        if calls[-1] == "b.png":
            self.callbacks = [*self.callbacks, _Interrupt() if calls.count("b.png") == 1 else Steps()]
        return original(self, image, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Sketcher, "sketch", sketch)
    args = _args(tmp_path, src, extra=("--checkpoint",))
    assert main(args) == 130
    out = tmp_path / "out"
    assert (out / "a" / "job.json").is_file() and not (out / "b").exists()
    assert (out / ".checkpoints" / "b-3.pt").is_file()
    assert main([*args, "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["images"]] == ["skipped", "done"]
    assert steps == [1, 2]  # b went on from its checkpoint after step 0, not from the start
    for name in ("a", "b"):
        assert (out / name / "sketch.svg").read_bytes() == (
            tmp_path / "ref" / name / "sketch.svg"
        ).read_bytes()
    assert not [p for p in out.rglob(".*.tmp")]  # the interrupted image left no temporary folder


def test_is_finished_checks_the_record(tmp_path: Path) -> None:
    img = _photo(tmp_path / "a.png")
    item = BatchItem(img, "a")
    config = SketchConfig(iterations=3)
    digest = settings_digest(config)
    folder = tmp_path / "out" / "a"
    folder.mkdir(parents=True)
    assert not is_finished(folder, item, digest, [3])  # no job.json
    (folder / "job.json").write_text("{not json")
    assert not is_finished(folder, item, digest, [3])
    key = batch._job_key(item, digest, [3])
    (folder / "job.json").write_text(json.dumps(key))
    assert is_finished(folder, item, digest, [3])
    assert not is_finished(folder, item, digest, [3, 4])  # a ladder is other work
    assert not is_finished(folder, item, settings_digest(config.replace(seed=2)), [3])
    _photo(img, shade=1)
    assert not is_finished(folder, item, digest, [3])  # the image changed


def test_a_prompt_alone_is_not_shared_over_torchrun_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["sketch", "--text", "a cat", "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- --batch-images

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _svg_numbers(path: Path) -> list[float]:
    """Every number of an SVG's path data, in order."""
    return [float(x) for d in re.findall(r' d="([^"]*)"', path.read_text()) for x in _NUMBER.findall(d)]


def _same_outputs_to_rounding(out: Path, reference: Path, names: list[str]) -> None:
    """The same files per image, the same sketches to float rounding, the same scores' seeds."""
    for name in names:
        ours, theirs = out / name, reference / name
        listing = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*"))
        assert listing == sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*")), name
        for svg in sorted(theirs.rglob("*.svg")):
            a, b = _svg_numbers(ours / svg.relative_to(theirs)), _svg_numbers(svg)
            assert len(a) == len(b) > 0 and np.allclose(a, b, rtol=0, atol=1e-2), (name, svg.name)
        ours_scores = json.loads((ours / "candidates" / "scores.json").read_text())
        their_scores = json.loads((theirs / "candidates" / "scores.json").read_text())
        assert ours_scores["best_index"] == their_scores["best_index"]
        assert [c["seed"] for c in ours_scores["candidates"]] == [
            c["seed"] for c in their_scores["candidates"]
        ]
        assert ours_scores["best_loss"] == pytest.approx(their_scores["best_loss"], rel=1e-4)


def _spy_many(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the images of every ``Sketcher.sketch_many`` call (by file name)."""
    calls: list[list[str]] = []
    original = Sketcher.sketch_many

    def sketch_many(self: Sketcher, images: Any, **kwargs: Any) -> Any:
        calls.append([Path(str(i)).name for i in images])
        return original(self, images, **kwargs)

    monkeypatch.setattr(Sketcher, "sketch_many", sketch_many)
    return calls


def test_batch_images_writes_what_one_at_a_time_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three images and a bad file, 2 images per batch: the bad file fails alone before grouping,
    the outputs, summary and exit code are those of one at a time (sketches to float rounding)."""
    src = tmp_path / "photos"
    _photo(src / "a.png")
    (src / "b.png").write_text("not an image")
    _photo(src / "c.png", shade=120)
    _photo(src / "sub" / "d.jpg", shade=200)
    flags = ("--num-sketches", "2")
    assert main(_args(tmp_path, src, out="one", extra=flags)) == 1
    capsys.readouterr()
    calls = _spy_many(monkeypatch)
    args = _args(tmp_path, src, out="two", extra=(*flags, "--batch-images", "2"))
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.png" in err[0] and "cannot read image" in err[0]
    assert calls == [["a.png", "c.png"]]  # the bad file did not join a batch; d went on alone
    one, two = (
        json.loads((tmp_path / "one" / "summary.json").read_text()),
        json.loads((tmp_path / "two" / "summary.json").read_text()),
    )
    key = [(r["output"], r["status"], r.get("error"), r.get("best_seed")) for r in one["images"]]
    assert [(r["output"], r["status"], r.get("error"), r.get("best_seed")) for r in two["images"]] == key
    assert [r["output"] for r in two["images"]] == ["a", "b", "c", "sub/d"]
    losses = {r["output"]: r.get("best_loss") for r in one["images"]}
    assert [r.get("best_loss") for r in two["images"]] == [
        pytest.approx(losses[r["output"]], rel=1e-4) if losses[r["output"]] is not None else None
        for r in two["images"]
    ]
    # a and c share their batch's optimisation: each records its share plus its own checks and writing
    done = {r["output"]: r for r in two["images"] if r["status"] == "done"}
    assert all(r["seconds"] > 0 for r in done.values())
    for name, r in done.items():
        assert json.loads((tmp_path / "two" / name / "job.json").read_text())["seconds"] == r["seconds"]
    _same_outputs_to_rounding(tmp_path / "two", tmp_path / "one", ["a", "c", "sub/d"])
    assert not (tmp_path / "two" / "b").exists() and not (tmp_path / "two" / ".checkpoints").exists()
    assert not [p for p in (tmp_path / "two").rglob(".*.tmp")]

    # --resume skips the finished ones; the fixed file is sketched (alone: nothing to batch it with)
    _photo(src / "b.png", shade=10)
    calls.clear()
    assert main([*args, "--resume"]) == 0
    again = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert [r["status"] for r in again["images"]] == ["skipped", "done", "skipped", "skipped"]
    assert calls == []


def test_a_batch_that_fails_is_sketched_again_one_image_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One image that passes the checks but fails in the run (a NaN loss, say) fails alone: its
    batch's other images are still sketched."""
    from clipasso.errors import NonFiniteLossError

    src = tmp_path / "photos"
    for k, name in enumerate("abc"):
        _photo(src / f"{name}.png", shade=40 * k + 30)
    original = Sketcher.sketch

    def sketch_many(self: Sketcher, images: Any, **kwargs: Any) -> Any:
        raise NonFiniteLossError("the loss became NaN at step 2", iteration=2, term="edges")

    def sketch(self: Sketcher, image: Any = None, **kwargs: Any) -> Any:
        if Path(str(image)).name == "b.png":
            raise NonFiniteLossError("the loss became NaN at step 2", iteration=2, term="edges")
        return original(self, image, **kwargs)

    monkeypatch.setattr(Sketcher, "sketch_many", sketch_many)
    monkeypatch.setattr(Sketcher, "sketch", sketch)
    assert main(_args(tmp_path, src, extra=("--batch-images", "3"))) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(r["output"], r["status"]) for r in summary["images"]] == [
        ("a", "done"),
        ("b", "failed"),
        ("c", "done"),
    ]
    assert summary["images"][1]["error"] == "NonFiniteLossError"


def test_each_rank_batches_its_own_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sharding stays by image: a rank's batches hold only its own images."""
    src = tmp_path / "photos"
    for k in range(5):
        _photo(src / f"{k}.png", shade=30 * k + 10)
    sk = Sketcher(
        loss="edges",
        initializer="random",
        num_strokes=3,
        iterations=2,
        num_sketches=1,
        image_size=32,
        device="cpu",
    )
    items, _ = find_images([src])
    calls = _spy_many(monkeypatch)
    written: dict[int, list[str]] = {}
    for rank in (0, 1):
        records = batch.sketch_items(sk, shard(items, rank, 2), tmp_path / "out", rank=rank, batch_images=2)
        written[rank] = [r.output for r in records if r.status == "done" and r.output]
        assert all(r.rank == rank for r in records)
    assert written == {0: ["0", "2", "4"], 1: ["1", "3"]}
    assert calls == [["0.png", "2.png"], ["1.png", "3.png"]]  # 4.png, rank 0's last, went alone
    assert sorted(json.loads((tmp_path / "out" / n / "job.json").read_text())["rank"] for n in "01234") == [
        0,
        0,
        0,
        1,
        1,
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--strokes", "2,3"), "--batch-images 2 with --strokes 2,3 (one nested run)"),
        (("--strokes", "auto"), "--batch-images 2 with --strokes auto"),
        (("--nested", "2"), "--batch-images 2 with --nested"),
        (("--checkpoint",), "--batch-images 2 with --checkpoint"),
    ],
)
def test_batch_images_refuses_what_a_batch_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    src = tmp_path / "photos"
    _photo(src / "a.png")
    assert main(_args(tmp_path, src, extra=("--batch-images", "2", *flags))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clipasso: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_batch_images_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _photo(tmp_path / "a.png")
    assert main(_args(tmp_path, tmp_path / "a.png", extra=("--batch-images", "0"))) == 2
    assert "--batch-images must be >= 1, got 0" in capsys.readouterr().err
    assert main(["sketch", "--text", "a cat", "-o", str(tmp_path / "t"), "--batch-images", "2", "-q"]) == 2
    assert "--batch-images 2 batches IMAGEs" in capsys.readouterr().err
    # --separate counts are separate runs: each count is a batch of its own
    assert (
        main(
            _args(
                tmp_path, tmp_path / "a.png", extra=("--batch-images", "2", "--strokes", "2,3", "--separate")
            )
        )
        == 0
    )
    assert (tmp_path / "out" / "a" / "strokes-2" / "sketch.svg").is_file()
    sk = Sketcher(loss="edges", num_strokes=4, nested=[2], device="cpu")
    with pytest.raises(InputError, match=r"batch_images=2 .* nested or automatic"):
        batch.sketch_folders(sk, [tmp_path / "a.png"], tmp_path / "lib", batch_images=2)
    with pytest.raises(InputError, match="positive integer"):
        batch.check_batch_images(SketchConfig(), 0)
