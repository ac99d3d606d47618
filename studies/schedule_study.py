"""The schedule study: eval loss vs iteration for several learning-rate schedules and seeds, run as
ONE batched optimisation by the engine (a research script, not a test; docs/performance.md).

Every (schedule, seed) pair is a row of one batch, a candidate of one run of
:class:`clipasso.engine.Engine`. The rows of a seed start from that seed's saliency initialisation
and see the same random views at every step (identically seeded generators: common random
numbers), so within a seed the curves differ only by the schedule. Nothing here is a loop of its
own; the study is a :class:`~clipasso.Sketcher` subclass plus one callback:

* :meth:`ScheduleStudy.start`: the batch of rows (the seeds' initial strokes, repeated per
  schedule) and their generators (``seed + VIEW_STRIDE * views``);
* :meth:`ScheduleStudy.build_optimizer`: :class:`RowScaledAdam`, Adam at lr 1 whose step moves each
  row by its own lr times Adam's displacement. That is exact with Adam: its update is
  ``lr * m / (sqrt(v) + eps)`` with ``m, v`` independent of ``lr``;
* :class:`RowSchedules` (``before_step``): each row's lr at this step, 0 from its horizon on;
* :meth:`ScheduleStudy.update_best` (the evaluation rule): the best so far, no early stop; a cosine
  row stops at its first evaluation at or after its horizon (it has not moved since);
* :meth:`ScheduleStudy.prune` (the race): per schedule, the Sketcher's racing rule
  (:func:`~clipasso.engine.race_round`, :func:`~clipasso.engine.race_survivors`) on its rows;
* the engine's checkpoint (``--schedule`` runs resume from ``WORKDIR/schedule-TAG.ckpt``) and
  :class:`ScheduleLog` (``on_eval``), the JSON log of the curves after every evaluation.

A stopped row (raced out, or past its horizon) is not evaluated again; its curve carries its last
value forward, as it no longer moves.

Usage:
    python studies/schedule_study.py --schedule 2000 --candidates 2:400,3:400 --threads 2
    python studies/schedule_study.py --schedule 1000 --candidates "1:1000:decay=300:race=50" \\
        --reference-curves benchmarks/results/schedule-2000.json --threads 1
    python studies/schedule_study.py --schedule 1400 --candidates "1:1400:race=50" \\
        --loss-options target_pool=64 --target house --threads 1

The models are the random-weight proxies of the real RN101 and ViT-B/32 (``benchmarks/_proxy.py``),
written once into ``--workdir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipasso import Sketcher
from clipasso._io import atomic_open
from clipasso.data import list_samples
from clipasso.engine import (
    Callback,
    RunState,
    cosine_lr_factor,
    early_stop_update,
    fingerprint,
    race_round,
    race_survivors,
)
from clipasso.errors import InputError
from clipasso.image import ImageLike, Target
from clipasso.init.base import InitResult
from clipasso.result import Candidate, SketchResult
from clipasso.strokes import StrokeSet

__all__ = [
    "VIEW_STRIDE",
    "RowScaledAdam",
    "RowSchedules",
    "Schedule",
    "ScheduleLog",
    "ScheduleStudy",
    "best_of",
    "first_reaching",
    "main",
]

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: Rows of another view sequence (``views=K``) seed their generators with ``seed + VIEW_STRIDE * K``.
VIEW_STRIDE = 7919

#: The reference rows' schedule name (lr 1, constant), as in the earlier studies' logs.
REFERENCE = "reference (lr 1, constant)"

Curves = dict[str, dict[int, list[tuple[int, float]]]]


@dataclass
class Schedule:
    """One learning-rate schedule of the study: ``lr`` constant, or cosine to 0 over ``horizon``.

    With ``decay`` the lr stays constant until ``horizon - decay`` and then decays to 0 by a cosine
    over the last ``decay`` iterations (constant, then a cosine warm-down).

    Example:
        >>> s = Schedule.parse("3:400:race=50")
        >>> s.name, s.at(0), s.at(400)
        ('lr 3, cosine over 400, race at 50', 3.0, 0.0)
    """

    name: str
    lr: float
    horizon: int | None = None  # None: constant
    race: int | None = None  # keep only the best seed's row after this many iterations
    views: int = 0  # view sequence: the rows' generators are seeded with seed + VIEW_STRIDE * views
    seeds: tuple[int, ...] | None = None  # None: the study's seeds
    decay: int | None = None  # cosine over the last `decay` iterations of `horizon` only
    tolerance: float = 0.0  # race: rows within this (relative) of the leader go on too ...
    until: int | None = None  # ... until this iteration (SketchConfig.prune_tolerance / prune_until)

    @classmethod
    def parse(cls, spec: str) -> Schedule:
        """``LR:HORIZON[:decay=D][:race=P[:tol=T:until=U]][:views=K][:seeds=A+B]``; HORIZON ``-``
        means constant lr.

        Raises:
            ValueError: A malformed spec, an unknown option, or options that do not fit together.
        """
        lr_s, horizon_s, *opts = spec.split(":")
        horizon = None if horizon_s == "-" else int(horizon_s)
        name = f"lr {lr_s}, " + ("constant" if horizon is None else f"cosine over {horizon}")
        race, views, seeds, decay, tolerance, until = None, 0, None, None, 0.0, None
        for opt in opts:
            key, _, value = opt.partition("=")
            if key == "decay":
                if horizon is None or not 0 < int(value) <= horizon:
                    raise ValueError(f"decay needs a horizon and 0 < decay <= horizon in {spec!r}")
                decay = int(value)
                name = f"lr {lr_s}, constant to {horizon - decay}, then cosine to 0 at {horizon}"
            elif key == "race":
                race = int(value)
                name += f", race at {race}"
            elif key == "tol":
                tolerance = float(value)
            elif key == "until":
                until = int(value)
            elif key == "views":
                views = int(value)
                name += f", views {views}"
            elif key == "seeds":
                seeds = tuple(int(x) for x in value.split("+"))
                name += f", seeds {'+'.join(value.split('+'))}"
            else:
                raise ValueError(f"unknown schedule option {opt!r} in {spec!r}")
        if tolerance or until is not None:
            if race is None or until is None or until < race:
                raise ValueError(f"tol=T needs race=P and until=U >= P in {spec!r}")
            name = name.replace(
                f", race at {race}", f", race at {race} (tolerance {tolerance} until {until})"
            )
        return cls(name, float(lr_s), horizon, race, views, seeds, decay, tolerance, until)

    def at(self, step: int) -> float:
        """The lr of step ``step`` (0 from the horizon on)."""
        if self.horizon is None:
            return self.lr
        if step >= self.horizon:
            return 0.0
        return self.lr * cosine_lr_factor(step, self.horizon, self.decay or self.horizon)


class RowScaledAdam(torch.optim.Adam):
    """Adam at lr 1 over one parameter ``[B, ...]`` whose step moves row ``b`` by ``row_lr[b]`` times
    Adam's displacement: an Adam step at lr ``row_lr[b]`` for every row, exactly (Adam's moments do
    not depend on lr). Its state is Adam's (checkpoints hold it); ``row_lr`` is set before every
    step (:class:`RowSchedules`).

    Args:
        param: The rows' parameter (the strokes' points ``[B, N, P, 2]``).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2, 3))
        >>> opt = RowScaledAdam(p)
        >>> opt.row_lr.copy_(torch.tensor([1.0, 3.0]))
        tensor([1., 3.])
        >>> p.sum().backward(); _ = opt.step()
        >>> [round(x, 4) for x in p[:, 0].tolist()]  # the first step of Adam: -lr (up to eps)
        [-1.0, -3.0]
    """

    def __init__(self, param: Tensor) -> None:
        super().__init__([param], lr=1.0)
        self.row_lr = torch.ones(param.shape[0])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        (param,) = self.param_groups[0]["params"]
        before = param.detach().clone()
        loss = super().step(closure)
        scale = self.row_lr.to(param).view(-1, *([1] * (param.dim() - 1)))
        param.copy_(before + (param - before) * scale)
        return loss


class RowSchedules(Callback):
    """``before_step``: every row's lr at this step (its schedule's; 0 once stopped or past its
    horizon) into the :class:`RowScaledAdam`."""

    def __init__(self, rows: Sequence[tuple[Schedule, int]]) -> None:
        self.rows = list(rows)

    def before_step(self, sketcher: Any, state: RunState) -> None:
        it = state.iteration
        lrs = [0.0 if state.stopped[b] else s.at(it) for b, (s, _) in enumerate(self.rows)]
        optimizer = state.optimizer
        if not isinstance(optimizer, RowScaledAdam):
            raise TypeError(f"RowSchedules needs a RowScaledAdam, got {type(optimizer).__name__}")
        optimizer.row_lr.copy_(torch.tensor(lrs))


def row_evals(
    iterations: Sequence[int], evaluated: Sequence[dict[int, float]]
) -> list[list[tuple[int, float]]]:
    """Per row, ``(iteration, eval loss)`` at every evaluation of the run; where a row was not
    evaluated (it had stopped) its last value is carried forward."""
    out = []
    for own in evaluated:
        last, curve = math.nan, []
        for it in iterations:
            last = own.get(it, last)
            curve.append((it, last))
        out.append(curve)
    return out


def _evals_of_state(state: RunState) -> list[list[tuple[int, float]]]:
    iterations = [it for it, _ in state.eval_history]
    evaluated: list[dict[int, float]] = [{} for _ in range(state.batch)]
    for it, rec in state.eval_history:
        for b, v in enumerate(rec["total"].tolist()):
            if not math.isnan(v):
                evaluated[b][it] = v
    return row_evals(iterations, evaluated)


def _evals_of_candidates(candidates: Sequence[Candidate]) -> list[list[tuple[int, float]]]:
    iterations = sorted({it for c in candidates for it in c.history.eval_iterations})
    evaluated = [dict(zip(c.history.eval_iterations, c.history.eval["total"])) for c in candidates]
    return row_evals(iterations, evaluated)


class ScheduleLog(Callback):
    """``on_eval``: the rows' curves so far, written to ``path`` (atomically) after every evaluation
    as ``{"iteration", "seconds", "rows": [{"schedule", "seed", "evals": [[it, loss], ...]}]}``
    (the layout of ``benchmarks/results/schedule-2000.json``; ``--reference-curves`` reads it)."""

    def __init__(self, path: Path, rows: Sequence[tuple[Schedule, int]]) -> None:
        self.path, self.rows = Path(path), list(rows)
        self.t0 = time.perf_counter()

    def on_start(self, sketcher: Any, state: RunState) -> None:
        self.t0 = time.perf_counter()
        if state.iteration:
            print(f"schedule study: resumed at iteration {state.iteration}", flush=True)

    def on_eval(self, sketcher: Any, state: RunState) -> None:
        rows = [
            {"schedule": s.name, "seed": seed, "evals": e}
            for (s, seed), e in zip(self.rows, _evals_of_state(state))
        ]
        log = {"iteration": state.iteration, "seconds": time.perf_counter() - self.t0, "rows": rows}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "w") as fh:
            json.dump(log, fh)


class ScheduleStudy(Sketcher):
    """Eval loss vs iteration of several schedules and seeds, optimised side by side as ONE batch
    (one row per schedule and seed; see the module's notes).

    Args:
        schedules: The schedules (:meth:`Schedule.parse`).
        seeds: The study's seeds (a schedule may run a subset, ``Schedule.seeds``).
        log: A JSON file the curves are written to after every evaluation (:class:`ScheduleLog`).
        **settings: :class:`~clipasso.Sketcher` arguments and :class:`~clipasso.SketchConfig` fields
            (``clip_model``, ``saliency_model``, ``iterations``, ``eval_every``, ``loss_options``,
            ...); ``device="cpu"``, ``rasterizer="torch"`` and ``checkpoint_every=100`` unless given.

    Raises:
        InputError: No rows, a schedule's seed that is not a study seed, or settings the study
            replaces (``lr_schedule``, ``optimize_opacity``).

    Example:
        >>> from clipasso.testing import tiny_clip
        >>> study = ScheduleStudy([Schedule.parse("2:-"), Schedule.parse("3:4")], seeds=(0,),
        ...                       clip_model=tiny_clip("resnet"), saliency_model=tiny_clip("vit"),
        ...                       num_strokes=2, image_size=64, iterations=4, eval_every=2)
        >>> curves, _ = study.run(torch.rand(3, 64, 64))
        >>> [it for it, _ in curves["lr 3, cosine over 4"][0]]
        [0, 2, 4]
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        seeds: Sequence[int] = (0,),
        *,
        log: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        self.schedules = list(schedules)
        self.study_seeds = tuple(int(s) for s in seeds)
        self.rows = [(s, seed) for s in self.schedules for seed in (s.seeds or self.study_seeds)]
        if not self.rows:
            raise InputError("the schedule study needs at least one schedule and one seed")
        for s, seed in self.rows:
            if seed not in self.study_seeds:
                raise InputError(
                    f"schedule {s.name!r}: seed {seed} is not one of the study's {self.study_seeds}"
                )
        self.log = Path(log) if log is not None else None
        settings = {"device": "cpu", "rasterizer": "torch", "checkpoint_every": 100, **settings}
        settings["num_sketches"] = len(self.rows)
        super().__init__(**settings)
        if self.config.lr_schedule is not None or self.config.optimize_opacity:
            raise InputError(
                "the schedule study sets each row's lr itself: no lr_schedule, no optimize_opacity"
            )

    # ------------------------------------------------------------------ the Sketcher's stages

    def start(self, target: Target, seeds: Sequence[int]) -> tuple[RunState, list[InitResult]]:
        """The batch of rows (the config's ``seeds`` are not used: the rows are the candidates).

        Row ``(schedule, seed)`` starts from ``seed``'s initial strokes; its generator, which draws
        its views, is seeded with ``seed + VIEW_STRIDE * schedule.views``.
        """
        strokes, inits, _ = self.initialize(target, self.config.num_strokes, list(self.study_seeds))
        pick = [self.study_seeds.index(seed) for _, seed in self.rows]
        index = torch.tensor(pick, device=strokes.points.device)
        rows = StrokeSet(
            strokes.points.detach()[index].clone(),
            strokes.widths.detach()[index].clone(),
            strokes.colors.detach()[index].clone(),
            canvas_size=strokes.canvas_size,
            trainable=("points",),
        )
        generators = [torch.Generator().manual_seed(seed + VIEW_STRIDE * s.views) for s, seed in self.rows]
        state = RunState.start(
            rows,
            self.build_optimizer(rows),
            seeds=[seed for _, seed in self.rows],
            iterations=self.config.iterations,
            generators=generators,
            target=target,
        )
        return state, [inits[i] for i in pick]

    def build_optimizer(self, strokes: StrokeSet) -> torch.optim.Optimizer:
        """:class:`RowScaledAdam` over the points: each row at its own lr, exactly."""
        return RowScaledAdam(strokes.points)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, iterations: int) -> Any:
        """None: :class:`RowSchedules` sets the rows' lrs."""
        return None

    def build_callbacks(self) -> list[Callback]:
        """The Sketcher's, then :class:`RowSchedules` and (with ``log``) :class:`ScheduleLog`."""
        callbacks = [*super().build_callbacks(), RowSchedules(self.rows)]
        if self.log is not None:
            callbacks.append(ScheduleLog(self.log, self.rows))
        return callbacks

    def update_best(self, state: RunState, b: int, loss: float) -> bool:
        """The best so far (no early stop); True (stop) at a cosine row's first evaluation at or
        after its horizon: it has not moved since, so this value is its last."""
        early_stop_update(state, b, loss, delta=0.0, patience=0)
        horizon = self.rows[b][0].horizon
        return horizon is not None and state.iteration >= horizon

    def prune(self, state: RunState) -> list[int]:
        """Per schedule with a race, the Sketcher's racing rule on its rows' best losses so far: at
        the first evaluation at or after ``race`` the best row goes on (and those within
        ``tolerance``, until ``until``); the others stop.

        A row that lost an earlier round stays in the ranking: its best is fixed and was beaten, so
        it never leads and never changes which running rows stop.
        """
        before = state.eval_history[-2][0] if len(state.eval_history) >= 2 else -1
        stops: list[int] = []
        for s in self.schedules:
            tolerance = race_round(before, state.iteration, s.race, s.until, s.tolerance)
            if tolerance is None:
                continue
            mates = {b: state.best_loss[b] for b, (r, _) in enumerate(self.rows) if r is s}
            going_on = race_survivors(mates, 1, tolerance)
            stops += [b for b in mates if b not in going_on and not state.stopped[b]]
        return stops

    def fingerprint(self, target: Target, seeds: list[int]) -> str:
        """The Sketcher's fingerprint and the rows (a checkpoint of other schedules is refused)."""
        rows = [[dataclasses.asdict(s), seed] for s, seed in self.rows]
        return fingerprint(super().fingerprint(target, seeds), rows)

    # ------------------------------------------------------------------ the study

    def run(
        self, image: ImageLike, *, checkpoint: str | os.PathLike[str] | None = None
    ) -> tuple[Curves, SketchResult]:
        """Run the study on ``image`` (resuming from ``checkpoint`` when it exists).

        Returns:
            ``{schedule name: {seed: [(iteration, eval loss), ...]}}`` and the run's result (one
            candidate per row, in row order).
        """
        result = self.sketch(image, checkpoint=checkpoint)
        curves: Curves = {}
        for (s, seed), e in zip(self.rows, _evals_of_candidates(result.candidates)):
            curves.setdefault(s.name, {})[seed] = e
        return curves, result


