"""Callbacks: hooks into a run for logging, snapshots, gradient edits, custom rules and early stops.

Every hook receives the program that runs (the :class:`~clipasso.Sketcher`) and the live
:class:`~clipasso.engine.RunState`, which a callback may change (see its notes). The engine calls
them in the order they are listed, at these points of every step::

    before_step -> render, loss, [evaluation -> on_candidate_stop ...] -> backward
        -> after_backward -> optimiser step -> on_eval (evaluation steps) -> on_step

plus :meth:`Callback.on_start` once before the first step and :meth:`Callback.on_end` with the
result.

Example:
    Gradient clipping (docs/sketcher.md)::

        class Clip(Callback):
            def after_backward(self, sketcher, state):
                torch.nn.utils.clip_grad_norm_(state.strokes.parameters(), max_norm=1.0)

    >>> class PrintEval(Callback):
    ...     def on_eval(self, sketcher, state):
    ...         print(state.iteration, state.eval_loss)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..result import SketchResult
    from .state import RunState

__all__ = ["Callback", "ProgressBar"]


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_start(self, sketcher: Any, state: RunState) -> None:
        """Before the first step (after initialisation, or after resuming from a checkpoint)."""

    def before_step(self, sketcher: Any, state: RunState) -> None:
        """Before step ``state.iteration`` renders (e.g. to edit points or the learning rate)."""

    def after_backward(self, sketcher: Any, state: RunState) -> None:
        """After the backward pass, before the optimiser step: ``state.strokes.points.grad`` holds the
        gradients (clip, project or edit them here)."""

    def on_step(self, sketcher: Any, state: RunState) -> None:
        """After every optimisation step (``state.terms`` holds its training terms)."""

    def on_eval(self, sketcher: Any, state: RunState) -> None:
        """After every evaluation (``state.eval_loss`` is fresh); a custom race stops candidates here
        with ``state.stop_candidate(b)``."""

    def on_candidate_stop(self, sketcher: Any, state: RunState, index: int) -> None:
        """When candidate ``index`` has just stopped (early stop, race, or a callback's request)."""

    def on_end(self, sketcher: Any, result: SketchResult) -> None:
        """Once, with the final result."""


class ProgressBar(Callback):
    """A tqdm progress bar over the steps, showing the current and the best evaluation loss.

    Args:
        total: The number of steps.
        label: The bar's description.
        disable: No bar (e.g. ``--quiet``).
        position: The bar's line (tqdm's ``position``; e.g. 1 below a bar over images).
    """

    def __init__(
        self, total: int, label: str = "sketch", disable: bool = False, position: int | None = None
    ) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            desc=label,
            disable=disable,
            unit="it",
            leave=False,
            dynamic_ncols=True,
            position=position,
        )

    def on_start(self, sketcher: Any, state: RunState) -> None:
        self.bar.update(state.iteration - self.bar.n)  # a resumed run starts where it was

    def on_step(self, sketcher: Any, state: RunState) -> None:
        self.bar.update(1)

    def on_eval(self, sketcher: Any, state: RunState) -> None:
        best = min(state.best_loss) if state.best_loss else float("nan")
        current = state.terms.get("total")
        cur = float(current.mean()) if current is not None else float("nan")
        self.bar.set_postfix(loss=f"{cur:.4g}", best_eval=f"{best:.4g}", refresh=False)

    def on_end(self, sketcher: Any, result: SketchResult) -> None:
        self.bar.close()
