"""Benchmark of a whole sketch run: the reference's cost structure against our default (not a test).

In ONE process, on the same target and the same random-weight models of the REAL architectures
(CLIP RN101 for the loss, CLIP ViT-B/32 for the saliency initialisation; built with
``clip.model.CLIP`` and the published hyper-parameters, random init, ResNet BatchNorm recalibrated
with :func:`clipasso.testing.recalibrate_batchnorm` so the loss is content-sensitive, written with
``torch.save`` and read back through :func:`clipasso.models.load_clip`), it runs

(a) ``baseline``: the reference's cost structure: fp32, the 3 seeds (0, 1000, 2000) one after
    another (B = 1 each), target views recomputed every iteration WITH autograd and the CLIP
    weights left trainable (``requires_grad=True``, so backward also computes weight gradients
    through both the sketch and the target pass), 5 views, no caching. The render is diffvg's,
    as in the reference, where the real diffvg is installed (``--baseline-rasterizer``; without
    diffvg our torch rasterizer, which is cheaper, so the baseline is then faster than the real
    reference; ``--baseline-rasterizer diffvg,torch`` runs both in the same process and gives the
    ratios against each; ``--machine-check`` compares this machine with METHOD §7's);
(b) ``default``: ``Sketcher`` with its defaults: batched best-of-3 in one optimisation, frozen CLIP,
    target pass without autograd, plus the speed-ups ``SketchConfig`` turns on by default
    (``precision="auto"``, ``channels_last=True``; ``CLIPConvLoss(cache_target_base=True)``).

It prints seconds per iteration (per optimisation step; for (a) the mean over its 3 separate
runs), iterations per second, the peak resident set size (RSS) of each phase (sampled with psutil
every 5 ms by a background thread: the process's RSS, so it includes the loaded models), the
ratios (b)/(a), and the evaluation losses both reach after the same number of iterations (each
run's own best eval loss, and the final best strokes re-scored by one common fp32 evaluator).

Usage:
    python benchmarks/bench_sketch.py --iterations 5            # a few minutes on 2 CPU cores
    python benchmarks/bench_sketch.py --iterations 5 --only default   # peak memory of (b) alone
    python benchmarks/bench_sketch.py --profile                 # where one iteration's time goes
    python benchmarks/bench_sketch.py --options                 # each speed-up switched on/off
    python benchmarks/bench_sketch.py --only none --kernels --threads 1   # the CLIP kernels of a step
    python benchmarks/bench_sketch.py --only none --machine-check   # METHOD §7's parts timed here
    python benchmarks/bench_sketch.py --preset fast --iterations 1000 --baseline-iterations 4
        # time to a whole best-of-3 sketch with a preset vs the reference recipe, same process

Timings on a machine shared with other jobs: use ``--threads 1`` (see docs/performance.md); it also
pins the process to one core (``--cores``), since diffvg starts a worker per system core on every
render whatever torch's thread count. The first line of the output (and ``machine`` in the JSON)
names the CPU and whether it has AMX. Results are recorded in docs/performance.md. The proxy
models and inputs come from ``benchmarks/_proxy.py`` (shared with ``studies/``); the learning-rate
schedule study is ``studies/schedule_study.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil
import torch
from _machine import machine_info, machine_line, pin_cores
from _proxy import SEEDS, Models, load_models, parse_options, random_sketches
from torch import Tensor, nn

from clipasso import Sketcher
from clipasso.config import SketchConfig
from clipasso.data import list_samples
from clipasso.engine import Engine
from clipasso.losses import CLIPConvLoss, LossContext
from clipasso.losses.fusion import FusedBottleneck
from clipasso.losses.prepack import PackedConv2d
from clipasso.models import visual_of
from clipasso.render import composite, list_rasterizers, rasterize

# ---------------------------------------------------------------------------------------- memory


class PeakRSS:
    """Samples the process RSS (psutil) every ``interval`` seconds in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def gib(n: float) -> float:
    return n / 2**30


# ------------------------------------------------------------------------------- the two configurations


class ReferenceCostLoss(CLIPConvLoss):
    """The default objective computed with the reference's cost structure (for the baseline only).

    fp32, no caching, the CLIP weights trainable (``requires_grad=True``) while the features are
    computed, and the target views go through CLIP WITH autograd: backward then computes weight
    gradients through both the sketch and the target pass, and they accumulate in ``.grad`` from
    step to step, as in the reference (its optimiser only holds the strokes). :meth:`compute` leaves
    the weights trainable (backward needs them so); :func:`drop_weight_grads` freezes them again and
    frees the gradients after the run. The terms equal :class:`CLIPConvLoss`'s.
    """

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__(
            model, precision="fp32", channels_last=False, cache_target_base=False, target_pool=0, **options
        )

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> dict[str, Tensor]:
        visual = visual_of(self.model.get(sketch.device))
        visual.requires_grad_(True)  # the reference never freezes CLIP (undone by drop_weight_grads)
        xs, ys = self.augment(sketch, target, context.generators, train=context.train)
        assert ys is not None
        fx = self.view_features(visual, xs, "fp32")
        fy = self.view_features(visual, ys, "fp32")  # with autograd, like the reference
        return self.terms(fx, fy, sketch.dtype)


