"""The live state of one optimisation: :class:`RunState`, handed to every hook and callback.

Example:
    >>> import torch
    >>> from clipasso.strokes import StrokeSet
    >>> strokes = StrokeSet(torch.rand(2, 3, 4, 2) * 64, canvas_size=64)
    >>> opt = torch.optim.Adam([strokes.points])
    >>> state = RunState.start(strokes, opt, seeds=[0, 1000], iterations=10)
    >>> state.active
    [0, 1]
    >>> state.stop_candidate(0)
    >>> state.active, state.stop_iteration
    ([1], [0, 10])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..image import Target
from ..strokes import StrokeSet

__all__ = ["RunState"]


@dataclass
class RunState:
    """Everything one optimisation holds: its strokes, optimiser, randomness, per-candidate records
    and histories. A checkpoint saves all of it (:meth:`state_dict`).

    Hooks and callbacks read it and may change it: set :attr:`stop` to end the run, call
    :meth:`stop_candidate` to stop one candidate (it keeps its strokes as they are now), or edit the
    active candidates' ``strokes.points`` in place under ``torch.no_grad()`` together with the
    optimiser's per-point state (as :class:`~clipasso.reseed.Reseed` does). Anything else a callback
    keeps of its own is not checkpointed.

    Attributes:
        strokes: The strokes being optimised, batched over the B candidates: points ``[B, N, P, 2]``.
        optimizer: The run's optimiser (its ``state`` holds per-point tensors such as Adam's moments).
        scheduler: The learning-rate scheduler, or None.
        generators: One seeded generator per candidate (they drive the augmentations).
        seeds: The candidates' seeds, len B.
        iterations: The planned number of steps.
        target: The prepared target on the run's device (image ``[1, 3, H, W]``, optional mask).
        iteration: The current step (0-based; during a step's hooks, the step being done).
        terms: The last training terms ``{name: [B_active]}`` (detached).
        best_loss: Per candidate, the best evaluation loss so far (``inf`` before the first).
        best_iteration: Per candidate, the step of that best.
        best_points: ``[B, N, P, 2]``, per candidate, the strokes that scored :attr:`best_loss`.
        best_colors: ``[B, N, 4]``, their colours.
        patience: Per candidate, evaluations without improvement since the last improvement.
        stopped: Per candidate, whether it has stopped.
        stop_iteration: Per candidate, its last step (``iterations`` while it runs).
        frozen_points: ``[B, N, P, 2]``, the strokes of stopped candidates as they were at the stop.
        frozen_colors: ``[B, N, 4]``, their colours.
        train_history: Per step, ``{term: [B]}`` (NaN for candidates that did not run).
        eval_history: Per evaluation, ``(step, {term: [B]})`` on the CPU (NaN: inactive).
        snapshots: Per evaluation, ``(step, points [B, N, P, 2])`` on the CPU.
        last_eval: Per candidate, the loss of the last evaluation (NaN: not evaluated).
        step_index: The candidates of the last step as an index tensor (None: all of them).
        stop: Set to True to end the run after this step (the best strokes so far are kept).
        extra: Free space for hooks and callbacks (not checkpointed).
        groups: The candidates of each image when several images are optimised as one batch
            (their targets are ``target.image [B, 3, H, W]``, one per candidate); None: one image.
            Races and best-of-N apply within a group.
    """

    strokes: StrokeSet
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    generators: list[torch.Generator] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    iterations: int = 0
    target: Target | None = None
    iteration: int = 0
    terms: dict[str, Tensor] = field(default_factory=dict)
    best_loss: list[float] = field(default_factory=list)
    best_iteration: list[int] = field(default_factory=list)
    best_points: Tensor | None = None
    best_colors: Tensor | None = None
    patience: list[int] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    stop_iteration: list[int] = field(default_factory=list)
    frozen_points: Tensor | None = None
    frozen_colors: Tensor | None = None
    train_history: list[dict[str, Tensor]] = field(default_factory=list)
    eval_history: list[tuple[int, dict[str, Tensor]]] = field(default_factory=list)
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)
    last_eval: list[float] = field(default_factory=list)
    step_index: Tensor | None = None
    stop: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    groups: list[list[int]] | None = None
    _indices: dict[tuple[int, ...], Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def start(
        cls,
        strokes: StrokeSet,
        optimizer: torch.optim.Optimizer,
        *,
        seeds: Sequence[int],
        iterations: int,
        scheduler: Any = None,
        generators: Sequence[torch.Generator] | None = None,
        target: Target | None = None,
    ) -> RunState:
        """The state of a run before its first step: every candidate running, nothing evaluated.

        Args:
            strokes: The initial strokes, batched ``[B, N, P, 2]`` with ``B == len(seeds)``.
            optimizer: The optimiser over ``strokes``' parameters.
            seeds: One seed per candidate.
            iterations: The planned number of steps.
            scheduler: An optional learning-rate scheduler.
            generators: One generator per candidate (default: seeded with ``seeds``).
            target: The prepared target on the run's device.
        """
        b = len(seeds)
        if strokes.batch_size != b:
            raise ValueError(f"{strokes.batch_size} sketches in the strokes but {b} seeds")
        gens = (
            list(generators)
            if generators is not None
            else [torch.Generator().manual_seed(int(s)) for s in seeds]
        )
        points, colors = strokes.points.detach(), strokes.colors.detach()
        return cls(
            strokes=strokes,
            optimizer=optimizer,
            scheduler=scheduler,
            generators=gens,
            seeds=[int(s) for s in seeds],
            iterations=iterations,
            target=target,
            best_loss=[math.inf] * b,
            best_iteration=[0] * b,
            best_points=points.clone(),
            best_colors=colors.clone(),
            patience=[0] * b,
            stopped=[False] * b,
            stop_iteration=[iterations] * b,
            frozen_points=points.clone(),
            frozen_colors=colors.clone(),
        )

    # ------------------------------------------------------------------ views

    @property
    def batch(self) -> int:
        """The number of candidates B."""
        return len(self.seeds)

    @property
    def active(self) -> list[int]:
        """Indices of the candidates still being optimised."""
        return [b for b in range(self.batch) if not self.stopped[b]]

    @property
    def eval_loss(self) -> list[float]:
        """Per candidate, the un-augmented loss of the last evaluation (the list :attr:`last_eval`)."""
        return self.last_eval

    @property
    def device(self) -> torch.device:
        """The device of the strokes."""
        return self.strokes.points.device

    def index_of(self, ids: Sequence[int], device: torch.device | None = None) -> Tensor:
        """A cached index tensor of candidates ``ids``: built once per set, so the loop makes no
        host-to-device copy per step."""
        key = tuple(ids)
        if key not in self._indices:
            self._indices[key] = torch.tensor(key, dtype=torch.long, device=device or self.device)
        return self._indices[key]

    def active_index(self, device: torch.device | None = None) -> Tensor | None:
        """Index tensor of the active candidates (None when all are active)."""
        active = self.active
        return None if len(active) == self.batch else self.index_of(active, device)

    def scatter(self, values: Tensor, index: Tensor | None) -> Tensor:
        """``[B_active]`` values of the candidates in ``index`` as ``[B]`` (NaN elsewhere), on the
        values' device (no host sync inside the loop)."""
        if index is None:
            return values.detach().float()
        out = torch.full((self.batch,), math.nan, device=values.device)
        out[index] = values.detach().float()
        return out

    # ------------------------------------------------------------------ changes

    def stop_candidate(self, b: int) -> None:
        """Stop candidate ``b`` now: it keeps its current strokes to the end (and its best so far)."""
        assert self.frozen_points is not None and self.frozen_colors is not None
        if self.stopped[b]:
            return
        self.stopped[b] = True
        self.stop_iteration[b] = self.iteration
        self.frozen_points[b] = self.strokes.points.detach()[b]
        self.frozen_colors[b] = self.strokes.colors.detach()[b]

    def keep_best(self, b: int, loss: float) -> None:
        """Record ``loss`` as candidate ``b``'s best, with its current strokes."""
        assert self.best_points is not None and self.best_colors is not None
        self.best_loss[b] = loss
        self.best_iteration[b] = self.iteration
        self.best_points[b] = self.strokes.points.detach()[b]
        self.best_colors[b] = self.strokes.colors.detach()[b]

    def restore_stopped(self) -> None:
        """Put the stopped candidates' strokes back as they were at their stop (after an optimiser
        step moved the whole batch)."""
        if not any(self.stopped):
            return
        assert self.frozen_points is not None and self.frozen_colors is not None
        idx = self.index_of([b for b, s in enumerate(self.stopped) if s])
        with torch.no_grad():
            self.strokes.points[idx] = self.frozen_points[idx]
            self.strokes.colors[idx] = self.frozen_colors[idx]

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, on the CPU where it is a tensor of strokes."""
        return {
            "iteration": self.iteration,
            "points": self.strokes.points.detach().cpu(),
            "colors": self.strokes.colors.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "generators": [g.get_state() for g in self.generators],
            "best_loss": self.best_loss,
            "best_iteration": self.best_iteration,
            "best_points": self.best_points,
            "best_colors": self.best_colors,
            "patience": self.patience,
            "stopped": self.stopped,
            "stop_iteration": self.stop_iteration,
            "frozen_points": self.frozen_points,
            "frozen_colors": self.frozen_colors,
            "train_history": [{k: v.cpu() for k, v in h.items()} for h in self.train_history],
            "eval_history": [[it, rec] for it, rec in self.eval_history],
            "snapshots": [[it, pts] for it, pts in self.snapshots],
            "last_eval": self.last_eval,
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checked by :func:`~clipasso.engine.checkpoint.read_checkpoint`).

        Raises:
            ValueError, KeyError, TypeError, RuntimeError, IndexError: An optimizer, scheduler or
                generator state that does not fit.
        """
        dev = self.device
        self.optimizer.load_state_dict(data["optimizer"])
        if self.scheduler is not None and data["scheduler"] is not None:
            self.scheduler.load_state_dict(data["scheduler"])
        for g, s in zip(self.generators, data["generators"]):
            g.set_state(s)
        with torch.no_grad():
            self.strokes.points.copy_(data["points"].to(dev))
            self.strokes.colors.copy_(data["colors"].to(dev))
        self.iteration = data["iteration"]
        self.best_loss = [float(x) for x in data["best_loss"]]
        self.best_iteration = list(data["best_iteration"])
        self.best_points = data["best_points"].to(dev)
        self.best_colors = data["best_colors"].to(dev)
        self.patience = list(data["patience"])
        self.stopped = list(data["stopped"])
        self.stop_iteration = list(data["stop_iteration"])
        self.frozen_points = data["frozen_points"].to(dev)
        self.frozen_colors = data["frozen_colors"].to(dev)
        self.train_history = [{k: v.to(dev) for k, v in h.items()} for h in data["train_history"]]
        self.eval_history = [(it, rec) for it, rec in data["eval_history"]]
        self.snapshots = [(it, pts) for it, pts in data["snapshots"]]
        self.last_eval = [float(x) for x in data["last_eval"]]
