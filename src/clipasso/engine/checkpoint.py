"""Checkpoints: a run's whole state in one verified file, and the fingerprint that ties it to its run.

A checkpoint holds :meth:`RunState.state_dict` plus what the program adds (e.g. the precision a
loss chose at run time), serialised with :func:`torch.save` and stored as bytes beside their
SHA-256. :class:`Checkpointer` is what the engine calls: it resumes a run from an existing file,
and saves every ``every`` steps and at the end, atomically.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.ckpt"
    >>> _ = write_checkpoint(path, {"note": 1})
    >>> path.exists()
    True
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard, cast

import torch
from torch import Tensor

from .._io import atomic_open
from ..errors import CheckpointError
from .state import RunState

__all__ = ["CHECKPOINT_VERSION", "Checkpointer", "fingerprint", "read_checkpoint", "write_checkpoint"]

#: The layout version :func:`write_checkpoint` writes and :func:`read_checkpoint` reads.
CHECKPOINT_VERSION = 2
_CHECKPOINT_VERSION = CHECKPOINT_VERSION


def fingerprint(*parts: Any) -> str:
    """A SHA-256 over ``parts``: JSON-able values (sorted keys), strings, bytes or tensors (their bytes).

    Example:
        >>> fingerprint({"a": 1}, "x") == fingerprint({"a": 1}, "x") != fingerprint({"a": 2}, "x")
        True
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(part, bytes):
            digest.update(part)
        elif isinstance(part, str):
            digest.update(part.encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class Checkpointer:
    """Saves a run every ``every`` steps and at its end, and resumes it from an existing file.

    Args:
        path: The checkpoint file.
        every: Save after every ``every``-th step (``SketchConfig.checkpoint_every``).
        fingerprint: Identifies the settings, image and seeds; a file with another is refused.
        extra_state: Returns what the program adds to the state (e.g. ``{"precisions": [...]}``).
        load_extra_state: Restores it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: int,
        fingerprint: str,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        load_extra_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.every = every
        self.fingerprint = fingerprint
        self.extra_state = extra_state
        self.load_extra_state = load_extra_state

    def resume(self, state: RunState) -> bool:
        """Load the file into ``state`` if it exists; returns whether it did.

        Raises:
            CheckpointError: A corrupt file, or one of another run.
        """
        if not self.path.exists():
            return False
        data = read_checkpoint(self.path)
        if data["fingerprint"] != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} was written for other settings, another image or other "
                "components; delete it or pass another checkpoint path"
            )
        _check_checkpoint_shapes(data, state, self.path)
        try:
            state.load_state_dict(data)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"checkpoint {self.path} has an unusable optimizer or generator state: {exc}"
            ) from None
        if self.load_extra_state is not None:
            self.load_extra_state(data)
        return True

    def after_step(self, state: RunState) -> None:
        """Save if ``state.iteration`` (the steps done) is a multiple of ``every``."""
        if state.iteration % self.every == 0:
            self.save(state)

    def save(self, state: RunState) -> None:
        """Write the state now (atomically)."""
        payload = {"version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint, **state.state_dict()}
        payload["precisions"] = []
        if self.extra_state is not None:
            payload.update(self.extra_state())
        write_checkpoint(self.path, payload)


_CHECKPOINT_FORMAT = "clipasso-checkpoint"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _torch_load(source: Any, what: str) -> Any:
    try:
        with warnings.catch_warnings():  # a damaged pickle makes torch warn before it fails
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {what}: {_first_line(exc)}") from None


def write_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a run's state atomically as a checkpoint that :func:`read_checkpoint` verifies.

    The state is serialised with :func:`torch.save` and stored as bytes beside their SHA-256, so any
    later corruption of the file is detected.

    Args:
        path: The file (parent folders are created).
        state: What :meth:`Sketcher.sketch` saves (tensors, numbers, lists, dicts).

    Returns:
        The path.
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    body = buffer.getvalue()
    envelope = {"format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "sha256": _sha256(body)}
    envelope["payload"] = body
    with atomic_open(path, "wb") as fh:
        torch.save(envelope, fh)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint file written by :meth:`Sketcher.sketch` (``checkpoint=``).

    The file holds the run's state as bytes with their SHA-256; the bytes are checked before they
    are unpickled (with ``weights_only=True``), and the state's layout is checked after.

    Args:
        path: The checkpoint file.

    Returns:
        The saved state, a dict whose ``"fingerprint"`` identifies the settings, image and seeds.

    Raises:
        CheckpointError: A missing, truncated or corrupt file, one of another format or version,
            or one whose state is incomplete; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes)")
    envelope = _torch_load(p, str(p))
    if isinstance(envelope, dict) and "format" not in envelope and "fingerprint" in envelope:
        raise CheckpointError(
            f"checkpoint {p} was written by an older clipasso (version {envelope.get('version')!r}); "
            "delete it and run again"
        )
    if not isinstance(envelope, dict) or envelope.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a clipasso checkpoint")
    if envelope.get("version") != _CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {p} has version {envelope.get('version')!r}; this clipasso reads version "
            f"{_CHECKPOINT_VERSION} (delete it and run again)"
        )
    body = envelope.get("payload")
    if not isinstance(body, bytes) or envelope.get("sha256") != _sha256(body):
        raise CheckpointError(f"checkpoint {p} is corrupt (its checksum does not match); delete it")
    data = _torch_load(io.BytesIO(body), str(p))
    _check_checkpoint_layout(data, p)
    return cast(dict[str, Any], data)


def _is_int_list(value: Any, n: int | None = None) -> bool:
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return ok and (n is None or len(value) == n)


def _is_number_list(value: Any) -> TypeGuard[list[Any]]:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def _check_checkpoint_layout(data: Any, path: Path) -> None:
    """Every entry a resume reads, with its type and the batch size consistent."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is incomplete or damaged: {what}")

    if not isinstance(data, dict):
        raise bad(f"the state is a {type(data).__name__}")
    if data.get("version") != _CHECKPOINT_VERSION or not isinstance(data.get("fingerprint"), str):
        raise bad("no version or fingerprint")
    iteration = data.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise bad(f"iteration is {iteration!r}")
    best_loss = data.get("best_loss")
    if not _is_number_list(best_loss):
        raise bad("best_loss")
    b = len(best_loss)
    for key in ("best_iteration", "patience", "stop_iteration"):
        if not _is_int_list(data.get(key), b):
            raise bad(key)
    if not isinstance(data.get("stopped"), list) or len(data["stopped"]) != b:
        raise bad("stopped")
    if not all(isinstance(x, bool) for x in data["stopped"]):
        raise bad("stopped")
    last_eval = data.get("last_eval")
    if not _is_number_list(last_eval) or len(last_eval) not in (0, b):
        raise bad("last_eval")
    for key in ("points", "colors", "best_points", "best_colors", "frozen_points", "frozen_colors"):
        t = data.get(key)
        if not isinstance(t, Tensor) or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise bad(f"{key} is not a finite tensor")
    gens = data.get("generators")
    if not isinstance(gens, list) or len(gens) != b or not all(isinstance(g, Tensor) for g in gens):
        raise bad("generators")
    if not isinstance(data.get("optimizer"), dict):
        raise bad("optimizer")
    if data.get("scheduler") is not None and not isinstance(data["scheduler"], dict):
        raise bad("scheduler")
    history = data.get("train_history")
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in h.items())
        for h in history
    ):
        raise bad("train_history")
    for key, kind in (("eval_history", dict), ("snapshots", Tensor)):
        entries = data.get(key)
        if not isinstance(entries, list) or not all(
            isinstance(e, (list, tuple))
            and len(e) == 2
            and isinstance(e[0], int)
            and not isinstance(e[0], bool)
            and isinstance(e[1], kind)
            for e in entries
        ):
            raise bad(key)
    precisions = data.get("precisions")
    if not isinstance(precisions, list) or not all(isinstance(x, str) for x in precisions):
        raise bad("precisions")


def _check_checkpoint_shapes(data: dict[str, Any], state: RunState, path: Path) -> None:
    """The saved tensors and lists fit this run (the fingerprint says they should)."""
    shapes = {
        "points": state.strokes.points.shape,
        "colors": state.strokes.colors.shape,
        "best_points": state.strokes.points.shape,
        "best_colors": state.strokes.colors.shape,
        "frozen_points": state.strokes.points.shape,
        "frozen_colors": state.strokes.colors.shape,
    }
    for key, shape in shapes.items():
        if tuple(data[key].shape) != tuple(shape):
            raise CheckpointError(
                f"checkpoint {path} does not fit this run: {key} has shape {list(data[key].shape)}, "
                f"expected {list(shape)}"
            )
    if len(data["best_loss"]) != state.batch:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run: {len(data['best_loss'])} candidates, "
            f"expected {state.batch}"
        )