def drop_weight_grads(model: nn.Module) -> None:
    """Freeze CLIP again and free the weight gradients a :class:`ReferenceCostLoss` run accumulated."""
    visual = visual_of(model)
    visual.requires_grad_(False)
    for p in visual.parameters():
        p.grad = None


class TimedEngine(Engine):
    """The engine, recording the wall time of every step and every evaluation into its Sketcher."""

    def step(self, state: Any) -> dict[str, Tensor]:
        owner = cast(TimedSketcher, self.program)
        n_eval = len(owner.eval_times)
        t0 = time.perf_counter()
        out = super().step(state)
        owner.step_times.append(time.perf_counter() - t0)
        owner.step_evals.append(sum(owner.eval_times[n_eval:]))
        return out

    def evaluate(self, *args: Any, **kwargs: Any) -> list[float]:
        t0 = time.perf_counter()
        out = super().evaluate(*args, **kwargs)
        cast(TimedSketcher, self.program).eval_times.append(time.perf_counter() - t0)
        return out


class TimedSketcher(Sketcher):
    """A :class:`Sketcher` whose engine records the wall time of every step and every evaluation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_times: list[float] = []
        self.eval_times: list[float] = []
        self.step_evals: list[float] = []  # evaluation time inside each step (0 if none)

    def build_engine(self, checkpoint: Any, fingerprint: str) -> Engine:
        base = super().build_engine(checkpoint, fingerprint)
        return TimedEngine(self, base.settings, base.callbacks, base.checkpointer)


@dataclass
class PhaseResult:
    """Timings of one configuration: ``train`` = median step time without evaluation (steps >= 1),
    ``eval`` = median evaluation time (without the first, which pays one-off set-up), ``setup`` =
    first step minus a regular step (bf16 guard, caches, kernel selection), ``init`` = target
    preparation + saliency initialisation."""

    name: str
    sketches: int
    train: float
    eval: float
    setup: float
    init: float
    peak_rss: int
    best_eval: list[float]
    rescored: list[float] = field(default_factory=list)
    strokes: list[Tensor] = field(default_factory=list)
    wall: float = 0.0  # whole sketch() calls, summed over the phase's runs (``timings["total"]``)
    stops: list[int] = field(default_factory=list)  # each candidate's last step (a race stops losers)

    def per_iteration(self, eval_every: int = 10) -> float:
        """Seconds per optimisation step of the whole configuration, evaluation every ``eval_every``."""
        return self.train + self.eval / eval_every

    def recipe_seconds(self, eval_every: int = 10, iterations: int = 2000) -> float:
        """The reference recipe's length (``iterations`` steps) at this cost per step, plus initialisation."""
        return iterations * self.per_iteration(eval_every) + self.init


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def run_sketcher(
    models: Models,
    loss: CLIPConvLoss | None,
    seeds: list[int],
    iterations: int,
    loss_options: dict[str, Any] | None = None,
    preset: str | None = None,
    settings: dict[str, Any] | None = None,
    rasterizer: str = "torch",
) -> tuple[TimedSketcher, Any]:
    seed_stride = seeds[1] - seeds[0] if len(seeds) > 1 else 1000
    config = SketchConfig.preset(preset, **(settings or {})) if preset else SketchConfig(**(settings or {}))
    if loss_options:  # merged over the preset's loss options
        config = config.replace(loss_options={**config.loss_options, **loss_options})
    sk = TimedSketcher(
        config,
        loss=loss,
        clip_model=models.rn101,
        saliency_model=models.vit,
        device="cpu",
        rasterizer=rasterizer,
        num_sketches=len(seeds),
        seed=seeds[0],
        seed_stride=seed_stride,
        iterations=iterations,
    )
    result = sk.sketch(models.target[0])
    return sk, result


def _phase(name: str, runs: list[tuple[TimedSketcher, Any]]) -> PhaseResult:
    """Sum the runs of a phase (sequential seeds) into one :class:`PhaseResult`."""
    train, evals, setup, init, best, strokes, stops = 0.0, 0.0, 0.0, 0.0, [], [], []
    for sk, result in runs:
        regular = [s - e for s, e in zip(sk.step_times[1:], sk.step_evals[1:])]
        t = _median(regular)
        e = _median(sk.eval_times[1:])
        train, evals = train + t, evals + e
        setup += sk.step_times[0] - sk.step_evals[0] - t + (sk.eval_times[0] - e)
        init += result.timings["prepare_and_init"]
        for c in result.candidates:
            best.append(c.best_loss)
            strokes.append(c.strokes)
            stops.append(c.stop_iteration)
    wall = sum(result.timings["total"] for _, result in runs)
    return PhaseResult(
        name, len(best), train, evals, setup, init, 0, best, strokes=strokes, wall=wall, stops=stops
    )


def rescore(models: Models, strokes: list[Any]) -> list[float]:
    """The un-augmented fp32 objective of strokes, by one common evaluator (no caches, no bf16)."""
    loss = CLIPConvLoss(models.rn101, precision="fp32", cache_target_base=False)
    out = []
    with torch.no_grad():
        for s in strokes:
            sketch = s.render(background=1.0)
            out.append(float(sum(loss(sketch, models.target, LossContext(mode="eval")).values())))
    return out


