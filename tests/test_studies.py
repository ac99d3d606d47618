"""The schedule study (studies/schedule_study.py) runs through the engine's hooks: per-row learning
rates, cosine horizons, per-schedule races, the JSON log and checkpoint/resume (issue 19)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from clipasso import Callback, Sketcher
from clipasso.errors import InputError
from clipasso.testing import recalibrate_batchnorm, tiny_clip

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module's annotations through it
    spec.loader.exec_module(module)
    return module


study_mod = _load(ROOT / "studies" / "schedule_study.py", "clipasso_schedule_study")
proxy = _load(ROOT / "benchmarks" / "_proxy.py", "clipasso_bench_proxy")
Schedule = study_mod.Schedule
ScheduleStudy = study_mod.ScheduleStudy

REF, HORIZON, RACE, TOL = "1:-", "0.5:6", "1:-:race=4", "1:-:race=4:tol=10:until=8"
SEEDS = (0, 1000)


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    target = proxy.synthetic_target()  # 224 px; the study prepares it at SIZE
    # a content-sensitive tiny ResNet (an unrecalibrated one gives losses ~1e-6)
    resnet = recalibrate_batchnorm(tiny_clip("resnet"), proxy.calibration_images(target))
    return {"clip_model": resnet, "saliency_model": tiny_clip("vit"), "target": target[0]}


class Points(Callback):
    """The points before every step and after it; the candidates' stops."""

    def __init__(self) -> None:
        self.before: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}
        self.stops: list[tuple[int, int]] = []

    def before_step(self, sketcher: Any, state: Any) -> None:
        self.before[state.iteration] = state.strokes.points.detach().clone()

    def on_step(self, sketcher: Any, state: Any) -> None:
        self.after[state.iteration] = state.strokes.points.detach().clone()

    def on_candidate_stop(self, sketcher: Any, state: Any, index: int) -> None:
        self.stops.append((index, state.iteration))


def _study(models: dict[str, Any], specs: list[str], **settings: Any) -> Any:
    base: dict[str, Any] = dict(
        clip_model=models["clip_model"],
        saliency_model=models["saliency_model"],
        num_strokes=4,
        image_size=SIZE,
        iterations=12,
        eval_every=4,
        precision="fp32",
        num_views=1,
    )
    return ScheduleStudy([Schedule.parse(s) for s in specs], SEEDS, **{**base, **settings})


