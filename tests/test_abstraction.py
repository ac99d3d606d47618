"""Nested (prefix) training, the loss-vs-strokes curve, importance order, the automatic count (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipasso import Callback, SketchConfig, Sketcher
from clipasso.errors import InputError
from clipasso.losses import LossContext, SketchLoss
from clipasso.prefixes import (
    choose_stroke_count,
    curve_area,
    default_prefix_weights,
    nested_loss,
    prefix_weights,
)

SIZE = 64


class Ink(SketchLoss):
    """Per-sketch squared error to the target, scaled in train mode by a draw from each sketch's own
    generator (so shared or distinct views show)."""

    name = "ink"

    def compute(self, sketch: torch.Tensor, target: torch.Tensor, context: LossContext) -> torch.Tensor:
        per = torch.stack([((s - target[0]) ** 2).mean() for s in sketch])
        gens = context.generators
        if context.train and isinstance(gens, list):
            per = per * torch.stack([1 + torch.rand((), generator=g) for g in gens])
        return per


def _image() -> torch.Tensor:
    img = torch.ones(3, SIZE, SIZE)
    img[:, 12:52, 16:48] = 0.1
    img[:, 24:40, 26:38] = 1.0
    return img


def _sketcher(**settings: Any) -> Sketcher:
    base: dict[str, Any] = dict(
        loss=Ink(),
        initializer="random",
        num_strokes=6,
        iterations=8,
        eval_every=4,
        num_sketches=2,
        image_size=SIZE,
        device="cpu",
        early_stop_patience=0,
    )
    return Sketcher(**{**base, **settings})


def test_prefix_set_and_its_checks() -> None:
    assert SketchConfig(num_strokes=16, nested=[8, 4, 4]).prefix_set() == [4, 8, 16]
    assert SketchConfig(num_strokes=16).prefix_set() is None
    assert SketchConfig(num_strokes=12, auto_strokes=True).prefix_set() == [1, 2, 4, 8, 12]
    for bad in (
        dict(nested=[32]),
        dict(nested=[0]),
        dict(nested=[4], nested_weights=[1.0]),
        dict(nested_weights=[1.0, 1.0]),
        dict(nested=[4], nested_mode="some"),
        dict(abstraction=1.5),
    ):
        with pytest.raises(InputError):
            SketchConfig(num_strokes=16, **bad)


def test_the_nested_objective_is_the_weighted_sum_of_the_prefixes_losses() -> None:
    sk = _sketcher(nested=[2, 4], nested_weights=[1.0, 2.0, 1.0])
    sk.loss.to("cpu")
    target = sk.prepare(_image())
    state, _ = sk.start(target, [0, 1000])
    ctx = LossContext(mode="eval")
    nested = sk.compute_loss(sk.render(state.strokes), target, ctx)["ink"]
    s = state.strokes
    separate = [
        sk.loss(
            sk.rasterizer.render_over(s.points[:, :k], s.widths[:, :k], s.colors[:, :k], s.canvas_size, 1.0),
            target.image,
            ctx,
        )["ink"]
        for k in (2, 4, 6)
    ]
    torch.testing.assert_close(nested, (separate[0] + 2 * separate[1] + separate[2]) / 4, rtol=1e-6, atol=0)


def test_prefixes_of_a_candidate_share_its_views_and_advance_it_once() -> None:
    draws: list[float] = []

    class Record(SketchLoss):
        name = "rec"

        def compute(self, sketch: torch.Tensor, target: torch.Tensor, context: LossContext) -> torch.Tensor:
            assert isinstance(context.generators, list)
            draws.extend(float(torch.rand((), generator=g)) for g in context.generators)
            return sketch.mean((1, 2, 3))

    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    fresh = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    sketch = torch.rand(2, 3, 3, 8, 8)
    loss = Record()
    nested_loss(
        lambda x, c: dict(loss(x, x, c)), sketch, LossContext(generators=gens), prefix_weights([1, 2, 3])
    )
    first = [float(torch.rand((), generator=g)) for g in fresh]
    assert draws == [first[0]] * 3 + [first[1]] * 3  # the same draw for every prefix of a candidate
    assert [float(torch.rand((), generator=g)) for g in gens] == [
        float(torch.rand((), generator=g)) for g in fresh
    ]


def test_sampled_prefixes_are_an_unbiased_estimate(monkeypatch: Any) -> None:
    import clipasso.prefixes as mod

    sketch = torch.rand(2, 4, 3, 8, 8)
    weights = prefix_weights([1, 2, 3, 4], [1.0, 3.0, 2.0, 2.0])

    def loss(x: torch.Tensor, c: LossContext) -> dict[str, torch.Tensor]:
        return {"m": x.mean((1, 2, 3))}

    full = nested_loss(loss, sketch, LossContext(mode="train"), weights)["m"]
    samples = []
    for j in range(3):
        monkeypatch.setattr(mod, "sample_prefix", lambda count, seed, it, j=j: j)
        samples.append(nested_loss(loss, sketch, LossContext(mode="train"), weights, mode="sample")["m"])
    torch.testing.assert_close(torch.stack(samples).mean(0), full, rtol=1e-6, atol=1e-7)
    # evaluations score every prefix whatever the mode
    ev = nested_loss(loss, sketch, LossContext(mode="eval"), weights, mode="sample")["m"]
    torch.testing.assert_close(ev, nested_loss(loss, sketch, LossContext(mode="eval"), weights)["m"])


def test_curve_is_computed_without_gradients_and_matches_one_by_one() -> None:
    sk = _sketcher(nested=[2, 4])
    result = sk.sketch(_image())
    assert result.curve is not None and len(result.curve) == 7
    s, target = result.strokes, result.target
    for k in (0, 3, 6):
        with torch.no_grad():
            one = sk.rasterizer.render_over(
                s.points[:, :k], s.widths[:, :k], s.colors[:, :k], s.canvas_size, 1.0
            )
            ref = float(sk.loss(one, target.image, LossContext(mode="eval", iteration=7))["ink"][0])
        assert result.curve[k] == pytest.approx(ref, rel=1e-6)
    assert result.prefix(4).strokes.num_strokes == 4 and result.prefix(4).full is result
    assert torch.equal(result.prefix(4).strokes.points, result.strokes.points[:, :4])
    with pytest.raises(InputError):
        result.prefix(7)


def test_order_is_a_permutation_by_greedy_removal_and_front_loads_the_curve() -> None:
    sk = _sketcher(num_sketches=1, iterations=12, num_strokes=5)
    result = sk.sketch(_image())
    ordered = sk.order_strokes(result)
    assert sorted(ordered.stroke_order or []) == list(range(5))
    assert torch.equal(ordered.strokes.points, result.strokes.points[:, ordered.stroke_order])
    plain = sk.loss_curve(result.strokes, result.target)
    assert ordered.curve is not None
    assert ordered.curve[0] == pytest.approx(plain[0]) and ordered.curve[-1] == pytest.approx(plain[-1])
    assert curve_area(ordered.curve) <= curve_area(plain) + 1e-9
    # the last stroke of the order is the one whose removal from the whole raised the loss least
    s = result.strokes
    without = []
    for r in range(5):
        keep = [i for i in range(5) if i != r]
        with torch.no_grad():
            img = sk.rasterizer.render_over(
                s.points[:, keep], s.widths[:, keep], s.colors[:, keep], s.canvas_size, 1.0
            )
            without.append(float(sk.loss(img, result.target.image, LossContext(mode="eval"))["ink"][0]))
    assert ordered.stroke_order[-1] == min(range(5), key=lambda r: (without[r], r))  # type: ignore[index]


def test_ordering_a_ladder_keeps_its_rungs_and_orders_within_them() -> None:
    sk = _sketcher(num_sketches=1, iterations=12, num_strokes=6, nested=[2, 4])
    result = sk.sketch(_image())
    kept = sk.order_strokes(result)  # a nested run: its own rungs 2 and 4 stay by default
    order = kept.stroke_order or []
    assert sorted(order) == list(range(6))
    assert sorted(order[:2]) == [0, 1] and sorted(order[:4]) == [0, 1, 2, 3]
    assert torch.equal(kept.strokes.points, result.strokes.points[:, order])
    assert kept.curve is not None and result.curve is not None
    for k in (0, 2, 4, 6):  # the rungs' prefixes are the same sketches
        assert kept.curve[k] == pytest.approx(result.curve[k], rel=1e-6, abs=1e-9)
    # within the last block (strokes 4, 5), the one whose removal raised the loss least went last
    s = result.strokes
    without = {}
    for r in (4, 5):
        keep = [i for i in range(6) if i != r]
        with torch.no_grad():
            img = sk.rasterizer.render_over(
                s.points[:, keep], s.widths[:, keep], s.colors[:, keep], s.canvas_size, 1.0
            )
            without[r] = float(sk.loss(img, result.target.image, LossContext(mode="eval"))["ink"][0])
    assert order[-1] == min((4, 5), key=lambda r: (without[r], r))
    # rungs=[] (or one block) orders freely, as for a plain run
    free = sk.order_strokes(result, rungs=[])
    assert free.stroke_order == sk.order_strokes(result, rungs=[6]).stroke_order
    assert free.curve is not None and curve_area(free.curve) <= curve_area(kept.curve) + 1e-9
    with pytest.raises(InputError, match="rungs"):
        sk.order_strokes(result, rungs=[7])


@given(
    curve=st.lists(st.floats(0.0, 10.0), min_size=2, max_size=12),
    e1=st.floats(0.0, 1.0),
    e2=st.floats(0.0, 1.0),
)
def test_automatic_count_is_monotone_and_in_range(curve: list[float], e1: float, e2: float) -> None:
    lo, hi = sorted((e1, e2))
    k_lo, k_hi = choose_stroke_count(curve, lo), choose_stroke_count(curve, hi)
    n = len(curve) - 1
    assert 1 <= k_hi <= k_lo <= n
    if curve[0] > curve[n]:
        assert curve[0] - curve[k_lo] >= (1 - lo) * (curve[0] - curve[n]) - 1e-12


def test_an_automatic_run_returns_the_chosen_prefix() -> None:
    sk = _sketcher(num_strokes="auto", auto_max_strokes=6, abstraction=0.3)
    assert sk.config.auto_strokes and sk.config.num_strokes == 6
    result = sk.sketch(_image())
    assert result.auto_strokes == choose_stroke_count(result.curve or [], 0.3)
    assert result.strokes.num_strokes == result.auto_strokes and result.full is not None
    assert result.full.strokes.num_strokes == 6


def test_a_nested_run_resumes_exactly(tmp_path: Path) -> None:
    class Kill(Callback):
        def on_step(self, sketcher: Any, state: Any) -> None:
            if state.iteration == 5:
                raise KeyboardInterrupt

    path = tmp_path / "run.ckpt"
    whole = _sketcher(nested=[2, 4], checkpoint_every=2).sketch(_image())
    killed = _sketcher(nested=[2, 4], checkpoint_every=2)
    killed.callbacks.append(Kill())
    with pytest.raises(KeyboardInterrupt):
        killed.sketch(_image(), checkpoint=path)
    resumed = _sketcher(nested=[2, 4], checkpoint_every=2).sketch(_image(), checkpoint=path)
    for a, b in zip(whole.candidates, resumed.candidates):
        assert torch.equal(a.strokes.points, b.strokes.points) and a.history.eval == b.history.eval


def test_the_cli_ladder_is_one_nested_run(tmp_path: Path) -> None:
    from clipasso.cli import main
    from clipasso.data import load_sample

    image = tmp_path / "house.png"
    load_sample("house").resize((64, 64)).save(image)
    args = [
        "sketch",
        str(image),
        "--loss",
        "edges",
        "--iterations",
        "3",
        "--num-sketches",
        "1",
        "-q",
    ]
    assert main([*args, "--strokes", "2,4", "-o", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "house"
    assert (folder / "ladder.png").exists()
    two = json.loads((folder / "strokes-2" / "config.json").read_text())
    assert two["config"]["nested"] == [2] and two["config"]["num_strokes"] == 4  # one run, its prefix
    assert (folder / "strokes-2" / "sketch.svg").read_text().count("<path") == 2
    assert (folder / "strokes-4" / "curve.png").exists() and (folder / "strokes-4" / "drawing.svg").exists()
    assert main([*args, "--strokes", "auto", "--max-strokes", "4", "-o", str(tmp_path / "auto")]) == 0
    scores = json.loads((tmp_path / "auto" / "house" / "candidates" / "scores.json").read_text())
    assert 1 <= scores["auto_strokes"] <= 4 and len(scores["curve"]) == 5


# ------------------------------------------------------------------ nested_mode="spread"


@given(
    views=st.integers(1, 9),
    raw=st.lists(st.floats(0.0, 4.0), min_size=1, max_size=6).filter(lambda w: sum(w) > 0.1),
    seed=st.integers(0, 2**31),
    iteration=st.integers(0, 10_000),
)
def test_spread_views_go_to_the_prefixes_by_their_weights(
    views: int, raw: list[float], seed: int, iteration: int
) -> None:
    from clipasso.prefixes import spread_assignment

    weights = prefix_weights(list(range(1, len(raw) + 1)), raw)
    a = spread_assignment(views, weights, seed, iteration)
    assert a == spread_assignment(views, weights, seed, iteration)  # a function of seed and step
    assert len(a) == views and a[0] == len(raw) - 1  # view 0: the un-augmented full sketch
    rest = views - 1
    for k, w in enumerate(weights.tolist()):
        got = a[1:].count(k)
        assert abs(got - w * rest) < 1 + 1e-6  # systematic sampling: within one view of its share
        if w == 0:
            assert got == 0


def test_per_view_sources_give_the_views_of_those_images() -> None:
    from clipasso.augment import ReferenceViews

    views = ReferenceViews(3, seed=0)
    sketch, target = torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32)
    other = torch.rand(2, 4, 3, 32, 32)  # each view from another image
    for per_sketch in (False, True):

        def g(per_sketch: bool = per_sketch) -> Any:
            if per_sketch:
                return [torch.Generator().manual_seed(s) for s in (4, 5)]
            return torch.Generator().manual_seed(4)

        xs, ys = views(sketch, target, g(), sources=sketch[:, None].expand(2, 4, 3, 32, 32))
        xs0, ys0 = views(sketch, target, g())
        torch.testing.assert_close(xs, xs0, rtol=0, atol=1e-6)  # sources = the sketch: unchanged
        torch.testing.assert_close(ys, ys0, rtol=0, atol=1e-6)
        mixed, _ = views(sketch, target, g(), sources=other)
        for v in range(4):
            alone, _ = views(other[:, v].contiguous(), target, g())
            torch.testing.assert_close(mixed[:, v], alone[:, v], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="per-view sources"):
        views(sketch, target, sources=torch.rand(2, 3, 3, 32, 32))  # 3 sources for 4 views


def test_spread_calls_the_loss_once_on_the_full_sketch_with_a_prefix_per_view() -> None:
    seen: list[Any] = []

    def loss(x: torch.Tensor, c: LossContext) -> dict[str, torch.Tensor]:
        seen.append((x, c.sources_for(5), c.view0))
        return {"m": x.mean((1, 2, 3))}

    sketch = torch.rand(2, 3, 3, 8, 8)
    weights = prefix_weights([1, 2, 3])
    out = nested_loss(loss, sketch, LossContext(iteration=4, view0={}), weights, mode="spread", seed=1)
    assert len(seen) == 1
    x, sources, view0 = seen[0]
    assert torch.equal(x, sketch[:, 2]) and view0 is None  # no free evaluation from a spread step
    from clipasso.prefixes import spread_assignment

    picks = spread_assignment(5, weights, 1, 4)
    assert torch.equal(sources, sketch[:, picks])
    torch.testing.assert_close(out["m"], sketch[:, 2].mean((1, 2, 3)))
    ev = nested_loss(loss, sketch, LossContext(mode="eval"), weights, mode="spread")["m"]
    torch.testing.assert_close(ev, nested_loss(loss, sketch, LossContext(mode="eval"), weights)["m"])


def test_spread_trains_the_prefixes_through_a_clip_loss_and_resumes_exactly(tmp_path: Path) -> None:
    from clipasso.losses import CLIPConvLoss
    from clipasso.testing import recalibrate_batchnorm, tiny_clip

    big = torch.nn.functional.interpolate(_image()[None], size=224, mode="bilinear")
    model = recalibrate_batchnorm(tiny_clip("resnet"), big)  # content-sensitive

    class Kill(Callback):
        def on_step(self, sketcher: Any, state: Any) -> None:
            if state.iteration == 3:
                raise KeyboardInterrupt

    def make() -> Sketcher:
        return _sketcher(
            loss=CLIPConvLoss(model, num_views=3),
            nested=[2, 4],
            nested_mode="spread",
            iterations=6,
            checkpoint_every=2,
        )

    assert make().loss.spreads_views() and not _sketcher().loss.spreads_views()
    from clipasso.losses import CLIPSemanticLoss

    assert (CLIPConvLoss(model) + CLIPSemanticLoss(model)).spreads_views()
    assert not (CLIPConvLoss(model) + Ink()).spreads_views()  # a part without views: no spreading
    whole = make().sketch(_image())
    assert whole.curve is not None and len(whole.curve) == 7
    killed = make()
    killed.callbacks.append(Kill())
    path = tmp_path / "spread.ckpt"
    with pytest.raises(KeyboardInterrupt):
        killed.sketch(_image(), checkpoint=path)
    resumed = make().sketch(_image(), checkpoint=path)
    for a, b in zip(whole.candidates, resumed.candidates):
        assert torch.equal(a.strokes.points, b.strokes.points) and a.history.eval == b.history.eval
    # the views made of the small prefixes change what the steps see, against a plain run's
    plain = _sketcher(loss=CLIPConvLoss(model, num_views=3), iterations=6).sketch(_image())
    assert whole.candidates[0].history.train["total"] != plain.candidates[0].history.train["total"]


def test_spread_refuses_a_loss_without_views() -> None:
    with pytest.raises(InputError, match="spread"):
        _sketcher(nested=[2, 4], nested_mode="spread").sketch(_image())


def test_the_default_nested_mode_spreads_for_clip_losses_and_samples_a_prefix_otherwise() -> None:
    from clipasso.losses import CLIPConvLoss
    from clipasso.testing import recalibrate_batchnorm, tiny_clip

    big = torch.nn.functional.interpolate(_image()[None], size=224, mode="bilinear")
    model = recalibrate_batchnorm(tiny_clip("resnet"), big)
    assert SketchConfig().nested_mode == "auto"
    assert _sketcher(nested=[2, 4]).nested_mode == "sample"  # Ink has no views
    assert _sketcher(nested=[2, 4], nested_mode="all").nested_mode == "all"  # as asked
    assert not CLIPConvLoss(model, num_views=0).spreads_views()  # no random views: nothing to spread
    assert _sketcher(loss=CLIPConvLoss(model, num_views=0), nested=[2, 4]).nested_mode == "sample"

    def run(mode: str) -> Any:
        sk = _sketcher(loss=CLIPConvLoss(model, num_views=2), nested=[2, 4], nested_mode=mode, iterations=4)
        return sk, sk.sketch(_image())

    auto, got = run("auto")
    assert auto.nested_mode == "spread"
    _, spread = run("spread")
    _, every = run("all")
    for a, b in zip(got.candidates, spread.candidates):  # "auto" IS "spread" here, bit for bit
        assert torch.equal(a.strokes.points, b.strokes.points) and a.history.train == b.history.train
    assert got.candidates[0].history.train != every.candidates[0].history.train
    # a run's num_views decides, as the loss adopts it: with none, "auto" draws a prefix
    zero = _sketcher(loss=CLIPConvLoss(model), nested=[2, 4], num_views=0, iterations=2)
    zero.sketch(_image())
    assert zero.nested_mode == "sample"


@given(count=st.integers(1, 8), mode=st.sampled_from(["all", "sample", "spread"]))
def test_default_prefix_weights_put_half_on_the_full_sketch_when_sampling(count: int, mode: str) -> None:
    w = prefix_weights(list(range(1, count + 1)), default_prefix_weights(count, mode))
    assert w.shape == (count,) and torch.isclose(w.sum(), torch.tensor(1.0))
    if mode == "sample" and count > 1:
        assert torch.isclose(w[-1], torch.tensor(0.5))  # half on the full sketch
        assert torch.allclose(w[:-1], torch.full((count - 1,), 0.5 / (count - 1)))
        # a "sample" step's two scored prefixes then weigh the same: (K - 1) w_j = w_K
        assert torch.isclose((count - 1) * w[0], w[-1])
    else:
        assert torch.allclose(w, torch.full((count,), 1.0 / count))


def test_a_sampling_run_uses_its_default_weights_unless_given() -> None:
    auto = _sketcher(nested=[2, 4], iterations=3)
    assert auto.nested_mode == "sample" and auto.nested_weights == [1.0, 1.0, 2.0]
    explicit = _sketcher(nested=[2, 4], nested_mode="sample", nested_weights=[1, 1, 2], iterations=3)
    assert explicit.nested_weights == [1.0, 1.0, 2.0]
    a, b = auto.sketch(_image()), explicit.sketch(_image())
    assert a.candidates[0].history.train == b.candidates[0].history.train  # the same objective
    equal = _sketcher(nested=[2, 4], nested_weights=[1, 1, 1], iterations=3)
    assert equal.nested_weights == [1.0, 1.0, 1.0]
    assert equal.sketch(_image()).candidates[0].history.train != a.candidates[0].history.train
    assert _sketcher(nested=[2, 4], nested_mode="all").nested_weights == [1.0, 1.0, 1.0]
    assert _sketcher().nested_weights is None  # a plain run