def run_baseline(models: Models, iterations: int, rasterizer: str = "torch") -> PhaseResult:
    runs = []
    with PeakRSS() as mem:
        for seed in SEEDS:
            loss = ReferenceCostLoss(models.rn101)
            runs.append(run_sketcher(models, loss, [seed], iterations, rasterizer=rasterizer))
    drop_weight_grads(models.rn101)
    phase = _phase(f"baseline (reference cost, 3 seeds in sequence, {rasterizer} render)", runs)
    phase.peak_rss = mem.peak
    return phase


def run_default(
    models: Models,
    iterations: int,
    loss_options: dict[str, Any] | None = None,
    name: str = "default (batched best-of-3)",
    preset: str | None = None,
    settings: dict[str, Any] | None = None,
) -> PhaseResult:
    with PeakRSS() as mem:
        run = run_sketcher(models, None, list(SEEDS), iterations, loss_options, preset, settings)
    phase = _phase(name, [run])
    phase.peak_rss = mem.peak
    return phase


# ---------------------------------------------------------------------------------------- profile


class IterationProfiler:
    """Times the parts of one training step of ``batch`` sketches (16 strokes at 224), one repetition
    per :meth:`run` call (so configurations can be interleaved): render, augmentation (views of sketch
    and target), CLIP forward of the sketch views, target features, loss terms, backward through
    CLIP, backward through the render, Adam step, and one evaluation (reported divided by 10, its
    share at ``eval_every = 10``)."""

    def __init__(self, models: Models, loss: CLIPConvLoss, batch: int, reference_cost: bool = False) -> None:
        self.models, self.loss, self.batch, self.reference_cost = models, loss, batch, reference_cost
        g = torch.Generator().manual_seed(0)
        p0 = torch.rand(batch, 16, 1, 2, generator=g) * 224
        steps = 11.2 * (torch.rand(batch, 16, 3, 2, generator=g) - 0.5)
        self.points = torch.cat([p0, p0 + steps.cumsum(2)], 2).requires_grad_(True)
        self.widths = torch.full((batch, 16), 1.5)
        self.colors = torch.tensor([0.0, 0, 0, 1]).expand(batch, 16, 4)
        self.opt = torch.optim.Adam([self.points], lr=1.0)
        self.gens = [torch.Generator().manual_seed(s) for s in SEEDS[:batch]]
        self.parts: dict[str, list[float]] = {}

    def _tick(self, name: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.parts.setdefault(name, []).append(t1 - t0)
        return t1

    def run(self) -> None:
        loss, target = self.loss, self.models.target
        visual = visual_of(loss.model.get(target.device))
        t = time.perf_counter()
        sketch = composite(rasterize(self.points, self.widths, self.colors, size=224), 1.0)
        t = self._tick("render", t)
        precision = loss.resolve_precision(visual, sketch.detach(), target)  # "auto": guard on 1st call
        t = time.perf_counter()
        leaf = sketch.detach().requires_grad_(True)
        xs, ys = loss.augment(leaf, target, self.gens, train=True)
        assert ys is not None
        t = self._tick("augment", t)
        fx = loss.view_features(visual, xs, precision)
        t = self._tick("clip_forward_sketch", t)
        if self.reference_cost:
            fy = loss.view_features(visual, ys, precision)
        else:
            fy = loss.target_features(visual, target, ys, True, precision)
        t = self._tick("target_features", t)
        total = torch.stack(list(loss.terms(fx, fy, leaf.dtype).values())).sum()
        t = self._tick("loss_terms", t)
        total.backward()
        t = self._tick("backward_clip", t)
        sketch.backward(leaf.grad)
        t = self._tick("backward_render", t)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t = self._tick("optimizer", t)
        with torch.no_grad():
            loss(sketch.detach(), target, LossContext(mode="eval"))
        self.parts.setdefault("eval/10", []).append((time.perf_counter() - t) / 10)

    def summary(self, skip: int = 1) -> dict[str, float]:
        """Per part the median over the repetitions after the first ``skip`` (warm-up); ``total`` =
        sum of the parts, ``best_total`` = the fastest whole repetition."""
        out = {k: _median(v[skip:]) for k, v in self.parts.items()}
        totals = [sum(v[i] for v in self.parts.values()) for i in range(skip, len(self.parts["render"]))]
        out["total"] = sum(out.values())
        out["best_total"] = min(totals) if totals else math.nan
        return out


def profile_interleaved(models: Models, rounds: int = 4) -> dict[str, dict[str, float]]:
    """One step of the baseline (B = 1, done 3 times = one best-of-3 iteration) and of the default
    (B = 3), alternating, ``rounds`` times each; see :class:`IterationProfiler`."""
    base = IterationProfiler(models, ReferenceCostLoss(models.rn101), 1, reference_cost=True)
    default_loss = Sketcher(clip_model=models.rn101).build_loss()
    assert isinstance(default_loss, CLIPConvLoss)
    ours = IterationProfiler(models, default_loss, 3)
    one_loss = Sketcher(clip_model=models.rn101).build_loss()
    assert isinstance(one_loss, CLIPConvLoss)
    one = IterationProfiler(models, one_loss, 1)
    fp32 = IterationProfiler(models, CLIPConvLoss(models.rn101, precision="fp32"), 3)
    for _ in range(rounds + 1):
        for prof in (base, ours, one, fp32):
            prof.run()
    drop_weight_grads(models.rn101)
    out = {
        "baseline B=1": base.summary(),
        "default B=3": ours.summary(),
        "default B=1": one.summary(),
        "default but fp32, no channels_last B=3": fp32.summary(),
    }
    out["default B=3"]["bf16"] = float(default_loss.active_precision == "bf16")
    out["default B=1"]["bf16"] = float(one_loss.active_precision == "bf16")
    return out


def timed(fn: Callable[[], object], reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up call."""
    ts = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return _median(ts[1:])


def time_loss(models: Models, loss: CLIPConvLoss, batch: int, reps: int = 3) -> float:
    """Median seconds of one training loss forward + backward (to the sketch image) of ``batch`` sketches."""
    sketch = random_sketches(batch, seed=7).requires_grad_(True)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS[:batch]]

    def step() -> None:
        total = sum(loss(sketch, models.target, LossContext(generators=gens)).values())
        total.sum().backward()

    return timed(step, reps)


def option_effects(models: Models, reps: int = 2, with_compile: bool = False) -> dict[str, Any]:
    """Training loss forward + backward times with each speed-up on/off (best-of-3 batch unless said)."""
    rn = models.rn101
    out: dict[str, Any] = {}
    fp32: dict[str, Any] = dict(precision="fp32", channels_last=False, cache_target_base=False)
    out["reference cost (weights trainable, target with autograd), B=1"] = time_loss(
        models, ReferenceCostLoss(rn), 1, reps
    )
    drop_weight_grads(rn)
    out["frozen + no-grad target, fp32, B=1"] = time_loss(models, CLIPConvLoss(rn, **fp32), 1, reps)
    out["frozen + no-grad target, fp32, B=3 (batched)"] = time_loss(models, CLIPConvLoss(rn, **fp32), 3, reps)
    out["+ cache_target_base, fp32, B=3"] = time_loss(
        models, CLIPConvLoss(rn, precision="fp32", channels_last=False), 3, reps
    )
    out["+ channels_last, fp32, B=3"] = time_loss(
        models, CLIPConvLoss(rn, precision="fp32", channels_last=True), 3, reps
    )
    out["+ bf16, channels_last, B=3"] = time_loss(
        models, CLIPConvLoss(rn, precision="bf16", channels_last=True), 3, reps
    )
    out["bf16 without channels_last, B=3"] = time_loss(
        models, CLIPConvLoss(rn, precision="bf16", channels_last=False), 3, reps
    )
    for batch in (3, 1):  # fewer random views per step, weighted to keep the reference's objective
        if batch == 1:  # the 4-view B = 1 row to compare with (B = 3: "+ bf16, channels_last" above)
            out["bf16, channels_last, B=1"] = time_loss(
                models, CLIPConvLoss(rn, precision="bf16", channels_last=True), 1, reps
            )
        for views in (2, 1):
            fewer = CLIPConvLoss(
                rn, precision="bf16", channels_last=True, num_views=views, identity_weight=0.2
            )
            out[f"num_views={views}, identity_weight=0.2, bf16, channels_last, B={batch}"] = time_loss(
                models, fewer, batch, reps
            )
    pooled = CLIPConvLoss(rn, precision="bf16", channels_last=True, target_pool=32)
    t0 = time.perf_counter()
    pooled(random_sketches(3), models.target, LossContext(generators=[torch.Generator() for _ in range(3)]))
    out["target_pool=32 first call (fills the pool), B=3"] = time.perf_counter() - t0
    out["+ target_pool=32 (deviation), bf16, channels_last, B=3"] = time_loss(models, pooled, 3, reps)
    guard = CLIPConvLoss(rn, precision="auto")
    out["bf16 guard cosines (eval-loss input gradient vs fp32), 3 random sketches"] = guard.gradient_cosines(
        random_sketches(3, seed=11), models.target
    )
    if with_compile:
        comp = CLIPConvLoss(rn, precision="bf16", channels_last=True, compile_model=True)
        t0 = time.perf_counter()
        time_loss(models, comp, 3, 0)
        out["compile: first call incl. compilation, B=3"] = time.perf_counter() - t0
        out["compile: bf16, channels_last, B=3"] = time_loss(models, comp, 3, reps)
    return out


def _onednn_log(fn: Callable[[], object]) -> list[str]:
    """The oneDNN verbose lines that ``fn()`` prints (oneDNN writes them to file descriptor 1)."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return log.read().splitlines()


def onednn_summary(lines: list[str]) -> dict[str, dict[str, float]]:
    """oneDNN verbose ``exec`` lines summed by primitive, implementation and propagation kind:
    ``{"convolution brg_conv_fwd:avx512_core_bf16 forward_training": {"calls": n, "ms": t}}``."""
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        fields = line.split(",")
        if "exec" not in fields:
            continue
        i = fields.index("exec")
        try:
            ms = float(fields[-1])
            key = " ".join(fields[i + 2 : i + 5])
        except (ValueError, IndexError):
            continue
        entry = out.setdefault(key, {"calls": 0, "ms": 0.0})
        entry["calls"] += 1
        entry["ms"] += ms
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))