@pytest.fixture(scope="module")
def run(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One study of 8 rows (4 schedules x 2 seeds), 12 iterations, evaluations every 4."""
    log = tmp_path_factory.mktemp("study") / "log.json"
    study = _study(models, [REF, HORIZON, RACE, TOL], log=log)
    study.callbacks.append(rec := Points())
    curves, result = study.run(models["target"])
    return {"study": study, "curves": curves, "result": result, "points": rec, "log": log}


def _row(study: Any, spec: str, seed: int) -> int:
    name = Schedule.parse(spec).name
    return next(b for b, (s, sd) in enumerate(study.rows) if s.name == name and sd == seed)


def test_per_row_lr_is_exact_on_the_first_step(run: dict[str, Any]) -> None:
    study, rec = run["study"], run["points"]
    for seed in SEEDS:
        ref, half = _row(study, REF, seed), _row(study, HORIZON, seed)
        # the same strokes and the same views: the same gradient, and half the lr
        assert torch.equal(rec.before[0][ref], rec.before[0][half])
        d_ref = rec.after[0][ref] - rec.before[0][ref]
        d_half = rec.after[0][half] - rec.before[0][half]
        assert d_ref.abs().max() > 0.5  # Adam's first step is ~lr per coordinate
        torch.testing.assert_close(d_half, 0.5 * d_ref, rtol=1e-4, atol=1e-5)


def test_a_cosine_row_freezes_at_its_horizon_and_is_evaluated_once_after(run: dict[str, Any]) -> None:
    study, rec, result = run["study"], run["points"], run["result"]
    name = Schedule.parse(HORIZON).name
    for seed in SEEDS:
        b = _row(study, HORIZON, seed)
        assert not torch.equal(rec.after[5][b], rec.before[5][b])  # its last step (lr > 0) moves it
        assert torch.equal(rec.after[6][b], rec.after[5][b])  # from its horizon (6) on: lr 0
        assert result.candidates[b].stop_iteration == 8  # stopped at the first evaluation >= 6
        assert result.candidates[b].history.eval_iterations == [0, 4, 8]
        curve = run["curves"][name][seed]
        assert curve[-1] == (12, curve[-2][1])  # carried forward, not evaluated again
        ref = _row(study, REF, seed)
        assert not torch.equal(rec.after[11][ref], rec.after[5][ref])  # the reference goes on


def test_the_races_stop_the_losers_of_each_schedule(run: dict[str, Any]) -> None:
    study, result, rec = run["study"], run["result"], run["points"]
    cands = result.candidates
    a, b = _row(study, RACE, SEEDS[0]), _row(study, RACE, SEEDS[1])
    loser, winner = (
        (a, b) if cands[a].history.eval["total"][1] > cands[b].history.eval["total"][1] else (b, a)
    )
    assert cands[loser].stop_iteration == 4 and cands[winner].stop_iteration == 12
    assert (loser, 4) in rec.stops
    assert torch.equal(rec.after[11][loser], rec.before[4][loser])  # frozen as evaluated at 4
    # with a tolerance of 1000 % both go on at 4; the final round at 8 keeps one
    tol = [_row(study, TOL, s) for s in SEEDS]
    assert sorted(cands[t].stop_iteration for t in tol) == [8, 12]
    # the other schedules' rows are not raced
    assert all(cands[_row(study, REF, s)].stop_iteration == 12 for s in SEEDS)


def test_curves_and_log_layout(run: dict[str, Any]) -> None:
    study, curves = run["study"], run["curves"]
    assert list(curves) == [Schedule.parse(s).name for s in (REF, HORIZON, RACE, TOL)]
    for per_seed in curves.values():
        assert list(per_seed) == list(SEEDS)
        for curve in per_seed.values():
            assert [it for it, _ in curve] == [0, 4, 8, 12]
            assert all(math.isfinite(v) and v > 0 for _, v in curve)
    log = json.loads(run["log"].read_text())
    assert log["iteration"] == 12 and log["seconds"] > 0
    assert [(r["schedule"], r["seed"]) for r in log["rows"]] == [(s.name, seed) for s, seed in study.rows]
    for r in log["rows"]:
        assert [tuple(e) for e in r["evals"]] == curves[r["schedule"]][r["seed"]]


class Crash(Callback):
    def before_step(self, sketcher: Any, state: Any) -> None:
        if state.iteration == 7:
            raise KeyboardInterrupt


def test_resume_equals_the_uninterrupted_run(
    models: dict[str, Any], run: dict[str, Any], tmp_path: Path
) -> None:
    ckpt = tmp_path / "study.ckpt"
    first = _study(models, [REF, HORIZON, RACE, TOL], checkpoint_every=4)
    first.callbacks.append(Crash())
    with pytest.raises(KeyboardInterrupt):
        first.run(models["target"], checkpoint=ckpt)
    assert ckpt.exists()  # written after step 4, before the race at 4 and the horizon at 6
    curves, result = _study(models, [REF, HORIZON, RACE, TOL], checkpoint_every=4).run(
        models["target"], checkpoint=ckpt
    )
    assert curves == run["curves"]
    assert [c.stop_iteration for c in result.candidates] == [
        c.stop_iteration for c in run["result"].candidates
    ]
    # another schedule set cannot resume from it
    from clipasso.errors import CheckpointError

    with pytest.raises(CheckpointError, match="other settings"):
        _study(models, [REF, "2:6", RACE, TOL]).run(models["target"], checkpoint=ckpt)


class FreshViews(Sketcher):
    """A Sketcher whose candidates' views come from freshly seeded generators, as the study's rows."""

    def initialize(self, target: Any, num_strokes: int, seeds: Any) -> Any:
        strokes, inits, _ = super().initialize(target, num_strokes, seeds)
        return strokes, inits, [torch.Generator().manual_seed(int(s)) for s in seeds]


class Steps(Callback):
    """Per step: the lr it uses (the row's, or the optimiser's) and the points after it."""

    def __init__(self, row: int | None = None) -> None:
        self.row, self.lrs, self.points = row, [], []  # type: ignore[var-annotated]

    def after_backward(self, sketcher: Any, state: Any) -> None:  # after every before_step
        opt = state.optimizer
        self.lrs.append(float(opt.row_lr[self.row]) if self.row is not None else opt.param_groups[0]["lr"])

    def on_step(self, sketcher: Any, state: Any) -> None:
        self.points.append(state.strokes.points.detach()[self.row or 0].clone())


def test_a_row_takes_the_steps_of_a_sketcher_run_with_its_schedule(models: dict[str, Any]) -> None:
    """Row "lr 3, cosine over 8" uses at every step the lr that a Sketcher with lr=3 and
    lr_schedule="cosine" over 8 iterations uses, and its first step is that Sketcher's (the same
    strokes and views). Later steps are not compared: Adam's normalised steps turn rounding
    differences into different trajectories within a few steps."""
    common: dict[str, Any] = dict(
        clip_model=models["clip_model"],
        saliency_model=models["saliency_model"],
        num_strokes=4,
        image_size=SIZE,
        iterations=8,
        eval_every=4,
        precision="fp32",
        num_views=1,
    )
    study = ScheduleStudy([Schedule.parse("1:-"), Schedule.parse("3:8")], (0,), **common)
    study.callbacks.append(row := Steps(row=1))
    study.run(models["target"])
    sk = FreshViews(
        **common,
        lr=3.0,
        lr_schedule="cosine",
        lr_decay_fraction=1.0,
        num_sketches=1,
        seed=0,
        early_stop_patience=0,
        device="cpu",
        rasterizer="torch",
    )
    sk.callbacks.append(ref := Steps())
    sk.sketch(models["target"])
    assert len(row.lrs) == len(ref.lrs) == 8
    torch.testing.assert_close(torch.tensor(row.lrs), torch.tensor(ref.lrs), rtol=1e-6, atol=1e-7)
    assert ref.lrs[0] == 3.0 and 0 < ref.lrs[-1] < 0.2  # the cosine reaches 0 at 8
    torch.testing.assert_close(row.points[0], ref.points[0], rtol=0, atol=1e-4)
    assert (row.points[0] - ref.points[0]).abs().max() < 1e-3 < (row.points[1] - row.points[0]).abs().max()


def test_bad_schedules_and_settings_are_refused(models: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown schedule option"):
        Schedule.parse("1:100:bogus=1")
    with pytest.raises(ValueError, match="until"):
        Schedule.parse("1:100:race=10:tol=0.1")
    with pytest.raises(InputError, match="not one of the study's"):
        _study(models, ["1:-:seeds=0+7"])
    with pytest.raises(InputError, match="lr_schedule"):
        _study(models, [REF], lr_schedule="cosine")
    with pytest.raises(SystemExit):
        study_mod.main(["--schedule", "10", "--reference-race", "5", "--reference-curves", "x.json"])


def test_the_study_docstrings_run() -> None:
    failures, tried = doctest.testmod(study_mod, optionflags=doctest.ELLIPSIS)
    assert tried >= 8 and failures == 0
