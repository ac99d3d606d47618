"""One sketch run off the caller's thread, streaming what it draws: the demo's engine room.

A :class:`SketchJob` runs :meth:`clipasso.Sketcher.sketch` in a worker thread. A
:class:`StreamCallback` (a plain :class:`~clipasso.callbacks.Callback`) renders the current best
candidate every few steps and records the training loss; the caller pulls :class:`Frame` objects
with :meth:`SketchJob.frames` (only the newest is kept, so a slow reader never piles up frames)
and asks for a stop with :meth:`SketchJob.stop` (the run ends after its current step and keeps
the best strokes so far). Nothing here imports a web framework.

Example:
    >>> import torch
    >>> from clipasso import Sketcher
    >>> sk = Sketcher(loss="edges", initializer="edges", num_strokes=4, iterations=6,
    ...               num_sketches=1, image_size=32, device="cpu")
    >>> job = SketchJob(sk, torch.rand(3, 32, 32), every=2).start()
    >>> frames = list(job.frames())
    >>> frames[-1].iteration, frames[-1].image.shape
    (5, (32, 32, 3))
    >>> job.result().strokes.num_strokes
    4
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..callbacks import Callback, SketchState
from ..result import to_uint8

if TYPE_CHECKING:
    from ..image import ImageLike
    from ..result import SketchResult
    from ..sketcher import Sketcher

__all__ = ["Frame", "SketchJob", "StreamCallback"]


@dataclass(frozen=True)
class Frame:
    """What the run looks like at one step.

    Attributes:
        iteration: The step just taken (0-based).
        total: The run's number of steps.
        image: The shown candidate's strokes rendered on white, ``[H, W, 3]`` uint8.
        candidate: Index of the shown candidate (the one with the best evaluation so far).
        losses: ``(iteration, training loss)`` of every step so far (mean over the candidates
            still running), for the loss curve.
        best_loss: The best evaluation loss so far (inf before the first evaluation).
    """

    iteration: int
    total: int
    image: np.ndarray
    candidate: int
    losses: tuple[tuple[int, float], ...]
    best_loss: float


class StreamCallback(Callback):
    """Renders the best candidate every ``every`` steps, records losses, honours a stop request.

    Args:
        publish: Called with each new :class:`Frame` (from the run's thread).
        stop: Set it to end the run after the current step (the best strokes so far are kept).
        every: Render every ``every`` steps (and always at the first and last step).
        total: The run's number of steps.
    """

    def __init__(self, publish: Any, stop: threading.Event, every: int, total: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.publish = publish
        self.stop_event = stop
        self.every = every
        self.total = total
        self.losses: list[tuple[int, float]] = []

    def on_step(self, sketcher: Sketcher, state: SketchState) -> None:
        total = state.terms.get("total")
        if total is not None and total.numel():
            self.losses.append((state.iteration, float(total.detach().float().mean())))
        if self.stop_event.is_set():
            state.stop = True
        last = state.iteration + 1 >= self.total or state.stop
        if state.iteration % self.every == 0 or last:
            self.publish(self._frame(sketcher, state))

    def _frame(self, sketcher: Sketcher, state: SketchState) -> Frame:
        candidates = state.active or list(range(state.strokes.batch_size))
        shown = min(candidates, key=lambda b: state.best_loss[b] if state.best_loss else 0.0)
        with torch.no_grad():
            image = state.strokes[shown].render(backend=sketcher.rasterizer)[0]
        best = min(state.best_loss) if state.best_loss else float("inf")
        return Frame(
            iteration=state.iteration,
            total=self.total,
            image=to_uint8(image),
            candidate=shown,
            losses=tuple(self.losses),
            best_loss=best,
        )


@dataclass
class _Mailbox:
    """The newest frame, the run's end, and a condition to wait on them."""

    frame: Frame | None = None
    serial: int = 0
    done: bool = False
    result: SketchResult | None = None
    error: BaseException | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)


class SketchJob:
    """A sketch run in a worker thread that streams :class:`Frame` objects.

    Args:
        sketcher: The configured Sketcher (its ``callbacks`` are kept; the stream is added per run).
        image: What to sketch (anything :meth:`~clipasso.Sketcher.sketch` takes).
        mask: Optional object mask.
        every: Render a frame every ``every`` steps.
        sketch_options: Further keyword arguments of :meth:`~clipasso.Sketcher.sketch`
            (``num_strokes``, ``iterations``, ...).
    """

    def __init__(
        self,
        sketcher: Sketcher,
        image: ImageLike,
        *,
        mask: ImageLike | None = None,
        every: int = 5,
        **sketch_options: Any,
    ) -> None:
        self.sketcher = sketcher
        self.image = image
        self.mask = mask
        self.options = sketch_options
        self.total = int(sketch_options.get("iterations") or sketcher.config.iterations)
        self._stop = threading.Event()
        self._box = _Mailbox()
        self.stream = StreamCallback(self._publish, self._stop, every, self.total)
        self._thread = threading.Thread(target=self._work, name="clipasso-sketch", daemon=True)

    # ------------------------------------------------------------------ the worker thread

    def _publish(self, frame: Frame) -> None:
        with self._box.cond:
            self._box.frame = frame
            self._box.serial += 1
            self._box.cond.notify_all()

    def _work(self) -> None:
        result: SketchResult | None = None
        error: BaseException | None = None
        saved = self.sketcher.callbacks
        self.sketcher.callbacks = [*saved, self.stream]
        try:
            result = self.sketcher.sketch(self.image, mask=self.mask, **self.options)
        except BaseException as exc:  # handed to the reader, who raises it
            error = exc
        finally:
            self.sketcher.callbacks = saved
        with self._box.cond:
            self._box.result, self._box.error, self._box.done = result, error, True
            self._box.cond.notify_all()

    # ------------------------------------------------------------------ the caller's side

    def start(self) -> SketchJob:
        """Start the run; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to end after its current step (it keeps the best strokes so far)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        """Whether the run has ended (finished, stopped or failed)."""
        return self._box.done

    def frames(self, heartbeat: float | None = None) -> Iterator[Frame | None]:
        """The frames as they come, newest only, until the run ends.

        Args:
            heartbeat: If set, yield ``None`` after this many seconds without a new frame, so that
                a caller can notice it is no longer wanted (a closed browser tab) and stop the run.
        """
        seen = 0
        while True:
            with self._box.cond:
                deadline = None if heartbeat is None else time.monotonic() + heartbeat
                while self._box.serial == seen and not self._box.done:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._box.cond.wait(left)
                frame, serial, done = self._box.frame, self._box.serial, self._box.done
            if serial != seen:
                seen = serial
                yield frame
            elif done:
                return
            else:
                yield None

    def result(self, timeout: float | None = None) -> SketchResult:
        """Wait for the run and return its result (raising the run's error, if it failed)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the sketch run did not end within {timeout} s")
        if self._box.error is not None:
            raise self._box.error
        assert self._box.result is not None
        return self._box.result

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread; True if it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
