"""Many images: find them in folders, plan what is left, share them over ranks, sketch, summarise.

:func:`sketch_folders` is what ``clipasso sketch DIR [DIR ...]`` runs, and works the same from a
notebook: it takes a :class:`~clipasso.sketcher.Sketcher` (one set of models serves every image)
and a list of image files and folders, and writes one output folder per image under ``out_dir``
plus ``summary.json``. The steps are public too:

1. :func:`find_images`: every image under the folders (:data:`IMAGE_EXTENSIONS`, any case;
   hidden files and folders skipped; symbolic links followed, each folder visited once, so link
   loops end), in a fixed order, each with its output name: its path below the folder it was
   found in, extension dropped (``photos/cats/tom.jpg`` → ``OUT/cats/tom/``).
2. :func:`plan`: every output location checked before any work; with ``resume``, the images that
   are finished (:func:`is_finished`) are skipped.
3. :func:`shard`: with several processes (``torchrun``, :mod:`clipasso.distributed`), rank ``r``
   of ``P`` takes pending images ``r, r + P, r + 2P, ...``: each image belongs to exactly one rank.
4. :func:`sketch_items`: each image sketched (every count of a ladder), its folder built aside and
   moved into place (so it appears complete or not at all); one bad image is recorded as failed,
   with a one-line reason, and the batch goes on.
5. The records of every rank are gathered and rank 0 writes ``summary.json`` atomically.

**Finished** means: the image's folder holds ``job.json`` (:data:`JOB_FILE`), written last into
the folder before the folder is moved into place, and its record matches this run: the same
image bytes (SHA-256), the same mask, the same stroke counts and the same settings
(:func:`settings_digest`: every :class:`~clipasso.config.SketchConfig` field except ``device``,
``threads`` and ``checkpoint_every``). An image whose folder is missing, older or from other
settings is sketched again, from its checkpoints when ``resume`` finds them.

One image is the unit of work, and of every guarantee above; with ``batch_images=K``,
:func:`sketch_items` reads and checks each image of a rank's share first (a bad one fails alone),
then optimises the next ``K`` good ones as one batch (:meth:`~clipasso.Sketcher.sketch_many`) and
writes each of them exactly as one at a time would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._io import atomic_write_text
from ._version import __version__
from .errors import BackendUnavailableError, ClipassoError, InputError, WeightsError

if TYPE_CHECKING:
    from .callbacks import Callback
    from .config import SketchConfig
    from .distributed import World
    from .result import SketchResult
    from .sketcher import Sketcher

__all__ = [
    "CHECKPOINT_DIR",
    "IMAGE_EXTENSIONS",
    "JOB_FILE",
    "SUMMARY_FILE",
    "BatchHooks",
    "BatchItem",
    "BatchSummary",
    "ItemRecord",
    "OutputRescued",
    "check_batch_images",
    "checkpoint_path",
    "find_images",
    "is_finished",
    "plan",
    "settings_digest",
    "shard",
    "sketch_folders",
    "sketch_items",
    "write_summary",
]

#: File name endings searched for in folders (compared in lower case). Files given by name are
#: read whatever their ending; GIFs are left out of folder searches (a run's own ``progress.gif``).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
#: The record that marks an image's output folder finished (see the module's docstring).
JOB_FILE = "job.json"
#: The batch's summary, in the output folder.
SUMMARY_FILE = "summary.json"
#: Checkpoints live here, in the output folder: ``<name>-<strokes>.pt``.
CHECKPOINT_DIR = ".checkpoints"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_VOLATILE = ("device", "threads", "checkpoint_every")


@dataclass(frozen=True)
class BatchItem:
    """One image of a batch.

    Attributes:
        source: The image file (None: a sketch of ``config.text`` without an image).
        name: Its output folder below the batch's output folder (``/``-separated).
        mask: Its mask file, if any.
    """

    source: Path | None
    name: str
    mask: Path | None = None


@dataclass
class ItemRecord:
    """What became of one image (an entry of ``summary.json``'s ``images``).

    Attributes:
        source: The image (or a folder, for a folder that could not be searched).
        output: The output folder's name below the output folder (None for a folder problem).
        status: ``"done"`` (sketched now), ``"failed"`` or ``"skipped"`` (finished before, see
            :func:`is_finished`).
        seconds: Time it took (for a skipped image, when it was done).
        reason: Why it failed, on one line.
        error: The error's class (``InputError``, ``CheckpointError``, ...).
        kind: ``"input"`` (bad input, missing weights: exit code 2 for a single image) or
            ``"internal"``.
        rank: The rank that sketched it.
        folder: Where the outputs are.
        best_loss, best_iteration, best_seed, candidates: Of the last count's winner (done ones).
    """

    source: str
    output: str | None
    status: Literal["done", "failed", "skipped"]
    seconds: float = 0.0
    reason: str | None = None
    error: str | None = None
    kind: Literal["input", "internal"] | None = None
    rank: int = 0
    folder: str | None = None
    best_loss: float | None = None
    best_iteration: int | None = None
    best_seed: int | None = None
    candidates: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (unset fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class BatchSummary:
    """Every image's record and the settings of a batch (``summary.json``).

    Attributes:
        records: One per image, in the order the images were found (folder problems first).
        settings: The effective settings (``SketchConfig.to_dict()``).
        strokes: The stroke counts (one, or a ladder).
        world_size: Number of processes that shared the work.
        seconds: Wall time of the batch.
    """

    records: list[ItemRecord]
    settings: dict[str, Any] = field(default_factory=dict)
    strokes: list[int] = field(default_factory=list)
    world_size: int = 1
    seconds: float = 0.0

    def _with(self, status: str) -> list[ItemRecord]:
        return [r for r in self.records if r.status == status]

    @property
    def done(self) -> list[ItemRecord]:
        """Images sketched by this run."""
        return self._with("done")

    @property
    def failed(self) -> list[ItemRecord]:
        """Images (and folders) that failed."""
        return self._with("failed")

    @property
    def skipped(self) -> list[ItemRecord]:
        """Images finished by an earlier run (``resume``)."""
        return self._with("skipped")

    @property
    def ok(self) -> bool:
        """Nothing failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data, as written to ``summary.json``."""
        return {
            "clipasso_version": __version__,
            "done": len(self.done),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "seconds": round(self.seconds, 3),
            "world_size": self.world_size,
            "strokes": list(self.strokes),
            "settings": self.settings,
            "images": [r.to_dict() for r in self.records],
        }


class BatchHooks:
    """Hooks a batch calls (progress bars, printing); every method does nothing by default."""

    def on_plan(self, items: Sequence[BatchItem], skipped: Sequence[ItemRecord]) -> None:
        """This rank's pending images, and the finished ones skipped (rank 0 only), before work."""

    def callbacks(self, item: BatchItem, num_strokes: int) -> list[Callback]:
        """Extra :class:`~clipasso.callbacks.Callback` objects for one sketch of ``item``."""
        return []

    def group_callbacks(self, items: Sequence[BatchItem], num_strokes: int) -> list[Callback]:
        """Extra callbacks for one optimisation of several items at once (``batch_images > 1``;
        its state holds every item's candidates, ``RunState.groups``); none by default."""
        return []

    def on_error(self, item: BatchItem, exc: BaseException) -> None:
        """Called while ``exc`` is being handled (a traceback can be printed here)."""

    def on_record(self, record: ItemRecord) -> None:
        """An image of this rank is done or failed."""

    def on_end(self, summary: BatchSummary) -> None:
        """The merged summary (on every rank)."""


class OutputRescued(ClipassoError):
    """The outputs could not be written where asked and were saved elsewhere."""


# ---------------------------------------------------------------------------------------------- finding


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part) or "image"


