"""The engine's hooks, its public state, and run settings reaching loss objects (issue 19)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from clipasso import Callback, CLIPConvLoss, Sketcher
from clipasso.engine import Engine, LoopSettings, RunState
from clipasso.losses import LossContext, SketchLoss
from clipasso.losses.base import RunSettings

SIZE = 64


class Ink(SketchLoss):
    """Per-sketch squared error to the target (batch-invariant; no CLIP)."""

    name = "ink"

    def compute(self, sketch: torch.Tensor, target: torch.Tensor, context: LossContext) -> torch.Tensor:
        return torch.stack([((s - target[0]) ** 2).mean() for s in sketch])


def _image() -> torch.Tensor:
    img = torch.ones(3, SIZE, SIZE)
    img[:, 16:48, 20:44] = 0.2
    return img


def _sketcher(**settings: Any) -> Sketcher:
    base: dict[str, Any] = dict(
        loss=Ink(),
        initializer="random",
        num_strokes=3,
        iterations=6,
        eval_every=2,
        num_sketches=2,
        image_size=SIZE,
        device="cpu",
        early_stop_patience=0,
    )
    return Sketcher(**{**base, **settings})


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_start(self, sketcher: Any, state: RunState) -> None:
        self.calls.append(("start", state.iteration))

    def before_step(self, sketcher: Any, state: RunState) -> None:
        self.calls.append(("before_step", state.iteration))

    def after_backward(self, sketcher: Any, state: RunState) -> None:
        assert state.strokes.points.grad is not None  # gradients are there to edit
        self.calls.append(("after_backward", state.iteration))

    def on_step(self, sketcher: Any, state: RunState) -> None:
        self.calls.append(("step", state.iteration))

    def on_eval(self, sketcher: Any, state: RunState) -> None:
        self.calls.append(("eval", state.iteration))

    def on_candidate_stop(self, sketcher: Any, state: RunState, index: int) -> None:
        self.calls.append((f"stop{index}", state.iteration))

    def on_end(self, sketcher: Any, result: Any) -> None:
        self.calls.append(("end", -1))


def test_hooks_run_in_the_documented_order() -> None:
    sk = _sketcher(iterations=3)
    sk.callbacks.append(rec := Recorder())
    sk.sketch(_image())
    assert rec.calls == [
        ("start", 0),
        ("before_step", 0),
        ("after_backward", 0),
        ("eval", 0),
        ("step", 0),
        ("before_step", 1),
        ("after_backward", 1),
        ("step", 1),
        ("before_step", 2),
        ("after_backward", 2),
        ("eval", 2),
        ("step", 2),
        ("eval", 3),  # the final strokes' evaluation
        ("end", -1),
    ]


def test_gradient_clipping_in_a_hook_changes_the_steps() -> None:
    class Clip(Callback):
        def __init__(self) -> None:
            self.norms: list[float] = []

        def after_backward(self, sketcher: Any, state: RunState) -> None:
            torch.nn.utils.clip_grad_norm_(state.strokes.parameters(), max_norm=1e-4)
            self.norms.append(float(state.strokes.points.grad.norm()))

    plain = _sketcher(lr=1000.0, optimizer=torch.optim.SGD).sketch(_image())
    sk = _sketcher(lr=1000.0, optimizer=torch.optim.SGD)
    sk.callbacks.append(clip := Clip())
    clipped = sk.sketch(_image())
    assert clip.norms and max(clip.norms) <= 1e-4 * (1 + 1e-5)
    (_, first), (last_step, last) = clipped.candidates[0].snapshots[0], clipped.candidates[0].snapshots[-1]
    assert (
        last_step == 6 and float((last - first).abs().max()) <= 6 * 1e-4 * 1000 + 1e-3
    )  # 6 steps of lr × norm
    free = plain.candidates[0].snapshots[-1][1] - plain.candidates[0].snapshots[0][1]
    assert float(free.abs().max()) > 3 * 6 * 1e-4 * 1000  # without the hook the strokes move much further


def test_a_callback_can_race_the_candidates() -> None:
    """Successive halving as a callback: at each evaluation, the worse half of the running stops."""

    class Halving(Callback):
        def on_eval(self, sketcher: Any, state: RunState) -> None:
            running = sorted(state.active, key=lambda b: state.eval_loss[b])
            for b in running[(len(running) + 1) // 2 :]:
                state.stop_candidate(b)

    sk = _sketcher(num_sketches=4, iterations=8)
    sk.callbacks.append(Halving())
    sk.callbacks.append(Recorder())
    result = sk.sketch(_image())
    stops = [c.stop_iteration for c in result.candidates]
    assert sorted(stops) == [0, 0, 2, 8]
    assert result.candidates[result.best_index].stop_iteration in (2, 8)


def test_stopping_a_candidate_through_the_rule_calls_the_hook() -> None:
    class StopSecond(Sketcher):
        def update_best(self, state: RunState, b: int, loss: float) -> bool:
            return super().update_best(state, b, loss) or (b == 1 and state.iteration == 2)

    sk = StopSecond(_sketcher().config, loss=Ink())
    sk.callbacks.append(rec := Recorder())
    result = sk.sketch(_image())
    assert ("stop1", 2) in rec.calls and result.candidates[1].stop_iteration == 2


def test_callbacks_may_end_the_run() -> None:
    class StopAt(Callback):
        def on_step(self, sketcher: Any, state: RunState) -> None:
            state.stop = state.iteration == 3

    sk = _sketcher()
    sk.callbacks.append(StopAt())
    result = sk.sketch(_image())
    assert [c.stop_iteration for c in result.candidates] == [4, 4]


def test_run_settings_reach_a_loss_object(tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module) -> None:
    """A CLIPConvLoss passed as an object gets the run's settings, as one built by name does;
    what its constructor was given stays."""
    given = CLIPConvLoss(tiny_resnet)
    pinned = CLIPConvLoss(tiny_resnet, precision="fp32", num_views=1)
    for loss in (given, pinned):
        Sketcher(
            loss=loss,
            saliency_model=tiny_vit,
            num_strokes=2,
            iterations=1,
            num_sketches=1,
            device="cpu",
            num_views=2,
            identity_weight=0.25,
        ).sketch(torch.rand(3, 224, 224))
    assert given.precision == "auto" and given.active_precision in ("fp32", "bf16")
    assert given.channels_last and given.augment.num_views == 2 and given.identity_weight == 0.25
    assert pinned.precision == "fp32" and pinned.augment.num_views == 1 and pinned.identity_weight == 0.25
    named = Sketcher(clip_model=tiny_resnet, num_views=2, identity_weight=0.25, device="cpu")
    named.loss.configure(named.run_settings())
    built = named.loss
    assert isinstance(built, CLIPConvLoss)
    assert (built.precision, built.channels_last, built.augment.num_views) == ("auto", True, 2)


def test_configure_reaches_composed_terms(tiny_resnet: torch.nn.Module) -> None:
    conv = CLIPConvLoss(tiny_resnet)
    composed = 0.5 * conv + Ink()
    composed.configure(RunSettings(num_views=3, channels_last=True))
    assert conv.augment.num_views == 3 and conv.channels_last


def test_the_engine_runs_without_a_sketcher() -> None:
    from clipasso.engine.candidates import early_stop_update
    from clipasso.image import Target
    from clipasso.render import create_rasterizer
    from clipasso.strokes import StrokeSet

    raster = create_rasterizer("torch")

    class Program:
        def render(self, strokes: StrokeSet, index: torch.Tensor | None = None) -> torch.Tensor:
            return raster.render_over(
                strokes.points, strokes.widths, strokes.colors, strokes.canvas_size, 1.0
            )

        def compute_loss(
            self, sketch: torch.Tensor, target: Target, context: LossContext
        ) -> dict[str, torch.Tensor]:
            return {"ink": (sketch - target.image).pow(2).mean((1, 2, 3))}

        def update_best(self, state: RunState, b: int, loss: float) -> bool:
            return early_stop_update(state, b, loss, delta=0.0, patience=0)

        def prune(self, state: RunState) -> list[int]:
            return []

    strokes = StrokeSet(torch.rand(1, 2, 4, 2) * 32, canvas_size=32, trainable=("points",))
    state = RunState.start(
        strokes,
        torch.optim.Adam([strokes.points], lr=0.5),
        seeds=[0],
        iterations=6,
        target=Target(torch.zeros(1, 3, 32, 32), None, (32, 32)),
    )
    Engine(Program(), LoopSettings(iterations=6, eval_every=3)).run(state)
    evals = [float(rec["total"][0]) for _, rec in state.eval_history]
    assert [it for it, _ in state.eval_history] == [0, 3, 6] and evals[-1] < evals[0]
    assert state.best_loss[0] == min(evals)


def test_the_deprecated_names_still_work_and_warn() -> None:
    from clipasso.render import available_backends, get_rasterizer

    with pytest.warns(DeprecationWarning):
        assert "torch" in available_backends()
    with pytest.warns(DeprecationWarning):
        get_rasterizer("torch")
    result = _sketcher(iterations=1).sketch(_image())
    with pytest.warns(DeprecationWarning):
        assert result.best.score == result.best_loss


def test_run_settings_reach_an_initializer_object() -> None:
    from clipasso.init import RandomInitializer

    given, pinned = RandomInitializer(), RandomInitializer(width=3.0)
    for init in (given, pinned):
        result = _sketcher(initializer=init, width=2.5, num_segments=2, iterations=1).sketch(_image())
        assert result.strokes.num_segments == 2
    assert (given.width, given.num_segments) == (2.5, 2) and pinned.width == 3.0
    named = _sketcher(initializer="random", width=2.5).initializer
    assert named.width == 2.5  # type: ignore[attr-defined]