def _interleaved_times(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Seconds of each ``fns[k]()`` in each of ``reps`` rounds that call them in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each ``fns[k]()`` over ``reps`` rounds that call them in turn (a drift of
    the machine's speed hits them alike)."""
    return {k: _median(v) for k, v in _interleaved_times(fns, reps).items()}


def _paired(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Median over the rounds of each variant's time over ``base``'s in the same round: a paired
    ratio, robust to a machine whose speed drifts between rounds."""
    return {k: _median([a / b for a, b in zip(v, times[base])]) for k, v in times.items() if k != base}


def _against_fp32(losses: dict[str, CLIPConvLoss], sketch: Tensor, target: Tensor) -> dict[str, list[float]]:
    """For each loss but ``"fp32"``: the cosine of its input gradient to the fp32 loss's, and its
    loss's relative difference from the fp32 loss's, on the same views (the same generator seed)."""
    grads: dict[str, tuple[Tensor, float]] = {}
    for name, loss in losses.items():
        x = sketch.detach().clone().requires_grad_(True)
        total = sum(loss(x, target, LossContext(generators=[torch.Generator().manual_seed(11)])).values())
        assert isinstance(total, Tensor)
        total.sum().backward()
        assert x.grad is not None
        grads[name] = (x.grad.flatten().double(), float(total.sum()))
    g32, l32 = grads.pop("fp32")
    return {
        k: [float(torch.nn.functional.cosine_similarity(g, g32, dim=0)), abs(v - l32) / abs(l32)]
        for k, (g, v) in grads.items()
    }


def kernel_study(models: Models, reps: int = 4, with_compile: bool = False) -> dict[str, Any]:
    """Where a one-candidate ``fast`` step's CLIP time goes on this CPU (issue 25).

    The loss of the ``fast`` preset's one-candidate step (B = 1, view 0 + 2 random views with view 0
    weighted 0.2, bf16 autocast, channels_last): its forward + backward timed with the bf16 weight
    copy on and off and with the BatchNorms folded (interleaved, with paired ratios); the torch
    profiler's top operators; oneDNN's own kernel log
    (which implementation ran, forward and backward, and the weight reorders); the dtypes of the
    tensors the graph saves for backward (a bf16 backward saves bf16); the bare tower's views with
    the target views in the sketch's batch (one pass with autograd) against apart (the target
    without autograd); and with ``with_compile`` the ``torch.compile``d loss (first call with
    compilation, then steady state; inductor's cache makes a second process's first call cheaper).
    """
    from torch.profiler import ProfilerActivity, profile

    rn = models.rn101
    drop_weight_grads(rn)
    out: dict[str, Any] = {}

    def fast_loss(precision: str = "bf16", **kw: Any) -> CLIPConvLoss:
        return CLIPConvLoss(
            rn,
            precision=precision,
            channels_last=True,
            num_views=2,
            identity_weight=0.2,
            **kw,  # type: ignore[arg-type]
        )

    sketch = random_sketches(1, seed=7).requires_grad_(True)

    def stepper(loss: CLIPConvLoss) -> Callable[[], None]:
        gens = [torch.Generator().manual_seed(0)]

        def step() -> None:
            sum(loss(sketch, models.target, LossContext(generators=gens)).values()).sum().backward()

        return step

    variants = {
        "bf16_weights=False (autocast casts every call)": fast_loss(bf16_weights=False),
        "bf16_weights=True (the default)": fast_loss(),
        "fold_batchnorm=True": fast_loss(fold_batchnorm=True),
        "prepack_weights=True": fast_loss(prepack_weights=True),
        "fold_batchnorm + prepack_weights": fast_loss(fold_batchnorm=True, prepack_weights=True),
        "fold_batchnorm + prepack_weights + fuse_activations (the fast preset)": fast_loss(
            fold_batchnorm=True, prepack_weights=True, fuse_activations=True
        ),
        "the fast preset, backward by aten.convolution_backward (pack_backward=False)": fast_loss(
            fold_batchnorm=True, prepack_weights=True, fuse_activations=True
        ),
        "the fast preset, one autograd node per convolution (not per bottleneck)": fast_loss(
            fold_batchnorm=True, prepack_weights=True, fuse_activations=True
        ),
    }
    for loss in variants.values():
        stepper(loss)()  # warm-up (builds the bf16 copy, the target cache)
    slow = "the fast preset, backward by aten.convolution_backward (pack_backward=False)"
    for module in variants[slow]._tower_copy(visual_of(rn), True).modules():
        if isinstance(module, PackedConv2d):
            module.pack_backward = False
    per_conv = "the fast preset, one autograd node per convolution (not per bottleneck)"
    for module in variants[per_conv]._tower_copy(visual_of(rn), True).modules():
        if isinstance(module, FusedBottleneck):
            module.__dict__["_one_node"] = lambda x: False
    times = _interleaved_times({k: stepper(loss) for k, loss in variants.items()}, reps)
    out["loss forward+backward s (median)"] = {k: _median(v) for k, v in times.items()}
    out["loss forward+backward, paired ratio to bf16_weights=True (median over rounds)"] = _paired(
        times, "bf16_weights=True (the default)"
    )
    out["loss forward+backward, paired ratio to fold_batchnorm + prepack_weights"] = _paired(
        times, "fold_batchnorm + prepack_weights"
    )
    out["input gradient: cosine to fp32, relative loss difference to fp32"] = _against_fp32(
        {**variants, "fp32": fast_loss(precision="fp32")}, sketch, models.target
    )
    step = stepper(variants["bf16_weights=True (the default)"])
    for name, loss in variants.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                stepper(loss)()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events) / 2e3
        out[f"profiler, {name}"] = {
            "self ms per step": total,
            "top": {e.key: {"ms": e.self_cpu_time_total / 2e3, "calls": e.count / 2} for e in events[:12]},
        }
    out["oneDNN kernels of one step (bf16_weights=True)"] = onednn_summary(_onednn_log(step))
    dtypes: dict[str, float] = {}

    def pack(t: Tensor) -> Tensor:
        key = str(t.dtype).replace("torch.", "")
        dtypes[key] = dtypes.get(key, 0.0) + t.numel() * t.element_size() / 2**20
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    out["tensors saved for backward, MB by dtype"] = dtypes
    visual = visual_of(rn).to(memory_format=torch.channels_last)
    try:
        g = torch.Generator().manual_seed(3)
        views = torch.rand(5, 3, 224, 224, generator=g).contiguous(memory_format=torch.channels_last)

        def apart() -> None:
            x = views[:3].clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = visual(x)
                with torch.no_grad():
                    visual(views[3:])
            y.float().square().sum().backward()

        def together() -> None:
            x = views.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = visual(x)
            y[:3].float().square().sum().backward()

        out["bare tower, 3 sketch views with autograd + 2 target views without, s"] = timed(apart, reps)
        out["bare tower, the 5 views in one batch with autograd, s"] = timed(together, reps)
    finally:
        visual.to(memory_format=torch.contiguous_format)
    if with_compile:
        comp = fast_loss(compile_model=True)
        t0 = time.perf_counter()
        stepper(comp)()
        out["compile: first call incl. compilation, s"] = time.perf_counter() - t0
        comp_fold = fast_loss(compile_model=True, fold_batchnorm=True)
        t0 = time.perf_counter()
        stepper(comp_fold)()
        out["compile with fold_batchnorm: first call incl. compilation, s"] = time.perf_counter() - t0
        both = {
            "eager": stepper(fast_loss()),
            "compiled": stepper(comp),
            "eager, folded": stepper(fast_loss(fold_batchnorm=True)),
            "compiled, folded": stepper(comp_fold),
        }
        times = _interleaved_times(both, reps)
        out["compile: steady state s (median), eager vs compiled"] = {k: _median(v) for k, v in times.items()}
        out["compile: paired ratio to eager (median over rounds)"] = _paired(times, "eager")
    return out


#: METHOD §7's figures for the reference's parts, measured on a 2-core CPU with AMX (seconds).
METHOD_PARTS = {
    "RN101, 5 views, forward+backward to the input, fp32 (frozen)": 1.2,
    "RN101, 5 target views, forward, fp32": 0.45,
    "RN101, 5 views, forward+backward to the input, bf16 autocast + channels_last": 0.49,
}


def machine_check(models: Models, reps: int = 5) -> dict[str, dict[str, float]]:
    """Time METHOD §7's parts of the reference here, to compare this machine with the one it names.

    The bare visual tower on 5 random 224-px views (no augmentation, no loss): forward+backward to
    the input in fp32 with frozen weights, the 5 target views' forward without autograd, and the
    forward+backward under bf16 autocast with channels_last. Median of ``reps`` after one warm-up.
    """
    visual = visual_of(models.rn101)
    visual.requires_grad_(False)
    gen = torch.Generator().manual_seed(5)
    views = torch.rand(5, 3, 224, 224, generator=gen)

    def fwd_bwd(x: Tensor, bf16: bool) -> None:
        x = x.clone().requires_grad_(True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            out = visual(x)
        out.float().square().sum().backward()

    def forward(x: Tensor) -> None:
        with torch.no_grad():
            visual(x)

    keys = list(METHOD_PARTS)
    here = {keys[0]: timed(lambda: fwd_bwd(views, False), reps), keys[1]: timed(lambda: forward(views), reps)}
    visual.to(memory_format=torch.channels_last)
    try:
        views_cl = views.contiguous(memory_format=torch.channels_last)
        here[keys[2]] = timed(lambda: fwd_bwd(views_cl, True), reps)
    finally:
        visual.to(memory_format=torch.contiguous_format)
    return {
        k: {"here_s": here[k], "method_s": METHOD_PARTS[k], "ratio": here[k] / METHOD_PARTS[k]} for k in keys
    }


# ---------------------------------------------------------------------------------------- main


def _fmt_phase(p: PhaseResult, eval_every: int) -> str:
    per_it = p.per_iteration(eval_every)
    return (
        f"{p.name}: {p.sketches} sketch(es); train step {p.train:.3f} s + eval {p.eval:.3f} s/{eval_every}"
        f" = {per_it:.3f} s/iteration ({1 / per_it:.3f} it/s), {per_it / p.sketches:.3f} s per "
        f"sketch-iteration; one-off setup {p.setup:.2f} s, init {p.init:.2f} s; "
        f"peak RSS {gib(p.peak_rss):.2f} GiB; wall {p.wall:.1f} s for the whole run(s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5, help="optimisation steps per run (>= 3)")
    parser.add_argument(
        "--baseline-iterations",
        type=int,
        help="steps of each baseline run (default: --iterations); its per-iteration cost is "
        "extrapolated to the reference's 2000 x 3 seeds for the time-to-sketch ratio",
    )
    parser.add_argument(
        "--bracket",
        action="store_true",
        help="time the baseline again after (b), so that a drift in the machine's speed during the run "
        "shows in the time-to-sketch ratio (printed against each baseline measurement and their mean)",
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
        "--baseline-rasterizer",
        default="diffvg" if "diffvg" in list_rasterizers() else "torch",
        help="the baseline's renderer: diffvg (the reference's; the default where it is installed) or "
        "torch; comma-separated for several baselines in the same run (the first is (a) for the ratios)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "clipasso-bench",
        help="where the random-weight models are written (reused when present)",
    )
    parser.add_argument("--only", choices=["both", "baseline", "default", "none"], default="both")
    parser.add_argument("--preset", help="run (b) from this SketchConfig preset, e.g. fast")
    parser.add_argument("--profile", action="store_true", help="time the parts of one iteration")
    parser.add_argument(
        "--rounds", type=int, default=4, help="with --profile or --kernels: interleaved repetitions"
    )
    parser.add_argument("--options", action="store_true", help="time each speed-up on/off")
    parser.add_argument(
        "--compile", action="store_true", help="with --options or --kernels: also try torch.compile"
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="where a one-candidate fast step's CLIP time goes: profiler, oneDNN kernels, bf16 weights",
    )
    parser.add_argument(
        "--machine-check",
        action="store_true",
        help="time METHOD §7's parts of the reference (bare RN101 on 5 views) to compare machines",
    )
    parser.add_argument(
        "--pool-study",
        type=int,
        default=0,
        metavar="N",
        help="default best-of-3 for N iterations with and without target_pool=32: eval losses",
    )
    parser.add_argument(
        "--loss-options",
        type=parse_options,
        default={},
        metavar="K=V,...",
        help="loss options for (b), e.g. target_pool=64 (values read as Python literals)",
    )
    parser.add_argument(
        "--settings",
        type=parse_options,
        default={},
        metavar="K=V,...",
        help="SketchConfig settings for (b), over --preset's, e.g. prune_tolerance=1.0 (Python literals)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.iterations < 3:
        parser.error("--iterations must be >= 3 (step 0 pays one-off set-up and is not counted)")
    baseline_rasterizers = [r.strip() for r in args.baseline_rasterizer.split(",") if r.strip()]
    for r in baseline_rasterizers:
        if r not in list_rasterizers():
            parser.error(f"--baseline-rasterizer {r}: not available here (available: {list_rasterizers()})")
    pin_cores(args.cores or args.threads)
    torch.set_num_threads(args.threads)
    eval_every = 10
    machine = machine_info()
    print(machine_line(machine))
    t0 = time.perf_counter()
    models = load_models(args.workdir, args.target)
    print(
        f"models ready in {time.perf_counter() - t0:.1f} s (RN101 + ViT-B/32 random weights via load_clip); "
        f"RSS {gib(psutil.Process().memory_info().rss):.2f} GiB"
    )
    report: dict[str, Any] = {
        "machine": machine,
        "threads": args.threads,
        "iterations": args.iterations,
        "baseline_rasterizers": baseline_rasterizers,
    }
    if args.loss_options:
        report["loss_options"] = args.loss_options
    if args.settings:
        report["settings"] = args.settings
    phases: dict[str, PhaseResult] = {}
    if args.only in ("both", "baseline"):
        for i, r in enumerate(baseline_rasterizers):
            key = "baseline" if i == 0 else f"baseline[{r}]"
            phases[key] = run_baseline(models, args.baseline_iterations or args.iterations, r)
            print(_fmt_phase(phases[key], eval_every), flush=True)
    if args.only in ("both", "default"):
        name = f"preset {args.preset} (batched best-of-3)" if args.preset else "default (batched best-of-3)"
        phases["default"] = run_default(
            models,
            args.iterations,
            args.loss_options or None,
            name=name,
            preset=args.preset,
            settings=args.settings,
        )
        print(_fmt_phase(phases["default"], eval_every), flush=True)
        if args.bracket and "baseline" in phases:
            phases["baseline_after"] = run_baseline(
                models, args.baseline_iterations or args.iterations, baseline_rasterizers[0]
            )
            print("baseline again, after (b):", _fmt_phase(phases["baseline_after"], eval_every), flush=True)
    for key, p in phases.items():
        p.rescored = rescore(models, p.strokes)
        is_baseline = key.startswith("baseline")
        steps = (args.baseline_iterations or args.iterations) if is_baseline else args.iterations
        print(
            f"{key}: best eval loss after {steps} iterations per seed "
            f"{[round(x, 5) for x in p.best_eval]}"
            f" (own evaluator), fp32 re-score {[round(x, 5) for x in p.rescored]}; best-of-3 "
            f"{min(p.rescored):.5f}; last steps {p.stops}"
        )
        report[key] = {
            "train_s": p.train,
            "eval_s": p.eval,
            "per_iteration_s": p.per_iteration(eval_every),
            "setup_s": p.setup,
            "init_s": p.init,
            "peak_rss_gib": gib(p.peak_rss),
            "best_eval": p.best_eval,
            "rescored_fp32": p.rescored,
            "stop_iterations": p.stops,
        }
    if "baseline" in phases and "default" in phases:
        a, b = phases["baseline"], phases["default"]
        ratio = b.per_iteration(eval_every) / a.per_iteration(eval_every)
        one_a = a.per_iteration(eval_every) / 3
        if args.preset and SketchConfig.preset(args.preset).prune_after is not None:
            print("(b) races its candidates: its median step is the one-candidate step after the race")
        print(
            f"ratio (b)/(a) per best-of-3 iteration: {ratio:.3f} (= {1 / ratio:.2f}x faster); "
            f"(b) per sketch vs (a) per sketch: {1 / ratio:.2f}x; one (a) sketch-iteration {one_a:.3f} s"
        )
        t_a, t_b = a.recipe_seconds(eval_every), b.recipe_seconds(eval_every)
        print(
            f"extrapolated best-of-3, 2000 iterations each: (a) {t_a / 3600:.2f} h, (b) {t_b / 3600:.2f} h "
            f"({t_a / t_b:.2f}x)"
        )
        report["ratio_b_over_a"] = ratio
        for key, other in phases.items():
            if key.startswith("baseline["):  # the same (b) against another baseline render, same run
                r_other = b.per_iteration(eval_every) / other.per_iteration(eval_every)
                print(
                    f"ratio (b)/{key} per best-of-3 iteration: {r_other:.3f} (= {1 / r_other:.2f}x faster); "
                    f"{key} costs {other.per_iteration(eval_every) / a.per_iteration(eval_every):.3f}x "
                    f"baseline ({baseline_rasterizers[0]} render)"
                )
                report[f"ratio_b_over_{key}"] = r_other
        print(
            f"time to a best-of-3 sketch: (a) the reference recipe, 2000 iterations x 3 seeds "
            f"(extrapolated from its per-iteration cost) {t_a / 3600:.2f} h; (b) measured whole "
            f"sketch() call for its {args.iterations} iterations {b.wall:.1f} s: {t_a / b.wall:.1f}x"
        )
        report["time_to_sketch"] = {"a_extrapolated_s": t_a, "b_wall_s": b.wall, "ratio": t_a / b.wall}
        if "baseline_after" in phases:
            a2 = phases["baseline_after"]
            t_a2 = a2.recipe_seconds(eval_every)
            print(
                f"bracketed: (a) measured again after (b): {a2.per_iteration(eval_every):.3f} s per "
                f"best-of-3 iteration (before: {a.per_iteration(eval_every):.3f}); time to a best-of-3 "
                f"sketch {t_a2 / b.wall:.1f}x against it, "
                f"{(t_a + t_a2) / 2 / b.wall:.1f}x against the mean of both"
            )
            report["time_to_sketch"].update(
                a_after_extrapolated_s=t_a2, ratio_after=t_a2 / b.wall, ratio_mean=(t_a + t_a2) / 2 / b.wall
            )
    if args.profile:
        prof = profile_interleaved(models, args.rounds)
        for key, parts in prof.items():
            print(f"profile {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()), flush=True)
        a_it, b_it = 3 * prof["baseline B=1"]["total"], prof["default B=3"]["total"]
        a_best, b_best = 3 * prof["baseline B=1"]["best_total"], prof["default B=3"]["best_total"]
        print(
            f"profile: best-of-3 iteration (a) {a_it:.3f} s vs (b) {b_it:.3f} s: {a_it / b_it:.2f}x "
            f"(fastest repetitions: {a_best:.3f} vs {b_best:.3f} s, {a_best / b_best:.2f}x); "
            f"one sketch: (a) {a_it / 3:.3f} s vs (b) B=1 {prof['default B=1']['total']:.3f} s: "
            f"{a_it / 3 / prof['default B=1']['total']:.2f}x"
        )
        report["profile"] = prof
    if args.options:
        report["options"] = option_effects(models, with_compile=args.compile)
        for k, v in report["options"].items():
            print(f"option {k}: {v if isinstance(v, list) else round(v, 3)}")
    if args.kernels:
        report["kernels"] = kernels = kernel_study(models, reps=args.rounds, with_compile=args.compile)
        for k, v in kernels.items():
            print(f"kernels {k}: {json.dumps(v, default=str)}", flush=True)
    if args.machine_check:
        report["machine_check"] = machine_check(models)
        for k, v in report["machine_check"].items():
            print(
                f"machine check: {k}: {v['here_s']:.3f} s here, "
                f"{v['method_s']} s in METHOD §7 ({v['ratio']:.2f}x)"
            )
    if args.pool_study:
        pool: dict[str, Any] = {}
        for key, options in (("no pool", None), ("target_pool=32", {"target_pool": 32})):
            phase = run_default(models, args.pool_study, options, name=f"default best-of-3, {key}")
            rescored = rescore(models, phase.strokes)
            pool[key] = {
                "per_iteration_s": phase.per_iteration(eval_every),
                "best_eval": phase.best_eval,
                "rescored_fp32": rescored,
            }
            print(_fmt_phase(phase, eval_every), flush=True)
            print(
                f"pool study, {key}: best eval per seed after {args.pool_study} iterations "
                f"{[round(x, 5) for x in phase.best_eval]} (own evaluator), fp32 re-score "
                f"{[round(x, 5) for x in rescored]}; best of 3 {min(rescored):.5f}",
                flush=True,
            )
        report["pool_study"] = pool
    print(
        f"load average {os.getloadavg()[0]:.2f} at the end; process max RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (getrusage)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