def _dir_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _search(root: Path, excluded: set[tuple[int, int]]) -> tuple[list[Path], list[ItemRecord]]:
    """Image files below ``root`` (sorted by their path below it) and folders that could not be read."""
    found: list[tuple[tuple[str, ...], Path]] = []
    problems: list[ItemRecord] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, rel = stack.pop()
        key = _dir_key(folder)
        if key is None or key in seen or key in excluded:
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(
                ItemRecord(
                    str(folder),
                    None,
                    "failed",
                    reason=f"cannot read folder: {exc.strerror or exc}",
                    error=type(exc).__name__,
                    kind="input",
                )
            )
            continue
        if any(e.name == JOB_FILE for e in entries):
            continue  # an image's output folder (of this or another run), not input
        folders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links; a broken link is not a folder
            except OSError:
                is_dir = False
            if is_dir:
                folders.append((path, (*rel, entry.name)))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(((*rel, entry.name), path))
        stack.extend(reversed(folders))  # depth first in name order: the first path to a folder wins
    found.sort(key=lambda t: t[0])
    return [p for _, p in found], problems


def find_images(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    masks: Sequence[str | os.PathLike[str]] | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> tuple[list[BatchItem], list[ItemRecord]]:
    """The images of a batch, in order, with unique output names; and the folders that failed.

    A file is taken as given (whatever its ending: reading it decides) and named after its stem.
    A folder is searched recursively for :data:`IMAGE_EXTENSIONS` (any case), skipping names that
    start with ``.``, folders under ``exclude`` (the output folder) and image output folders (they
    hold :data:`JOB_FILE`); each image is named by its path below that folder without its
    extension, characters outside ``A-Za-z0-9._-`` replaced by ``_``. A name already taken gets
    ``-2``, ``-3``, ... in that order. Symbolic links are followed, each folder once (link loops
    end). A folder that cannot be read or holds no image is a failed record, not an error.

    Args:
        inputs: Image files and folders, in the order wanted.
        masks: One mask per input, all files (masks are per image: not with folders).
        exclude: Folders not to search (the output folder).

    Returns:
        ``(items, problems)``.

    Raises:
        InputError: ``masks`` do not match ``inputs`` or come with a folder.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for rel in ("b.png", "a/c.JPG", "a/.hidden.png", "a/notes.txt"):
        ...     (root / rel).parent.mkdir(parents=True, exist_ok=True)
        ...     _ = (root / rel).write_bytes(b"")
        >>> items, problems = find_images([root])
        >>> [item.name for item in items], problems
        (['a/c', 'b'], [])
    """
    paths = [Path(p) for p in inputs]
    mask_paths = [Path(m) for m in masks] if masks else []
    if mask_paths and len(mask_paths) != len(paths):
        raise InputError(f"got {len(mask_paths)} masks for {len(paths)} images; give one mask per image")
    excluded = {k for k in (_dir_key(Path(p)) for p in exclude) if k is not None}
    items: list[BatchItem] = []
    problems: list[ItemRecord] = []
    taken: set[str] = set()

    def unique(base: str) -> str:
        name, k = base, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        return name

    for i, path in enumerate(paths):
        mask = mask_paths[i] if mask_paths else None
        if not path.is_dir():
            items.append(BatchItem(path, unique(_safe(path.stem)), mask))
            continue
        if mask is not None:
            raise InputError(f"masks are given per image file, not for a folder ({path})")
        found, bad = _search(path, excluded)
        problems.extend(bad)
        if not found and not bad:
            problems.append(
                ItemRecord(
                    str(path),
                    None,
                    "failed",
                    reason=f"no images found in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})",
                    error="InputError",
                    kind="input",
                )
            )
        for image in found:
            rel = image.relative_to(path)
            parts = [_safe(p) for p in rel.parts[:-1]] + [_safe(rel.stem)]
            items.append(BatchItem(image, unique("/".join(parts))))
    return items, problems


# ---------------------------------------------------------------------------------------------- planning


def settings_digest(config: SketchConfig) -> str:
    """SHA-256 of the settings that change a sketch (all but ``device``, ``threads``,
    ``checkpoint_every``), as recorded in :data:`JOB_FILE`.

    Example:
        >>> from clipasso import SketchConfig
        >>> settings_digest(SketchConfig(device="cpu")) == settings_digest(SketchConfig(threads=2))
        True
        >>> settings_digest(SketchConfig()) == settings_digest(SketchConfig(iterations=3))
        False
    """
    settings = config.to_dict()
    for key in _VOLATILE:
        settings.pop(key, None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _job_key(item: BatchItem, digest: str, strokes: Sequence[int]) -> dict[str, Any]:
    return {
        "source_sha256": _file_digest(item.source),
        "mask_sha256": _file_digest(item.mask),
        "strokes": list(strokes),
        "settings_sha256": digest,
    }


def is_finished(folder: str | os.PathLike[str], item: BatchItem, digest: str, strokes: Sequence[int]) -> bool:
    """Whether ``folder`` holds the finished outputs of ``item`` for these settings and counts.

    True when ``folder/job.json`` reads and records the same image and mask bytes, stroke counts
    and settings digest (:func:`settings_digest`). The folder is moved into place only when
    complete, with ``job.json`` in it, so this also means every output file is there.
    """
    job = Path(folder) / JOB_FILE
    try:
        record = json.loads(job.read_text(encoding="utf-8"))
        key = _job_key(item, digest, strokes)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and all(record.get(k) == v for k, v in key.items())


def _job_seconds(folder: Path) -> float:
    try:
        return float(json.loads((folder / JOB_FILE).read_text(encoding="utf-8")).get("seconds", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def plan(
    items: Sequence[BatchItem],
    out_dir: str | os.PathLike[str],
    *,
    config: SketchConfig,
    strokes: Sequence[int],
    resume: bool = False,
) -> tuple[list[BatchItem], list[ItemRecord]]:
    """Split ``items`` into those to sketch and those finished before (skipped; only with ``resume``).

    Every output location is checked first (:func:`~clipasso.outputs.check_output_folder`).

    Returns:
        ``(pending, skipped)``.

    Raises:
        InputError: An output location cannot be used (a file in the way, not writable).
    """
    from .outputs import check_output_folder

    out = Path(out_dir)
    for item in items:
        check_output_folder(out / item.name)
    digest = settings_digest(config)
    pending: list[BatchItem] = []
    skipped: list[ItemRecord] = []
    for item in items:
        folder = out / item.name
        if resume and is_finished(folder, item, digest, strokes):
            skipped.append(
                ItemRecord(
                    str(item.source),
                    item.name,
                    "skipped",
                    seconds=_job_seconds(folder),
                    folder=str(folder),
                )
            )
        else:
            pending.append(item)
    return pending, skipped


def shard(items: Sequence[BatchItem], rank: int, size: int) -> list[BatchItem]:
    """Rank ``rank``'s share of ``items`` out of ``size`` ranks: items ``rank, rank + size, ...``.

    Example:
        >>> items = [BatchItem(None, str(i)) for i in range(5)]
        >>> [[it.name for it in shard(items, r, 2)] for r in range(2)]
        [['0', '2', '4'], ['1', '3']]
    """
    if size < 1 or not 0 <= rank < size:
        raise InputError(f"rank {rank} is not a rank of a world of {size}")
    return list(items[rank::size])


def checkpoint_path(out_dir: str | os.PathLike[str], name: str, num_strokes: int) -> Path:
    """Where the checkpoint of image ``name`` with ``num_strokes`` strokes lives."""
    return Path(out_dir) / CHECKPOINT_DIR / f"{name}-{num_strokes}.pt"


# ---------------------------------------------------------------------------------------------- sketching


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _publish(write: Any, folder: Path) -> Path:
    """Build ``folder`` aside with ``write`` and move it into place; if that fails (a full disk, a
    folder made read-only during the run), save it under the temporary directory and say where."""
    import tempfile

    from . import outputs

    try:
        return outputs.save_outputs_atomic(write, folder)
    except (OSError, InputError) as exc:
        rescue = Path(tempfile.mkdtemp(prefix=f"clipasso-rescue-{folder.name}-"))
        saved = outputs.save_outputs_atomic(write, rescue / folder.name)
        raise OutputRescued(
            f"could not write the outputs to {folder} ({exc}); they were saved in {saved} instead"
        ) from exc


def _failed(
    item: BatchItem, what: str, exc: BaseException, seconds: float, rank: int, hooks: BatchHooks
) -> ItemRecord:
    """The failed record of ``item`` (call while ``exc`` is being handled)."""
    hooks.on_error(item, exc)
    user = isinstance(exc, (InputError, WeightsError, BackendUnavailableError))
    reason = (
        _one_line(exc) if isinstance(exc, ClipassoError) else f"internal error: {type(exc).__name__}: {exc}"
    )
    return ItemRecord(
        what,
        item.name,
        "failed",
        seconds=round(seconds, 3),
        reason=" ".join(reason.split()),
        error=type(exc).__name__,
        kind="input" if user else "internal",
        rank=rank,
    )


def _what(sketcher: Sketcher, item: BatchItem) -> str:
    """How records and messages name ``item``: its file, else its prompts, else its name."""
    if item.source is not None:
        return str(item.source)
    prompts = " | ".join(sketcher.config.text or [])
    return repr(prompts) if prompts else item.name


def _check_item(sketcher: Sketcher, item: BatchItem, digest: str, counts: Sequence[int]) -> dict[str, Any]:
    """Read and check ``item``'s image and mask (a bad one fails here, before any work or output)
    and return its :data:`JOB_FILE` key, of the bytes read now (not of a file changed meanwhile)."""
    from .image import prepare_target

    if item.source is not None:
        prepare_target(item.source, size=sketcher.config.image_size, mask=item.mask)
    return _job_key(item, digest, counts)


def _finish(
    sketcher: Sketcher,
    item: BatchItem,
    out: Path,
    counts: Sequence[int],
    results: list[SketchResult],
    *,
    key: dict[str, Any],
    rank: int,
    ladder: Sequence[int] | None,
    order: bool,
    seconds: Any,
) -> ItemRecord:
    """Write ``item``'s outputs (built aside, moved into place, :data:`JOB_FILE` last) and return
    its done record; ``seconds()`` is the time to record, read when ``job.json`` is written."""
    from . import outputs

    source = str(item.source) if item.source is not None else None
    if order:  # the strokes by importance (greedy removal), most important first
        results = [sketcher.order_strokes(r) for r in results]
    shown = list(counts)
    if ladder:  # one nested run: the ladder is its prefixes
        results = [results[0].prefix(k) for k in ladder[:-1]] + [results[0]]
        shown = list(ladder)
    extra = {"image": source, "mask": str(item.mask) if item.mask else None}
    took: list[float] = []

    def write(folder: Path) -> None:
        if len(results) == 1:
            outputs.save_outputs(results[0], folder, extra_config=extra)
        else:
            for n, res in zip(shown, results):
                outputs.save_outputs(res, folder / f"strokes-{n}", extra_config=extra)
            outputs.save_ladder(results, folder / "ladder.png")
        took[:] = [round(seconds(), 3)]
        job = {
            "clipasso_version": __version__,
            "source": source,
            "mask": extra["mask"],
            **key,
            "seconds": took[0],
            "rank": rank,
        }
        atomic_write_text(folder / JOB_FILE, json.dumps(job, indent=2))  # last: marks it finished

    folder = _publish(write, out / item.name)
    best = results[-1]
    return ItemRecord(
        _what(sketcher, item),
        item.name,
        "done",
        seconds=took[0] if took else round(seconds(), 3),
        rank=rank,
        folder=str(folder),
        best_loss=float(best.best_loss),
        best_iteration=int(best.best_iteration),
        best_seed=int(best.best.seed),
        candidates=len(best.candidates),
    )


def _sketch_one(
    sketcher: Sketcher,
    item: BatchItem,
    out: Path,
    counts: Sequence[int],
    *,
    checkpoint: bool,
    resume: bool,
    hooks: BatchHooks,
    rank: int,
    digest: str,
    ladder: Sequence[int] | None = None,
    order: bool = False,
) -> ItemRecord:
    t0 = time.perf_counter()
    try:
        key = _check_item(sketcher, item, digest, counts)  # a bad image or mask fails before any output
        results: list[SketchResult] = []
        for n in counts:
            ckpt = None
            if checkpoint or resume:
                ckpt = checkpoint_path(out, item.name, n)
                if not resume and ckpt.exists():
                    ckpt.unlink()
            saved = sketcher.callbacks
            sketcher.callbacks = [*saved, *hooks.callbacks(item, n)]
            try:
                results.append(sketcher.sketch(item.source, mask=item.mask, num_strokes=n, checkpoint=ckpt))
            finally:
                sketcher.callbacks = saved
        return _finish(
            sketcher,
            item,
            out,
            counts,
            results,
            key=key,
            rank=rank,
            ladder=ladder,
            order=order,
            seconds=lambda: time.perf_counter() - t0,
        )
    except Exception as exc:  # one bad image never stops the batch
        return _failed(item, _what(sketcher, item), exc, time.perf_counter() - t0, rank, hooks)


def check_batch_images(
    config: SketchConfig,
    batch_images: int,
    *,
    checkpoint: bool = False,
    ladder: Sequence[int] | None = None,
) -> None:
    """Whether ``batch_images`` images can be optimised as one batch with these settings.

    ``batch_images=1`` (one image at a time) takes every setting. Larger groups go through
    :meth:`~clipasso.Sketcher.sketch_many`, which does not take nested or automatic stroke counts
    (nor a ladder from one nested run) and writes no checkpoints.

    Raises:
        InputError: ``batch_images`` is not a positive integer, or the settings need one image at a time.

    Example:
        >>> from clipasso import SketchConfig
        >>> check_batch_images(SketchConfig(), 4)
        >>> check_batch_images(SketchConfig(nested=[4]), 4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        clipasso.errors.InputError: batch_images=4 ... does not support nested or automatic stroke counts ...
    """
    if isinstance(batch_images, bool) or not isinstance(batch_images, int) or batch_images < 1:
        raise InputError(f"batch_images must be a positive integer, got {batch_images!r}")
    if batch_images == 1:
        return
    if config.prefix_set() is not None or config.auto_strokes or ladder:
        raise InputError(
            f"batch_images={batch_images} optimises several images as one batch, which does not support "
            "nested or automatic stroke counts (nested, auto_strokes); use batch_images=1"
        )
    if checkpoint:
        raise InputError(
            f"batch_images={batch_images} optimises several images as one batch, which writes no "
            "checkpoints; use batch_images=1 to checkpoint each image"
        )


def _each_alone(
    sketcher: Sketcher,
    group: list[tuple[int, BatchItem, dict[str, Any], float]],
    out: Path,
    counts: Sequence[int],
    *,
    hooks: BatchHooks,
    rank: int,
    digest: str,
    order: bool,
) -> list[tuple[int, ItemRecord]]:
    """Sketch checked items one at a time (no checkpoints in a batched job): ``[(index, record)]``."""
    return [
        (
            i,
            _sketch_one(
                sketcher,
                item,
                out,
                counts,
                checkpoint=False,
                resume=False,
                hooks=hooks,
                rank=rank,
                digest=digest,
                order=order,
            ),
        )
        for i, item, _, _ in group
    ]


def _sketch_group(
    sketcher: Sketcher,
    group: list[tuple[int, BatchItem, dict[str, Any], float]],
    out: Path,
    counts: Sequence[int],
    *,
    hooks: BatchHooks,
    rank: int,
    digest: str,
    order: bool,
) -> list[tuple[int, ItemRecord]]:
    """Sketch checked items as ONE batch (:meth:`~clipasso.Sketcher.sketch_many`, each count in
    turn), then write each; if the batch itself fails (a loss that became NaN for one image, an
    image the checks passed that the run cannot use), its items are sketched again one at a time,
    so only the image at fault fails. Each record's seconds: its own checks and writing plus an
    equal share of the batch's optimisation."""
    items = [item for _, item, _, _ in group]
    images = [item.source for item in items if item.source is not None]  # every item has an image
    masks = [item.mask for item in items]
    t0 = time.perf_counter()
    try:
        per_count: list[list[SketchResult]] = []
        for n in counts:
            saved_config, saved_callbacks = sketcher.config, sketcher.callbacks
            sketcher.config = saved_config.replace(num_strokes=n)
            sketcher.callbacks = [*saved_callbacks, *hooks.group_callbacks(items, n)]
            try:
                per_count.append(sketcher.sketch_many(images, masks=masks))
            finally:
                sketcher.config, sketcher.callbacks = saved_config, saved_callbacks
    except Exception:  # the items on their own say which one is at fault
        return _each_alone(sketcher, group, out, counts, hooks=hooks, rank=rank, digest=digest, order=order)
    share = (time.perf_counter() - t0) / len(group)
    records = []
    for j, (i, item, key, checked) in enumerate(group):
        t1 = time.perf_counter()
        results = [rs[j] for rs in per_count]
        try:
            record = _finish(
                sketcher,
                item,
                out,
                counts,
                results,
                key=key,
                rank=rank,
                ladder=None,
                order=order,
                seconds=lambda: checked + share + time.perf_counter() - t1,  # noqa: B023 - called now
            )
        except Exception as exc:  # a failing save fails this image only
            record = _failed(
                item, _what(sketcher, item), exc, checked + share + time.perf_counter() - t1, rank, hooks
            )
        records.append((i, record))
    return records


def sketch_items(
    sketcher: Sketcher,
    items: Sequence[BatchItem],
    out_dir: str | os.PathLike[str],
    *,
    strokes: Sequence[int] | None = None,
    checkpoint: bool = False,
    resume: bool = False,
    hooks: BatchHooks | None = None,
    rank: int = 0,
    ladder: Sequence[int] | None = None,
    order: bool = False,
    batch_images: int = 1,
) -> list[ItemRecord]:
    """Sketch ``items`` into ``out_dir``, one after another or ``batch_images`` at a time; one
    record per item, in order.

    Each item's outputs (every count of ``strokes``; a ladder gets ``strokes-<N>/`` folders and
    ``ladder.png``) are built aside and moved into ``out_dir/<name>/`` when complete, with
    :data:`JOB_FILE` last. Any error of one item (a bad image, a damaged checkpoint, a loss that
    became NaN, a failing save) is its failed record; the others go on. ``KeyboardInterrupt``
    stops the batch.

    With ``batch_images=K > 1``, each image (and mask) is read and checked first, a bad one fails
    on its own, and the next ``K`` good ones are optimised as one batch
    (:meth:`~clipasso.Sketcher.sketch_many`: the same seeds, the same results to float rounding),
    then written one by one exactly as one at a time would write them. A batch that fails as a
    whole is sketched again one image at a time, so only the image at fault fails. Settings a
    batch cannot take are refused first (:func:`check_batch_images`).

    Args:
        sketcher: The Sketcher (its models load once and serve every item).
        items: What to sketch (:func:`find_images`, :func:`shard`).
        out_dir: The batch's output folder.
        strokes: Stroke counts (default ``[config.num_strokes]``).
        checkpoint: Write checkpoints to ``out_dir/.checkpoints/`` (:func:`checkpoint_path`);
            without ``resume`` an old one is deleted first.
        resume: Continue from existing checkpoints (implies ``checkpoint``; with ``batch_images >
            1`` there are none: finished images are skipped by :func:`plan`, the rest start again).
        hooks: Progress and reporting hooks.
        rank: Recorded in each record.
        ladder: The stroke counts of a ladder taken from ONE nested run (``strokes`` is then its
            largest count, with ``nested`` set): ``strokes-<k>/`` are that run's prefixes.
        order: Reorder each sketch's strokes by importance before saving
            (:meth:`~clipasso.Sketcher.order_strokes`).
        batch_images: Images optimised as one batch (1: one at a time).

    Raises:
        InputError: ``batch_images > 1`` with settings a batch does not take (before any work).
    """
    hooks = hooks or BatchHooks()
    counts = list(strokes) if strokes else [sketcher.config.num_strokes]
    check_batch_images(sketcher.config, batch_images, checkpoint=checkpoint, ladder=ladder)
    digest = settings_digest(sketcher.config)
    out = Path(out_dir)
    records: dict[int, ItemRecord] = {}

    def record(i: int, rec: ItemRecord) -> None:
        records[i] = rec
        hooks.on_record(rec)

    if batch_images == 1 or any(item.source is None for item in items):  # a prompt alone: one run
        for i, item in enumerate(items):
            rec = _sketch_one(
                sketcher,
                item,
                out,
                counts,
                checkpoint=checkpoint,
                resume=resume,
                hooks=hooks,
                rank=rank,
                digest=digest,
                ladder=ladder,
                order=order,
            )
            record(i, rec)
        return [records[i] for i in range(len(items))]
    group: list[tuple[int, BatchItem, dict[str, Any], float]] = []

    def flush() -> None:
        done = (
            _sketch_group(sketcher, group, out, counts, hooks=hooks, rank=rank, digest=digest, order=order)
            if len(group) > 1
            else _each_alone(sketcher, group, out, counts, hooks=hooks, rank=rank, digest=digest, order=order)
        )
        group.clear()
        for i, rec in done:
            record(i, rec)

    for i, item in enumerate(items):
        t0 = time.perf_counter()
        try:  # read and check each image before it joins a batch: a bad file fails alone
            key = _check_item(sketcher, item, digest, counts)
        except Exception as exc:
            record(i, _failed(item, _what(sketcher, item), exc, time.perf_counter() - t0, rank, hooks))
            continue
        group.append((i, item, key, time.perf_counter() - t0))
        if len(group) == batch_images:
            flush()
    if group:
        flush()
    return [records[i] for i in range(len(items))]


def write_summary(path: str | os.PathLike[str], summary: BatchSummary) -> Path:
    """Write ``summary`` as JSON, atomically."""
    return atomic_write_text(path, json.dumps(summary.to_dict(), indent=2, default=str) + "\n")


def sketch_folders(
    sketcher: Sketcher,
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    strokes: Sequence[int] | None = None,
    masks: Sequence[str | os.PathLike[str]] | None = None,
    resume: bool = False,
    checkpoint: bool = False,
    summary: bool = True,
    world: World | None = None,
    hooks: BatchHooks | None = None,
    ladder: Sequence[int] | None = None,
    order: bool = False,
    batch_images: int = 1,
) -> BatchSummary:
    """Sketch every image of ``inputs`` (files and folders) into ``out_dir``, resumably.

    Rank 0 finds the images and plans (:func:`find_images`, :func:`plan`) and every rank gets
    the same plan; the models load (:meth:`Sketcher.load`); each rank sketches its
    :func:`shard`; the records are gathered (a barrier) and rank 0 writes ``summary.json``
    (:data:`SUMMARY_FILE`, atomically) unless ``summary=False``.

    Args:
        sketcher: The Sketcher to use (its device should be this rank's: see
            :func:`clipasso.distributed.local_device`).
        inputs: Image files and folders.
        out_dir: Output folder: ``out_dir/<name>/`` per image, ``summary.json``, ``.checkpoints/``.
        strokes: Stroke counts (default ``[config.num_strokes]``; several: a ladder).
        masks: One mask file per input (files only).
        resume: Skip finished images (:func:`is_finished`) and continue interrupted ones from
            their checkpoints.
        checkpoint: Write checkpoints (``config.checkpoint_every`` steps apart).
        summary: Write ``summary.json``.
        world: This process's place among several (:class:`~clipasso.distributed.World`; the
            group must be joined, :meth:`~clipasso.distributed.World.init`). Default: one process.
        hooks: Progress and reporting hooks (:class:`BatchHooks`).
        ladder: The counts of a ladder taken from one nested run (see :func:`sketch_items`).
        order: Reorder each sketch's strokes by importance before saving.
        batch_images: Optimise this many images (of each rank's share) as one batch
            (:meth:`~clipasso.Sketcher.sketch_many`); 1: one at a time. The outputs, records and
            guarantees are the same; a record's ``seconds`` is its own checks and writing plus an
            equal share of its batch's optimisation. No checkpoints: with ``resume``, finished
            images are skipped and interrupted ones start again.

    Returns:
        The merged :class:`BatchSummary` (the same on every rank).

    Raises:
        InputError: An output location cannot be used, masks do not fit, or ``batch_images``
            with settings a batch does not take (:func:`check_batch_images`), before any work.
        WeightsError: Weights are missing or unusable (before any work).

    Example:
        >>> import tempfile, pathlib
        >>> from clipasso import Sketcher
        >>> from clipasso.batch import sketch_folders
        >>> from clipasso.data import load_sample
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "in" / "sub").mkdir(parents=True)
        >>> load_sample("house").save(root / "in" / "house.png")
        >>> load_sample("mug").save(root / "in" / "sub" / "mug.png")
        >>> sk = Sketcher(loss="edges", initializer="random", num_strokes=4, iterations=2,
        ...               num_sketches=1, device="cpu")
        >>> summary = sketch_folders(sk, [root / "in"], root / "out")
        >>> [(r.output, r.status) for r in summary.records]
        [('house', 'done'), ('sub/mug', 'done')]
        >>> again = sketch_folders(sk, [root / "in"], root / "out", resume=True)
        >>> [r.status for r in again.records]
        ['skipped', 'skipped']
    """
    from .distributed import World

    world = world or World()
    hooks = hooks or BatchHooks()
    counts = list(strokes) if strokes else [sketcher.config.num_strokes]
    check_batch_images(sketcher.config, batch_images, checkpoint=checkpoint, ladder=ladder)  # before any work
    out = Path(out_dir)
    t0 = time.perf_counter()
    planned: Any = None
    if world.rank == 0:
        try:
            items, problems = find_images(inputs, masks=masks, exclude=[out])
            pending, skipped = plan(items, out, config=sketcher.config, strokes=counts, resume=resume)
            planned = ([it.name for it in items], pending, skipped, problems, None)
        except (InputError, OSError) as exc:
            planned = (None, None, None, None, _one_line(exc))
    planned = world.broadcast(planned)  # every rank works from rank 0's plan
    found, pending, skipped, problems, error = planned
    if error is not None:
        raise InputError(error)
    sketcher.load(with_image=True)  # missing weights fail here, before any output
    mine = shard(pending, world.rank, world.size)
    hooks.on_plan(mine, skipped if world.rank == 0 else [])
    for problem in problems if world.rank == 0 else []:
        hooks.on_record(problem)  # a folder that could not be searched, or held no image
    records = sketch_items(
        sketcher,
        mine,
        out,
        strokes=counts,
        checkpoint=checkpoint,
        resume=resume,
        hooks=hooks,
        ladder=ladder,
        order=order,
        rank=world.rank,
        batch_images=batch_images,
    )
    gathered = world.gather(records)  # waits for every rank
    position = {name: i for i, name in enumerate(found)}
    merged = sorted(
        [*skipped, *(r for rs in gathered for r in rs)], key=lambda r: position.get(r.output, len(position))
    )
    result = BatchSummary(
        records=[*problems, *merged],
        settings=sketcher.config.to_dict(),
        strokes=counts,
        world_size=world.size,
        seconds=time.perf_counter() - t0,
    )
    if summary and world.rank == 0:
        write_summary(out / SUMMARY_FILE, result)
    hooks.on_end(result)
    return result
