"""What the web demo does, without the web page: choices, settings, one job per session, messages.

:class:`DemoService` turns the page's controls into a :class:`~clipasso.SketchConfig` and a
:class:`~clipasso.demo.jobs.SketchJob`, keeps at most one job per browser session (a tab), and
yields :class:`Update` objects (the current sketch, the loss curve's points, a status line and, at
the end, the files to download and, for a ladder or an automatic count, the ladder's rungs).
The strokes choice is a count (``"16"``), a ladder (``"4,8,16,32"``) or ``"auto"``
(:func:`parse_strokes`); a ladder or ``auto`` is ONE nested run of the library
(``SketchConfig.nested`` / ``auto_strokes``), whose prefixes are the rungs (:func:`ladder_of`).
Errors people can fix (a bad upload, missing weights) come out as :class:`DemoError` with a
message that says what to do. :mod:`clipasso.demo.app` lays a Gradio
page over it; nothing here imports Gradio.

Example:
    >>> from clipasso.demo.service import DemoOptions, DemoService
    >>> service = DemoService(DemoOptions(settings={"image_size": 32, "num_sketches": 1}))
    >>> updates = list(service.run("tab-1", None, "house", strokes=4, preset="default",
    ...                            objective="edges", background="keep", iterations=4))
    >>> updates[-1].done, sorted(updates[-1].files)
    (True, ['gif', 'png', 'svg'])
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClipassoError, InputError, WeightsError

if TYPE_CHECKING:
    from ..image import Matting
    from ..result import SketchResult
    from ..sketcher import Sketcher

__all__ = [
    "BACKGROUNDS",
    "DEFAULT_PRESET",
    "OBJECTIVES",
    "Background",
    "DemoError",
    "DemoOptions",
    "DemoService",
    "Rung",
    "Update",
    "ladder_of",
    "parse_strokes",
    "presets",
    "weights_message",
]

log = logging.getLogger("clipasso.demo")

#: The page's objectives: choice → loss registry name.
OBJECTIVES: dict[str, str] = {
    "CLIP": "clip_conv",
    "edges": "edges",
}

#: The preset choice that means "the defaults" (the reference recipe with the default precision).
DEFAULT_PRESET = "default"


def presets() -> list[str]:
    """The preset choices: ``"default"`` and every name of :data:`clipasso.config.PRESETS`.

    Example:
        >>> presets()[0], "reference" in presets()
        ('default', True)
    """
    from ..config import PRESETS

    return [DEFAULT_PRESET, *PRESETS]


def parse_strokes(value: Any) -> int | list[int] | str:
    """The page's strokes choice: a count, a ladder of counts (sorted, without repeats) or ``"auto"``.

    Only the form is checked here; the counts are checked by the settings (``num_strokes``,
    ``nested``).

    Example:
        >>> parse_strokes("16"), parse_strokes(16.0), parse_strokes(" 8, 4,16 "), parse_strokes("Auto")
        (16, 16, [4, 8, 16], 'auto')
        >>> parse_strokes("4,4")
        4

    Raises:
        DemoError: Anything else.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _whole(value, "strokes")
    parts = [p.strip() for p in str(value).split(",")] if isinstance(value, str) else []
    try:
        counts = sorted({int(p) for p in parts if p})
    except ValueError:
        counts = []
    if not counts:
        raise DemoError(
            f"strokes: a number (16), a ladder of counts (4,8,16,32) or auto, got {value!r}"
        ) from None
    return counts[0] if len(counts) == 1 else counts


@dataclass(frozen=True)
class Background:
    """One way of handling the photo's background.

    Attributes:
        description: What it does, as the page says it.
        matting: Builds the background-removal model handed to the Sketcher (None: none).
    """

    description: str
    matting: Any = None

    def build_matting(self) -> Matting | None:
        """The background-removal model handed to the :class:`~clipasso.Sketcher` (None: none)."""
        return self.matting() if self.matting is not None else None


#: Background choices: name → :class:`Background`. Only ``"keep"`` exists today; a removal model
#: (a :class:`~clipasso.image.Matting`) slots in as another entry with its ``matting`` factory.
BACKGROUNDS: dict[str, Background] = {
    "keep": Background("keep the image as it is (an alpha channel is used as the object mask)"),
}


