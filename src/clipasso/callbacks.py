"""Callbacks: hooks into a sketch run for logging, snapshots and early stops.

Example:
    >>> class PrintEval(Callback):
    ...     def on_eval(self, sketcher, state):
    ...         print(state.iteration, state.eval_loss)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    import torch

    from .image import Target
    from .result import SketchResult
    from .sketcher import Sketcher
    from .strokes import StrokeSet

__all__ = ["Callback", "SketchState"]


@dataclass
class SketchState:
    """The live state of a run, handed to callbacks.

    Read it; change ``stop``, or, under ``torch.no_grad()`` in ``on_step``, the active candidates'
    ``strokes.points`` in place together with the optimiser's per-point state (as
    :class:`~clipasso.reseed.Reseed` does). Anything else a callback changes is not checkpointed.

    Attributes:
        iteration: The current step.
        strokes: The strokes being optimised, batched over the N candidates ``[B, N, P, 2]``.
        terms: The last training terms, ``{name: [B_active]}`` (detached).
        active: Indices of the candidates still being optimised.
        eval_loss: Per-candidate un-augmented loss at the last evaluation (floats, len B).
        best_loss: Per-candidate best evaluation loss so far.
        best_iteration: Per-candidate iteration of that best.
        stop: Set to True to end the run after this step (the best strokes so far are kept).
        extra: Free space for callbacks.
        target: The prepared target on the run's device (image ``[1, 3, H, W]``, optional mask).
        optimizer: The run's optimiser (its ``state`` holds per-point tensors such as Adam's moments).
    """

    iteration: int
    strokes: StrokeSet
    terms: dict[str, Tensor] = field(default_factory=dict)
    active: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    best_loss: list[float] = field(default_factory=list)
    best_iteration: list[int] = field(default_factory=list)
    stop: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    target: Target | None = None
    optimizer: torch.optim.Optimizer | None = None


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_start(self, sketcher: Sketcher, state: SketchState) -> None:
        """Before the first step (after initialisation, or after resuming)."""

    def on_step(self, sketcher: Sketcher, state: SketchState) -> None:
        """After every optimisation step."""

    def on_eval(self, sketcher: Sketcher, state: SketchState) -> None:
        """After every evaluation (``state.eval_loss`` is fresh)."""

    def on_end(self, sketcher: Sketcher, result: SketchResult) -> None:
        """Once, with the final result."""
