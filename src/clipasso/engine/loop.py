"""The optimisation loop: :class:`Engine` drives a program (the :class:`~clipasso.Sketcher`, or any
object with the :class:`SketchProgram` methods) over a :class:`~clipasso.engine.RunState`.

One step at ``state.iteration``: ``before_step`` hooks; render the active candidates; the training
loss (a fresh augmentation per candidate); the NaN guard; on evaluation steps, the un-augmented
evaluation and its rules (best strokes, early stop, race); backward; ``after_backward`` hooks; the
optimiser and scheduler steps; stopped candidates put back. The engine never imports the Sketcher.

Example:
    >>> import torch
    >>> from clipasso.engine import Engine, LoopSettings, RunState
    >>> from clipasso.engine.candidates import early_stop_update
    >>> from clipasso.image import Target
    >>> from clipasso.losses import LossContext
    >>> from clipasso.render import create_rasterizer
    >>> from clipasso.strokes import StrokeSet
    >>> class Program:  # the smallest program: ink everywhere is the target
    ...     raster = create_rasterizer("torch")
    ...     def render(self, s, index=None):
    ...         return self.raster.render_over(s.points, s.widths, s.colors, s.canvas_size, 1.0)
    ...     def compute_loss(self, sketch, target, context):
    ...         return {"ink": sketch.mean((1, 2, 3))}
    ...     def update_best(self, state, b, loss):
    ...         return early_stop_update(state, b, loss, delta=0.0, patience=0)
    ...     def prune(self, state):
    ...         return []
    >>> strokes = StrokeSet(torch.rand(1, 2, 4, 2) * 32, canvas_size=32, trainable=("points",))
    >>> state = RunState.start(strokes, torch.optim.Adam([strokes.points], lr=0.5), seeds=[0],
    ...                        iterations=5, target=Target(torch.zeros(1, 3, 32, 32), None, (32, 32)))
    >>> state = Engine(Program(), LoopSettings(iterations=5, eval_every=2)).run(state)
    >>> state.iteration, [it for it, _ in state.eval_history]
    (5, [0, 2, 4, 5])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..errors import NonFiniteLossError
from ..image import Target
from ..losses.base import LossContext
from ..strokes import StrokeSet
from .callbacks import Callback
from .checkpoint import Checkpointer
from .state import RunState

__all__ = ["Engine", "LoopSettings", "SketchProgram"]


class SketchProgram(Protocol):
    """What the engine drives: rendering, the loss and the two candidate rules."""

    def render(self, strokes: StrokeSet, index: Tensor | None = None) -> Tensor:
        """``[B', 3, H, W]`` renders of the candidates in ``index`` (None: all)."""
        ...

    def compute_loss(self, sketch: Tensor, target: Target, context: LossContext) -> dict[str, Tensor]:
        """The loss terms ``{name: [B']}``."""
        ...

    def update_best(self, state: RunState, b: int, loss: float) -> bool:
        """The evaluation rule for candidate ``b``; True when it should stop."""
        ...

    def prune(self, state: RunState) -> list[int]:
        """The candidates to stop after an evaluation (the race)."""
        ...


@dataclass(frozen=True)
class LoopSettings:
    """The loop's own settings (the subset of :class:`~clipasso.SketchConfig` it reads).

    Attributes:
        iterations: Steps of the run.
        eval_every: Evaluate at every ``eval_every``-th step (and after the last).
        shared_views: All candidates draw their views from candidate 0's generator.
        free_evaluations: Take an evaluation from the training step's own un-augmented view where
            every loss term can give it (``LossContext.view0``), instead of a second forward.
    """

    iterations: int
    eval_every: int = 10
    shared_views: bool = False
    free_evaluations: bool = False


class Engine:
    """Runs the optimisation of a :class:`RunState` to its end.

    Args:
        program: Renders, scores and rules (:class:`SketchProgram`).
        settings: The loop's settings.
        callbacks: Hooks, called in order (:class:`~clipasso.engine.Callback`).
        checkpointer: Resumes from and saves to a checkpoint file (optional).
    """

    def __init__(
        self,
        program: SketchProgram,
        settings: LoopSettings,
        callbacks: Iterable[Callback] = (),
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.program = program
        self.settings = settings
        self.callbacks = list(callbacks)
        self.checkpointer = checkpointer

    # ------------------------------------------------------------------ the run

    def run(self, state: RunState) -> RunState:
        """Resume ``state`` from the checkpoint if there is one, then step until ``iterations``, every
        candidate stopped, or ``state.stop``; evaluate the final strokes; save the checkpoint.

        Raises:
            NonFiniteLossError: A loss became NaN/inf (its ``.result`` is None: the program adds it).
        """
        cfg = self.settings
        if self.checkpointer is not None:
            self.checkpointer.resume(state)
        for cb in self.callbacks:
            cb.on_start(self.program, state)
        while state.iteration < cfg.iterations and state.active:
            evaluated = state.iteration % cfg.eval_every == 0
            for cb in self.callbacks:
                cb.before_step(self.program, state)
            terms = self.step(state)
            state.train_history.append({k: state.scatter(v, state.step_index) for k, v in terms.items()})
            state.terms = terms
            for cb in self.callbacks:
                if evaluated:
                    cb.on_eval(self.program, state)
                cb.on_step(self.program, state)
            state.iteration += 1
            if self.checkpointer is not None:
                self.checkpointer.after_step(state)
            if state.stop:
                break
        if state.active and not state.stop:  # the final strokes get their evaluation too
            active = state.active
            index = state.active_index()
            with torch.no_grad():
                sketch = self.program.render(state.strokes, index)
            self.evaluate(state, sketch, active, index)
            state.terms = {}
            for cb in self.callbacks:
                cb.on_eval(self.program, state)
        for b in state.active:
            state.stop_iteration[b] = state.iteration
        if self.checkpointer is not None:
            self.checkpointer.save(state)
        return state

    def step(self, state: RunState) -> dict[str, Tensor]:
        """One optimisation step at ``state.iteration``: render, loss, (evaluate), backward, update.

        Returns:
            The training terms and their sum, ``{name: [B_active], "total": [B_active]}``, detached.
        """
        cfg = self.settings
        active = state.active
        index = state.step_index = state.active_index()
        target = _target(state, index)
        sketch = self.program.render(state.strokes, index)
        gens: list[torch.Generator] | torch.Generator = [state.generators[b] for b in active]
        if cfg.shared_views:
            gens = state.generators[0]
        opacity = state.strokes.colors[..., 3].clamp(0, 1)
        evaluating = state.iteration % cfg.eval_every == 0
        sink: dict[str, Tensor] | None = {} if evaluating and cfg.free_evaluations else None
        ctx = LossContext(
            iteration=state.iteration,
            mode="train",
            generators=gens,
            mask=target.mask,
            strokes=opacity if index is None else opacity[index],
            view0=sink,
            view0_schedule=self._final(state) if sink is not None else None,
        )
        terms = self.program.compute_loss(sketch, target, ctx)
        total = torch.stack(list(terms.values())).sum(0)
        self._check_finite(state, terms, total)
        if evaluating:
            free = None
            if sink is not None and set(sink) == set(terms):
                if all(sink[k].shape == v.shape for k, v in terms.items()):
                    free = sink  # every term gave its evaluation: no second forward
            self.evaluate(state, sketch.detach(), active, index, terms=free)
        state.optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        for cb in self.callbacks:
            cb.after_backward(self.program, state)
        state.optimizer.step()
        if state.scheduler is not None:
            state.scheduler.step()
        state.restore_stopped()
        return {k: v.detach() for k, v in terms.items()} | {"total": total.detach()}

    def evaluate(
        self,
        state: RunState,
        sketch: Tensor,
        active: Sequence[int],
        index: Tensor | None = None,
        terms: dict[str, Tensor] | None = None,
    ) -> list[float]:
        """Score the rendered ``sketch`` of the ``active`` candidates on the un-augmented objective,
        record it, and apply the program's rules: ``update_best`` to each, then ``prune``.

        The objective is scored as it stands at the run's last step: every scheduled term at its
        final weight (``loss.after(k)``, a text term's ``text_start``), whatever the step, so that
        the best-strokes choice compares scores of one objective throughout the run.

        ``terms``: the evaluation's terms when already known (a free evaluation, from the training
        step's view 0); None: computed here.

        Returns:
            The losses, len ``B`` (NaN for inactive candidates).
        """
        target = _target(state, index)
        with torch.no_grad():
            if terms is None:
                ctx = LossContext(
                    iteration=state.iteration,
                    mode="eval",
                    mask=target.mask,
                    schedule_iteration=self._final(state),
                )
                terms = self.program.compute_loss(sketch, target, ctx)
            total = torch.stack(list(terms.values())).sum(0)
        values = total.tolist()
        full = [math.nan] * state.batch
        for j, b in enumerate(active):
            full[b] = values[j]
        record = {k: state.scatter(v.detach(), index) for k, v in terms.items()}
        record["total"] = torch.tensor(full)
        record = {k: v.cpu() for k, v in record.items()}
        state.eval_history.append((state.iteration, record))
        state.snapshots.append((state.iteration, state.strokes.points.detach().to("cpu", copy=True)))
        for j, b in enumerate(active):
            if not math.isfinite(values[j]):
                self._raise_nonfinite(state, {k: v[j : j + 1] for k, v in terms.items()}, "eval")
            if self.program.update_best(state, b, values[j]):
                self.stop_candidate(state, b)
        for b in self.program.prune(state):
            self.stop_candidate(state, b)
        state.last_eval = full
        return full

    def _final(self, state: RunState) -> int:
        """The step evaluations read schedules at: the run's last (or this one, past it)."""
        return max(state.iteration, self.settings.iterations - 1)

    def stop_candidate(self, state: RunState, b: int) -> None:
        """Stop candidate ``b`` (it keeps its current strokes) and tell the callbacks."""
        state.stop_candidate(b)
        for cb in self.callbacks:
            cb.on_candidate_stop(self.program, state, b)

    # ------------------------------------------------------------------ the NaN guard

    def _check_finite(self, state: RunState, terms: dict[str, Tensor], total: Tensor) -> None:
        # On CPU this check is free; on accelerators it would force a sync every step, so there it
        # runs at evaluation steps only (a NaN still surfaces there, naming the term).
        if total.device.type != "cpu" and state.iteration % self.settings.eval_every != 0:
            return
        if not bool(torch.isfinite(total).all()):
            self._raise_nonfinite(state, terms, "train")

    @staticmethod
    def _raise_nonfinite(state: RunState, terms: dict[str, Tensor], mode: str) -> None:
        bad = next((k for k, v in terms.items() if not bool(torch.isfinite(v).all())), "total")
        raise NonFiniteLossError(
            f"the {mode} loss term {bad!r} became non-finite at iteration {state.iteration}; "
            "the best result so far is attached as .result",
            iteration=state.iteration,
            term=bad,
        )


def _target(state: RunState, index: Tensor | None = None) -> Target:
    """The run's target; with one target per candidate (``image [B, 3, H, W]``, a batch of images),
    the targets of the candidates in ``index``."""
    target = state.target
    if target is None:
        raise ValueError("the run state has no target")
    if index is None or target.image.shape[0] == 1:
        return target
    mask = target.mask
    if mask is not None and mask.shape[0] > 1:
        mask = mask[index]
    return Target(target.image[index], mask, target.original_size)