def first_reaching(curve: list[tuple[int, float]], value: float) -> int | None:
    """The first iteration whose best-so-far eval loss is at or below ``value`` (None: never).

    Example:
        >>> first_reaching([(0, 3.0), (10, 2.0), (20, 2.5)], 2.0)
        10
    """
    best = math.inf
    for it, v in curve:
        best = min(best, v)
        if best <= value:
            return it
    return None


def best_of(curves: dict[int, list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Best-of-seeds curve: at each iteration, the lowest best-so-far eval loss over the seeds.

    Example:
        >>> best_of({0: [(0, 3.0), (10, 1.0)], 1: [(0, 2.0), (10, 2.5)]})
        [(0, 2.0), (10, 1.0)]
    """
    seeds = list(curves)
    out, best = [], {s: math.inf for s in seeds}
    for k, (it, _) in enumerate(curves[seeds[0]]):
        for s in seeds:
            best[s] = min(best[s], curves[s][k][1])
        out.append((it, min(best.values())))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module's usage lines)."""
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks' shared helpers
    from _machine import machine_info, machine_line, pin_cores
    from _proxy import load_models, parse_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schedule", type=int, required=True, metavar="N", help="eval loss vs iteration for N iterations"
    )
    parser.add_argument(
        "--candidates",
        default="2:400,3:400",
        help="candidate schedules as LR:HORIZON (cosine to 0; '-': constant), "
        "comma-separated, each optionally followed by :decay=D (constant lr until HORIZON - D, then cosine "
        "to 0 over the last D), :race=P (after P iterations only the best "
        "seed's row goes on; :tol=T:until=U after it: rows within T (relative) of the best go on "
        "too, and only the best of them after U), :views=K (another view sequence), "
        ":seeds=A+B (a subset of --seeds)",
    )
    parser.add_argument("--seeds", default="0,1000,2000", help="seeds, comma-separated")
    parser.add_argument(
        "--reference-race",
        type=int,
        metavar="P",
        help="race the reference rows too (only the best seed's row goes on after P: "
        "cheaper, and an upper bound on the reference's best of seeds)",
    )
    parser.add_argument(
        "--reference-curves",
        type=Path,
        help="take the reference rows from this earlier study's curves (e.g. "
        "benchmarks/results/schedule-2000.json) instead of running them again",
    )
    parser.add_argument(
        "--loss-options",
        type=parse_options,
        default={},
        metavar="K=V,...",
        help="loss options of the study's objective, e.g. target_pool=64 (values read as Python literals)",
    )
    parser.add_argument(
        "--target",
        default="synthetic",
        choices=["synthetic", *list_samples()],
        help="the image to sketch: the synthetic object (default) or a clipasso.data sample",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cores", type=int, help="pin the process to this many cores (default: --threads)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "clipasso-bench",
        help="where the random-weight models, the log and the checkpoint are written",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.reference_curves and args.reference_race is not None:
        parser.error("--reference-race applies to reference rows that run; --reference-curves reuses them")
    try:
        scheds = [] if args.reference_curves else [Schedule(REFERENCE, 1.0, race=args.reference_race)]
        scheds += [Schedule.parse(spec) for spec in args.candidates.split(",")]
    except ValueError as exc:
        parser.error(f"--candidates: {exc}")
    seeds = tuple(int(x) for x in args.seeds.split(","))
    pin_cores(args.cores or args.threads)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(machine_line(machine))
    models = load_models(args.workdir, args.target)
    tag = f"{args.schedule}-{args.candidates}-{args.seeds}".replace(",", "_").replace(":", "h")
    tag += "" if args.target == "synthetic" else f"-{args.target}"
    tag += "" if args.reference_race is None else f"-refrace{args.reference_race}"
    tag += "".join(f"-{k}{v}" for k, v in sorted(args.loss_options.items()))
    tag = tag.replace("=", "").replace("+", "p")
    study = ScheduleStudy(
        scheds,
        seeds,
        log=args.workdir / f"schedule-{tag}.json",
        clip_model=models.rn101,
        saliency_model=models.vit,
        iterations=args.schedule,
        loss_options=dict(args.loss_options),
    )
    curves, _ = study.run(models.target[0], checkpoint=args.workdir / f"schedule-{tag}.ckpt")
    if args.reference_curves:  # the reference rows of an earlier study (same seeds, same views)
        earlier = json.loads(args.reference_curves.read_text())["rows"]
        curves = {
            REFERENCE: {
                r["seed"]: [(int(e[0]), float(e[1])) for e in r["evals"]]
                for r in earlier
                if r["schedule"] == REFERENCE
            },
            **curves,
        }
    report: dict[str, Any] = {"machine": machine, "threads": args.threads, "iterations": args.schedule}
    if args.loss_options:
        report["loss_options"] = args.loss_options
    report["schedule"] = curves
    ref_best = {seed: min(v for _, v in c) for seed, c in curves[REFERENCE].items()}
    ref_bo = min(ref_best.values())
    print(
        f"reference after {args.schedule} iterations: best eval per seed {ref_best}; "
        f"best of seeds {ref_bo:.5f}"
    )
    for name, per_seed in curves.items():
        for seed, c in per_seed.items():
            print(
                f"schedule {name} seed {seed}: " + ", ".join(f"{it}:{v:.4f}" for it, v in c if it % 50 == 0)
            )
        reach = {seed: first_reaching(c, ref_best[seed]) for seed, c in per_seed.items()}
        bo = first_reaching(best_of(per_seed), ref_bo)
        print(
            f"schedule {name}: first iteration at the reference's final best eval, per seed {reach}; "
            f"best of seeds {bo}"
        )
    print(
        f"load average {os.getloadavg()[0]:.2f} at the end; process max RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (getrusage)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
