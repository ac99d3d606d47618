"""Candidates: the reference's evaluation/early-stop rule, the race, best-of-N and the results.

The functions here are the rules :class:`~clipasso.engine.Engine` applies after every evaluation
(through the program's ``update_best`` and ``prune``, which the :class:`~clipasso.Sketcher` forwards
to them), and how a finished :class:`~clipasso.engine.RunState` becomes
:class:`~clipasso.result.Candidate` objects.

Example:
    >>> race_survivors({0: 2.33, 1: 2.311, 2: 2.309}, keep=1)
    [2]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ..init.base import InitResult
from ..result import Candidate, LossHistory
from ..strokes import StrokeSet
from .state import RunState

__all__ = [
    "candidates_from_state",
    "early_stop_update",
    "race_round",
    "race_stops",
    "race_survivors",
    "select_best",
]


def early_stop_update(state: RunState, b: int, loss: float, delta: float, patience: int) -> bool:
    """The reference's evaluation rule for candidate ``b``; returns True when it should stop.

    A loss more than ``delta`` below the best is an improvement (its strokes, the ones just
    evaluated, are kept); one within ``delta`` of the best is a "no change", and ``patience`` of those
    since the last improvement stop the candidate (``patience=0``: never).

    Args:
        state: The run (its best records of ``b`` are updated in place).
        b: The candidate.
        loss: Its evaluation loss now.
        delta: ``SketchConfig.early_stop_delta``.
        patience: ``SketchConfig.early_stop_patience``.
    """
    change = loss - state.best_loss[b]
    if state.best_loss[b] == math.inf or (abs(change) > delta and change < 0):
        state.keep_best(b, loss)
        state.patience[b] = 0
        return False
    if abs(change) <= delta and patience > 0:
        state.patience[b] += 1
        return state.patience[b] >= patience
    return False


def race_round(
    before: int, now: int, prune_after: int | None, prune_until: int | None, tolerance: float
) -> float | None:
    """Whether the evaluation at step ``now`` is a round of the race, and the round's tolerance.

    The race has at most two rounds: the first evaluation at or after ``prune_after``, with
    ``tolerance``, and the first at or after ``prune_until``, with none (the final round). ``before``
    is the step of the previous evaluation (-1 if none), so the rounds follow from the evaluation
    history alone (a resumed run needs no extra state). :func:`race_stops` applies
    :func:`race_survivors` with the tolerance returned.

    Returns:
        The tolerance of the round, or None when ``now`` is not a round (or there is no race).

    Example:
        >>> race_round(40, 50, 50, 300, 0.005), race_round(50, 60, 50, 300, 0.005)
        (0.005, None)
        >>> race_round(290, 300, 50, 300, 0.005)
        0.0
    """
    if prune_after is None:
        return None
    if prune_until is not None and before < prune_until <= now:
        return 0.0
    if before < prune_after <= now:
        return tolerance
    return None


def race_survivors(best: Mapping[int, float], keep: int, tolerance: float = 0.0) -> list[int]:
    """The racing rule: which of the running candidates go on, given their best evaluation losses.

    The ``keep`` candidates with the lowest loss go on (ties: the lower index), and so does any other
    candidate whose loss is less than ``tolerance`` (relative) above the leader's, i.e. below
    ``leader + tolerance * |leader|``: a gap that small is not taken as evidence. ``tolerance=0``
    keeps exactly ``keep``.

    Args:
        best: ``{candidate index: best evaluation loss so far}`` of the running candidates.
        keep: How many go on whatever the gaps (at least 1).
        tolerance: The relative gap to the leader under which a candidate also goes on (>= 0).

    Returns:
        The indices that go on, sorted.

    Example:
        >>> race_survivors({0: 2.33, 1: 2.311, 2: 2.309}, keep=1, tolerance=0.005)
        [1, 2]
    """
    ranked = sorted(best, key=lambda b: (best[b], b))
    if not ranked:
        return []
    lead = best[ranked[0]]
    bound = lead + tolerance * abs(lead)
    return sorted(b for i, b in enumerate(ranked) if i < keep or best[b] < bound)


def race_stops(
    state: RunState,
    prune_after: int | None,
    keep: int,
    tolerance: float,
    prune_until: int | None,
    among: Sequence[int] | None = None,
) -> list[int]:
    """The race (``SketchConfig.prune_*``): which running candidates stop at this evaluation.

    At the first evaluation at or after ``prune_after``, the ``keep`` running candidates with the
    lowest best evaluation loss go on, and so does any other within ``tolerance`` of the leader
    (:func:`race_survivors`). If ``prune_until`` is set, the survivors then run side by side until
    the first evaluation at or after it, where only ``keep`` go on. ``prune_after=None`` (the
    reference): nothing is pruned.

    ``among``: race only these candidates (one image's, in a batch of images); None: all.

    Returns:
        The indices of the candidates to stop.
    """
    active = state.active if among is None else [b for b in state.active if b in set(among)]
    before = state.eval_history[-2][0] if len(state.eval_history) >= 2 else -1  # the previous evaluation
    rnd = race_round(before, state.iteration, prune_after, prune_until, tolerance)
    if rnd is None or len(active) <= keep:
        return []
    going_on = race_survivors({b: state.best_loss[b] for b in active}, keep, rnd)
    return sorted(set(active) - set(going_on))


def select_best(scores: Sequence[float]) -> int:
    """Best-of-N: the index of the lowest finite score (the first such on ties; 0 if none is finite).

    Example:
        >>> select_best([2.0, float("nan"), 1.5])
        2
    """
    return min(range(len(scores)), key=lambda i: (not math.isfinite(scores[i]), scores[i]))


def candidates_from_state(
    state: RunState, inits: Sequence[InitResult | None] | None = None
) -> list[Candidate]:
    """The run's candidates, each with its best strokes (on the CPU), histories and snapshots.

    Args:
        state: A run (finished, or stopped by an error: then its best so far).
        inits: Per candidate, the initializer's result (maps kept for inspection), or None.
    """
    assert state.best_points is not None and state.best_colors is not None
    keys = list(dict.fromkeys(k for h in state.train_history for k in h))  # a scheduled term may start late
    nan = torch.full((state.batch,), math.nan)
    train = {
        k: torch.stack([h[k].cpu() if k in h else nan for h in state.train_history]).tolist() for k in keys
    }
    evals = [(it, {k: v.cpu().tolist() for k, v in rec.items()}) for it, rec in state.eval_history]
    out = []
    for b in range(state.batch):
        strokes = StrokeSet(
            state.best_points[b : b + 1].detach().cpu(),
            state.strokes.widths[b : b + 1].detach().cpu(),
            state.best_colors[b : b + 1].detach().cpu().clamp(0, 1),
            canvas_size=state.strokes.canvas_size,
        )
        history = LossHistory()
        last = state.stop_iteration[b]
        for k, rows in train.items():
            history.train[k] = [row[b] for row in rows[:last]]
        for it, rec in evals:
            if math.isnan(rec["total"][b]):
                continue
            history.eval_iterations.append(it)
            for k, v in rec.items():
                history.eval.setdefault(k, []).append(v[b])
        snaps = [(it, pts[b]) for it, pts in state.snapshots if it <= last]
        init = inits[b] if inits is not None else None
        out.append(
            Candidate(
                strokes=strokes,
                best_loss=state.best_loss[b],
                seed=state.seeds[b],
                best_iteration=state.best_iteration[b],
                stop_iteration=last,
                history=history,
                snapshots=snaps,
                init=_init_to_cpu(init),
            )
        )
    return out


def _init_to_cpu(init: InitResult | None) -> InitResult | None:
    if init is None:
        return None

    def cpu(x: Tensor | None) -> Tensor | None:
        return x.detach().cpu() if x is not None else None

    return InitResult(
        strokes=init.strokes,
        relevance=cpu(init.relevance),
        edges=cpu(init.edges),
        distribution=cpu(init.distribution),
        pixels=cpu(init.pixels),
    )