class DemoError(InputError):
    """A problem the person at the page can fix; its message says how."""


@dataclass
class DemoOptions:
    """How the demo server runs.

    Attributes:
        settings: :class:`~clipasso.SketchConfig` fields applied on top of each run's preset
            (from ``--config`` and flags, e.g. ``device`` or ``image_size``).
        clip_weights: CLIP weights for the loss (a file or model name); None: the loss's default.
        saliency_weights: CLIP ViT weights for the saliency map; None: the initializer's default.
        preview_every: Render the current strokes every this many steps.
        iterations: The page's default number of steps.
        max_iterations: The most steps the page lets a run take.
        strokes: The page's default strokes choice (a count, a ladder such as ``"4,8,16,32"``,
            or ``"auto"``).
        workdir: Where each job's downloads are written (a fresh temporary folder if None).
        keep_jobs: Output folders kept (the oldest is removed beyond this).
        sample_size: Side of the drawn samples in pixels.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    clip_weights: str | None = None
    saliency_weights: str | None = None
    preview_every: int = 5
    iterations: int = 300
    max_iterations: int = 2000
    strokes: int | str = 16
    workdir: Path | None = None
    keep_jobs: int = 32
    sample_size: int = 256


@dataclass(frozen=True)
class Rung:
    """One rung of a ladder: the first ``strokes`` strokes of the run's winner.

    Attributes:
        strokes: Its number of strokes.
        image: It rendered on white, ``[H, W, 3]`` uint8.
        chosen: Whether it is the count ``auto`` chose.
    """

    strokes: int
    image: np.ndarray
    chosen: bool = False

    @property
    def caption(self) -> str:
        """How the page labels it: ``"8 strokes"``, ``"8 strokes (chosen)"``."""
        return f"{self.strokes} stroke{'s' if self.strokes != 1 else ''}" + (
            " (chosen)" if self.chosen else ""
        )


@dataclass(frozen=True)
class Update:
    """One refresh of the page.

    Attributes:
        status: A one-line status (Markdown).
        image: The current sketch ``[H, W, 3]`` uint8, or None (no change).
        losses: ``(iteration, loss)`` points of the loss curve, or None (no change).
        files: At the end: the downloads, ``{"svg" | "png" | "gif": path}`` (the chosen sketch for
            ``auto``, the full one for a ladder), plus ``"ladder"`` (the rungs side by side, PNG)
            for a ladder or ``auto`` and ``"full_svg"`` (all ``auto_max_strokes`` strokes) for
            ``auto``; else None.
        ladder: The rungs, smallest first: at the end of a ladder or ``auto`` run; ``()`` at the
            start of a run (no ladder yet: clear the old one); None: no change.
        chosen: The stroke count ``auto`` chose (at its end), else None.
        done: Whether the run has ended.
    """

    status: str
    image: np.ndarray | None = None
    losses: tuple[tuple[int, float], ...] | None = None
    files: dict[str, Path] | None = None
    ladder: tuple[Rung, ...] | None = None
    chosen: int | None = None
    done: bool = False


def weights_message(exc: WeightsError) -> str:
    """A missing-weights error as the demo's page says it: the cause and how to start the demo.

    Example:
        >>> print(weights_message(WeightsError("CLIP model 'RN101' is not in the cache.")))
        ... # doctest: +ELLIPSIS
        CLIP weights are missing: CLIP model 'RN101' is not in the cache. Start the demo with ...
    """
    return (
        f"CLIP weights are missing: {' '.join(str(exc).split())} Start the demo with local weights "
        "(`clipasso demo --clip-weights FILE --saliency-weights FILE`, or set CLIPASSO_WEIGHTS_RN101 "
        "and CLIPASSO_WEIGHTS_VIT_B_32 to the files), or choose the objective 'edges', which needs "
        "no weights."
    )


class DemoService:
    """The demo's functions: samples, one sketch job per session, stop, messages.

    Args:
        options: A :class:`DemoOptions`.
    """

    def __init__(self, options: DemoOptions | None = None) -> None:
        self.options = options or DemoOptions()
        self._jobs: dict[str, Any] = {}  # session → its running SketchJob
        self._lock = threading.Lock()
        self._sketchers: OrderedDict[str, tuple[Sketcher, threading.Lock]] = OrderedDict()
        self._outputs: list[Path] = []
        self._own_workdir = self.options.workdir is None
        self.workdir = Path(self.options.workdir or tempfile.mkdtemp(prefix="clipasso-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ samples

    def samples(self) -> list[str]:
        """The bundled samples that load here (photographs need scikit-image)."""
        from ..data import DRAWN, list_samples

        try:
            import skimage.data  # noqa: F401
        except ImportError:
            return list(DRAWN)
        return list_samples()

    def sample_path(self, name: str) -> Path:
        """A sample written once as a PNG in the work folder (with its mask as alpha if known)."""
        from ..data import DRAWN, save_sample

        if name not in self.samples():
            raise DemoError(f"unknown sample {name!r}; choose one of {', '.join(self.samples())}")
        path = self.workdir / "samples" / f"{name}.png"
        if not path.is_file():
            drawn = name in DRAWN
            size = self.options.sample_size if drawn else None
            save_sample(name, path, size=size, alpha=drawn or name == "horse")
        return path

    # ------------------------------------------------------------------ settings

    def config(
        self,
        *,
        strokes: float | str,
        preset: str,
        objective: str,
        iterations: float,
        abstraction: float | None = None,
    ) -> Any:
        """The run's :class:`~clipasso.SketchConfig`: preset, then the server's settings, then the page's.

        ``strokes`` (:func:`parse_strokes`): a count; a ladder ``[k1, ..., N]`` is one nested run
        (``num_strokes=N``, ``nested=[k1, ...]``); ``"auto"`` is ``auto_strokes`` over
        ``auto_max_strokes`` strokes with ``abstraction`` (None: the settings' value).
        """
        from ..config import SketchConfig

        if preset not in presets():
            raise DemoError(f"unknown preset {preset!r}; choose one of {', '.join(presets())}")
        if objective not in OBJECTIVES:
            raise DemoError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        strokes_, iterations_ = parse_strokes(strokes), _whole(iterations, "iterations")
        if not 1 <= iterations_ <= self.options.max_iterations:
            raise DemoError(f"iterations must be from 1 to {self.options.max_iterations}, got {iterations_}")
        base = SketchConfig() if preset == DEFAULT_PRESET else SketchConfig.preset(preset)
        data = {**base.to_dict(), **self.options.settings}
        data["loss"] = OBJECTIVES[objective]
        if self.options.clip_weights is not None:
            data["clip_model"] = self.options.clip_weights
        if self.options.saliency_weights is not None:
            data["saliency_model"] = self.options.saliency_weights
        if objective == "edges" and self.options.saliency_weights is None:
            data["initializer"] = self.options.settings.get("initializer", "edges")  # stays weights-free
        data["iterations"] = iterations_
        if strokes_ == "auto":  # one nested run over auto_max_strokes; the count is read off its curve
            data["auto_strokes"] = True
            data["num_strokes"] = data["auto_max_strokes"]
            if abstraction is not None:
                data["abstraction"] = abstraction
        elif isinstance(strokes_, list):  # one nested run: the ladder is its prefixes
            data["num_strokes"], data["nested"] = strokes_[-1], strokes_[:-1]
        else:
            data["num_strokes"] = strokes_
        try:
            return SketchConfig.from_dict(data)
        except InputError as exc:
            raise DemoError(str(exc)) from None

    def default_abstraction(self) -> float:
        """The abstraction ``auto`` uses unless the page says otherwise (the server's settings, else 0.1)."""
        from ..config import SketchConfig

        return float(self.options.settings.get("abstraction", SketchConfig().abstraction))

    def _sketcher(self, config: Any, background: str) -> tuple[Sketcher, threading.Lock]:
        """A Sketcher for these settings, its lock held: reused (its models stay loaded) unless
        another job holds it. Call with ``self._lock`` held."""
        import json

        from ..sketcher import Sketcher

        key = json.dumps({"config": config.to_dict(), "background": background}, sort_keys=True, default=str)
        if key in self._sketchers:
            self._sketchers.move_to_end(key)
            sketcher, lock = self._sketchers[key]
            if lock.acquire(blocking=False):
                return sketcher, lock
            # in use by another session's job: this one gets its own, not kept
            lock = threading.Lock()
            lock.acquire()
            return Sketcher(config, matting=BACKGROUNDS[background].build_matting()), lock
        sketcher = Sketcher(config, matting=BACKGROUNDS[background].build_matting())
        lock = threading.Lock()
        lock.acquire()
        self._sketchers[key] = (sketcher, lock)
        while len(self._sketchers) > 2:
            self._sketchers.popitem(last=False)
        return sketcher, lock

    # ------------------------------------------------------------------ jobs

    def running(self) -> list[str]:
        """The sessions with a job running now."""
        with self._lock:
            return [s for s, job in self._jobs.items() if not job.done]

    def stop(self, session: str) -> bool:
        """Ask the session's job to stop (it keeps the best so far); False if it has none."""
        with self._lock:
            job = self._jobs.get(session)
        if job is None:
            return False
        job.stop()
        return True

    def run(
        self,
        session: str,
        image: str | os.PathLike[str] | None,
        sample: str | None,
        *,
        strokes: float | str,
        preset: str,
        objective: str,
        background: str,
        iterations: float,
        abstraction: float | None = None,
    ) -> Iterator[Update]:
        """Sketch the uploaded image (else the sample), yielding an :class:`Update` per new frame.

        The last update has ``done=True`` and the downloads; for a ladder or ``"auto"`` (one
        nested run) also the rungs (:class:`Rung`) and, for ``"auto"``, the chosen count. Closing
        the generator (the page went away) stops the run at its next step.

        Raises:
            DemoError: No image, a bad upload, unknown choices, missing weights, another job of
                this session still running.
        """
        from ..image import prepare_target
        from .jobs import SketchJob

        if background not in BACKGROUNDS:
            raise DemoError(
                f"unknown background handling {background!r}; choose one of {', '.join(BACKGROUNDS)}"
            )
        config = self.config(
            strokes=strokes,
            preset=preset,
            objective=objective,
            iterations=iterations,
            abstraction=abstraction,
        )
        source = self._source(image, sample)
        try:
            prepare_target(source, size=config.image_size, fix_scale=config.fix_scale)
        except InputError as exc:
            said = " ".join(str(exc).split())
            if isinstance(source, Path):  # the upload's name, not the server's cache path
                said = said.replace(str(source), source.name)
            raise DemoError(f"cannot use this image: {said}") from None
        with self._lock:
            previous = self._jobs.get(session)
            if previous is not None and not previous.done:
                raise DemoError("this tab already has a sketch running: stop it first")
            sketcher, lock = self._sketcher(config, background)
            job = SketchJob(sketcher, source, every=self.options.preview_every)
            self._jobs[session] = job
        log.info(
            "job %s: start (%s, %s strokes, %d iterations)",
            session,
            objective,
            "auto"
            if config.auto_strokes
            else ",".join(map(str, config.prefix_set() or [config.num_strokes])),
            config.iterations,
        )
        outcome = "closed"
        try:
            yield Update("loading the models and placing the first strokes…", ladder=())
            job.start()
            for frame in job.frames(heartbeat=0.5):
                if frame is None:
                    yield Update(
                        f"working… (step {job.stream.losses[-1][0] + 1 if job.stream.losses else 0})"
                    )
                    continue
                status = f"step {frame.iteration + 1} / {frame.total}"
                if frame.best_loss != float("inf"):
                    status += f", best loss {frame.best_loss:.4g}"
                yield Update(status, image=frame.image, losses=frame.losses)
            try:
                result = job.result()
            except WeightsError as exc:
                raise DemoError(weights_message(exc)) from None
            except ClipassoError as exc:
                raise DemoError(" ".join(str(exc).split())) from None
            rungs = ladder_of(result)
            files = self._save(result, rungs)
            stopped = "stopped, kept the best so far" if job.stopped else "done"
            outcome = "stopped" if job.stopped else "done"
            status = (
                f"{stopped}: best loss {result.best_loss:.4g} at step {result.best_iteration} "
                f"(seed {result.best.seed}, {len(result.candidates)} candidate"
                f"{'s' if len(result.candidates) != 1 else ''})"
            )
            if result.auto_strokes is not None:
                full = result.full.strokes.num_strokes if result.full is not None else result.auto_strokes
                status += (
                    f"; auto chose {result.auto_strokes} of {full} strokes "
                    f"(abstraction {result.config.abstraction:g})"
                )
            elif rungs:
                status += f"; ladder {', '.join(str(r.strokes) for r, _ in rungs)} from one nested run"
            yield Update(
                status,
                image=_render(result),
                losses=tuple(job.stream.losses),
                files=files,
                ladder=tuple(r for r, _ in rungs) if rungs else None,
                chosen=result.auto_strokes,
                done=True,
            )
        finally:
            job.stop()  # a closed page stops the run at its next step
            job.join()
            lock.release()
            with self._lock:
                if self._jobs.get(session) is job:
                    del self._jobs[session]
            log.info("job %s: %s", session, outcome)

    def _source(self, image: str | os.PathLike[str] | None, sample: str | None) -> Any:
        if image:
            path = Path(image)
            if not path.is_file():
                raise DemoError(f"the uploaded file {path.name} is gone; upload it again")
            return path
        if sample:
            return self.sample_path(sample)
        raise DemoError("no image: upload a picture or pick a sample")

    def _save(self, result: SketchResult, rungs: list[tuple[Rung, SketchResult]]) -> dict[str, Path]:
        from ..outputs import save_ladder, save_progress_gif

        folder = Path(tempfile.mkdtemp(prefix="job-", dir=self.workdir))
        files = {
            "svg": result.save_svg(folder / "sketch.svg"),
            "png": result.save_png(folder / "sketch.png", scale=2.0),
            "gif": save_progress_gif(result, folder / "progress.gif"),
        }
        if rungs:
            files["ladder"] = save_ladder([r for _, r in rungs], folder / "ladder.png")
        if result.auto_strokes is not None and result.full is not None:
            n = result.full.strokes.num_strokes
            files["full_svg"] = result.full.save_svg(folder / f"sketch-{n}-strokes.svg")
        with self._lock:
            self._outputs.append(folder)
            old = (
                self._outputs[: -self.options.keep_jobs]
                if len(self._outputs) > self.options.keep_jobs
                else []
            )
            del self._outputs[: len(old)]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return files

    def close(self) -> None:
        """Stop every job and remove the work folder if the service made it."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop()
        for job in jobs:
            job.join()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _whole(value: Any, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{what} must be a whole number, got {value!r}") from None
    if number != int(number):
        raise DemoError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def ladder_of(result: SketchResult) -> list[tuple[Rung, SketchResult]]:
    """The rungs of a nested run's result, smallest first, each with its prefix result: the
    prefixes at the run's ladder (``config.prefix_set()``), plus the count ``auto`` chose; empty
    for a plain run.

    Example:
        >>> from clipasso import Sketcher
        >>> from clipasso.data import sample_tensor
        >>> sk = Sketcher(loss="edges", initializer="edges", num_strokes=4, nested=[2], iterations=2,
        ...               num_sketches=1, image_size=32, device="cpu")
        >>> result = sk.sketch(sample_tensor("house", size=32)[0])
        >>> [(rung.strokes, rung.chosen) for rung, _ in ladder_of(result)]
        [(2, False), (4, False)]
    """
    full = result.full if result.auto_strokes is not None and result.full is not None else result
    counts = full.config.prefix_set()
    if counts is None:
        return []
    chosen = result.auto_strokes
    n = full.strokes.num_strokes
    ks = sorted({k for k in counts if k <= n} | ({chosen} if chosen is not None else set()))
    out = []
    for k in ks:
        prefix = full if k == n else full.prefix(k)
        out.append((Rung(k, _render(prefix), chosen=k == chosen), prefix))
    return out


def _render(result: SketchResult) -> np.ndarray:
    from ..result import to_uint8

    return to_uint8(result.render()[0])
