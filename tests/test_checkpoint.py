"""Checkpoint files on hostile input: truncated, bit-flipped, foreign, old and inconsistent files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipasso import Sketcher
from clipasso.errors import CheckpointError
from clipasso.sketcher import read_checkpoint, write_checkpoint

_SETTINGS: dict[str, Any] = dict(
    loss="edges",
    initializer="random",
    num_strokes=3,
    num_sketches=2,
    iterations=4,
    eval_every=2,
    image_size=32,
    checkpoint_every=2,
    device="cpu",
)


def _image() -> torch.Tensor:
    img = torch.ones(3, 32, 32)
    img[:, 8:24, 10:22] = 0.2
    return img


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Any]:
    """The bytes of a finished run's checkpoint, and the run's result."""
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    result = Sketcher(**_SETTINGS).sketch(_image(), checkpoint=path)
    return path.read_bytes(), result


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return bool(a == b) or (a != a and b != b)


def test_a_good_file_round_trips_and_resumes(checkpoint: tuple[bytes, Any], tmp_path: Path) -> None:
    data, result = checkpoint
    path = tmp_path / "copy.ckpt"
    path.write_bytes(data)
    state = read_checkpoint(path)
    assert state["iteration"] == _SETTINGS["iterations"] and len(state["best_loss"]) == 2
    write_checkpoint(tmp_path / "again.ckpt", state)
    assert _same_state(read_checkpoint(tmp_path / "again.ckpt"), state)
    resumed = Sketcher(**_SETTINGS).sketch(_image(), checkpoint=path)  # finished: nothing to redo
    assert torch.equal(resumed.strokes.points, result.strokes.points)
    assert [c.best_loss for c in resumed.candidates] == [c.best_loss for c in result.candidates]


@settings(max_examples=400, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 2**31)),
)
def test_fuzz_truncated_and_bit_flipped_files(
    checkpoint: tuple[bytes, Any],
    tmp_path_factory: pytest.TempPathFactory,
    flips: list[tuple[int, int]],
    cut: int | None,
) -> None:
    """A damaged file is a CheckpointError; an undamaged one (e.g. a flip in unused zip padding, or
    two flips that cancel) reads back to exactly the saved state."""
    good, _ = checkpoint
    data = bytearray(good)
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path_factory.mktemp("fuzz") / "x.ckpt"
    path.write_bytes(bytes(data))
    try:
        state = read_checkpoint(path)
    except CheckpointError:
        return
    reference = tmp_path_factory.mktemp("ref") / "good.ckpt"
    reference.write_bytes(good)
    assert _same_state(state, read_checkpoint(reference))


@settings(max_examples=40, deadline=None)
@given(pos=st.integers(0, 2**31), bit=st.integers(0, 7))
def test_fuzz_resume_from_a_damaged_file(
    checkpoint: tuple[bytes, Any], tmp_path_factory: pytest.TempPathFactory, pos: int, bit: int
) -> None:
    """The whole resume path: a damaged checkpoint stops the run with a CheckpointError, never
    another exception and never a silently different result."""
    good, result = checkpoint
    data = bytearray(good)
    data[pos % len(data)] ^= 1 << bit
    path = tmp_path_factory.mktemp("resume") / "x.ckpt"
    path.write_bytes(bytes(data))
    try:
        resumed = Sketcher(**_SETTINGS).sketch(_image(), checkpoint=path)
    except CheckpointError:
        return
    assert torch.equal(resumed.strokes.points, result.strokes.points)


def test_foreign_old_and_inconsistent_files(checkpoint: tuple[bytes, Any], tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    for payload, match in [
        (b"", "empty"),
        (b"garbage", "cannot read checkpoint"),
        (None, "not a clipasso checkpoint"),
    ]:
        if payload is None:
            torch.save({"weights": torch.zeros(3)}, path)
        else:
            path.write_bytes(payload)
        with pytest.raises(CheckpointError, match=match):
            read_checkpoint(path)
    torch.save({"version": 1, "fingerprint": "abc", "points": torch.zeros(1)}, path)  # the old format
    with pytest.raises(CheckpointError, match="older clipasso"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a file"):
        read_checkpoint(tmp_path)
    path.write_bytes(checkpoint[0])
    state = read_checkpoint(path)
    for key, value, match in [
        ("best_iteration", [0], "best_iteration"),
        ("points", torch.full((1, 3, 4, 2), float("nan")), "points is not a finite tensor"),
        ("train_history", [{"total": 3}], "train_history"),
        ("iteration", -1, "iteration"),
    ]:
        write_checkpoint(path, {**state, key: value})
        with pytest.raises(CheckpointError, match=match):
            read_checkpoint(path)
    # a consistent state for another run's shapes (the fingerprint matching by construction)
    write_checkpoint(path, {**state, "points": torch.zeros(2, 5, 4, 2)})
    with pytest.raises(CheckpointError, match="does not fit this run"):
        Sketcher(**_SETTINGS).sketch(_image(), checkpoint=path)
