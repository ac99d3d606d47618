"""Fixed-seed runs of the tiny models whose final strokes and histories are kept as golden data.

Recorded with ``python tests/golden/record.py`` (writes ``engine.pt`` beside this file); compared by
``tests/test_engine_golden.py``. They pin the optimisation loop's bookkeeping: best-of-3, a race, a
resume from a checkpoint, a stopped candidate, the bf16 guard's fallback to fp32, re-seeding callbacks
and an LR schedule.
"""

from __future__ import annotations

import inspect
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clipasso import Callback, Sketcher, SketchState
from clipasso.losses import EdgeLoss
from clipasso.losses.base import LossContext, SketchLoss
from clipasso.result import SketchResult
from clipasso.testing import recalibrate_batchnorm, tiny_clip


class PixelLoss(SketchLoss):
    """A per-sketch pixel objective scaled by each candidate's own generator in training."""

    name = "golden_pixel"

    def compute(self, sketch: torch.Tensor, target: torch.Tensor, context: LossContext) -> torch.Tensor:
        per = torch.stack([((s - target[0]) ** 2).mean() for s in sketch])
        gens = context.generators
        if context.mode == "train" and isinstance(gens, list):
            per = per * torch.stack([1 + torch.rand((), generator=g) for g in gens]).to(per)
        return per


def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    img = torch.ones(3, 224, 224)
    img[:, 60:160, 50:170] = torch.rand(3, 1, 1, generator=g) * 0.6
    img[:, 90:130, 80:140] = 0.9
    return img


_BASE: dict[str, Any] = dict(num_strokes=4, iterations=12, eval_every=5, device="cpu", threads=1)


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    return recalibrate_batchnorm(tiny_clip("resnet", seed=0), images), tiny_clip("vit", seed=0)


def _clip(**settings: Any) -> Sketcher:
    resnet, vit = _models()
    return Sketcher(clip_model=resnet, saliency_model=vit, **{**_BASE, **settings})


def best_of_3() -> SketchResult:
    return _clip(num_sketches=3).sketch(image())


def race() -> SketchResult:
    return Sketcher(
        loss=PixelLoss(),
        initializer="random",
        **{**_BASE, "iterations": 16},
        num_sketches=3,
        early_stop_patience=0,
        early_stop_delta=0.0,
        prune_after=5,
        prune_keep=1,
        prune_tolerance=0.5,
        prune_until=10,
    ).sketch(image())


class _Interrupt(Exception):
    pass


class _KillAt(Callback):
    """Raises at a step, as a killed process would stop (after the step-6 checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, sketcher: Sketcher, state: SketchState) -> None:
        if state.iteration == self.step:
            raise _Interrupt


def resume() -> SketchResult:
    """A run killed at step 7 (its last checkpoint: step 6) and resumed from the checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.ckpt"
        killed = _clip(num_sketches=2, checkpoint_every=3)
        killed.callbacks.append(_KillAt(7))
        try:
            killed.sketch(image(), checkpoint=path)
        except _Interrupt:
            pass
        return _clip(num_sketches=2, checkpoint_every=3).sketch(image(), checkpoint=path)


def stopped() -> SketchResult:
    """The reference's early stop: candidates stop on a flat loss (a wide dead band)."""
    return _clip(num_sketches=2, early_stop_delta=0.3, early_stop_patience=1, iterations=20).sketch(image())


def guard_fallback() -> SketchResult:
    """precision='auto' with an unreachable bf16 bar: the guard falls back to fp32 (with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _clip(num_sketches=2, loss_options={"bf16_min_cosine": 1.0}, precision="auto").sketch(image())


def reseed_cosine() -> SketchResult:
    """The weights-free objective with re-seeding (a callback editing points) and a cosine schedule."""
    # the recording blurred each scale (EdgeLoss before 2026-12-02); the DCT route is the same sum with
    # other rounding, so the scenario asks for the blurs where the option exists
    spatial = "method" in inspect.signature(EdgeLoss).parameters
    return Sketcher(
        loss="edges",
        loss_options={"method": "spatial"} if spatial else None,
        initializer="random",
        **{**_BASE, "iterations": 14},
        num_sketches=2,
        reseed_every=5,
        lr_schedule="cosine",
        lr_decay_fraction=0.5,
    ).sketch(image())


SCENARIOS: dict[str, Callable[[], SketchResult]] = {
    "best_of_3": best_of_3,
    "race": race,
    "resume": resume,
    "stopped": stopped,
    "guard_fallback": guard_fallback,
    "reseed_cosine": reseed_cosine,
}


def summarise(result: SketchResult) -> dict[str, Any]:
    """What a scenario's golden record holds: every candidate's final strokes and histories."""
    out: dict[str, Any] = {"best_index": result.best_index, "candidates": []}
    for c in result.candidates:
        out["candidates"].append(
            {
                "points": c.strokes.points.clone(),
                "colors": c.strokes.colors.clone(),
                "score": c.best_loss,
                "best_iteration": c.best_iteration,
                "stop_iteration": c.stop_iteration,
                "eval_iterations": list(c.history.eval_iterations),
                "eval": {k: list(v) for k, v in c.history.eval.items()},
                "train": {k: list(v) for k, v in c.history.train.items()},
            }
        )
    return out
