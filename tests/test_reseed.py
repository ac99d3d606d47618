"""Re-seeding dead strokes (clipasso.reseed): geometry helpers, the rule on fixed cases, runs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipasso import Sketcher
from clipasso.callbacks import SketchState
from clipasso.engine import RunState
from clipasso.errors import InputError
from clipasso.image import Target
from clipasso.metrics import binary_dilate
from clipasso.reseed import Reseed, curve_length, fit_stroke, stroke_footprints
from clipasso.reseed import _bernstein as bernstein
from clipasso.reseed import _split as split
from clipasso.strokes import StrokeSet
from clipasso.xdog import edge_ink

SIZE = 64


def _square_target() -> torch.Tensor:
    """A dark filled square on white: its edges are the 2-px bands at rows/cols 15-16 and 47-48."""
    img = torch.ones(1, 3, SIZE, SIZE)
    img[..., 16:48, 16:48] = 0.2
    return img


def _line(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0 + (x1 - x0) * f, y0 + (y1 - y0) * f] for f in (0.0, 0.3, 0.7, 1.0)]


LEFT = _line(15.5, 14.0, 15.5, 50.0)  # on the left side of the square
TOP = _line(14.0, 15.5, 50.0, 15.5)  # on the top side
DOT = [[5.0, 5.0]] * 4  # collapsed, in the background
INSIDE = _line(24.0, 30.0, 40.0, 34.0)  # a long stroke inside the square, on no edge


def _state(strokes: list[list[list[float]]], *, adam: bool = True) -> tuple[SketchState, Sketcher]:
    points = torch.tensor([strokes])  # [1, N, 4, 2]
    s = StrokeSet(points, canvas_size=(SIZE, SIZE), trainable=("points",))
    opt = torch.optim.Adam([s.points], lr=1.0)
    if adam:  # one step, so that Adam has moments, then known second moments
        s.points.grad = torch.ones_like(s.points)
        saved = s.points.detach().clone()
        opt.step()
        with torch.no_grad():
            s.points.copy_(saved)
        st_ = opt.state[s.points]
        st_["exp_avg"].fill_(0.5)
        st_["exp_avg_sq"].copy_(
            torch.arange(len(strokes), dtype=torch.float32).view(1, -1, 1, 1).expand_as(s.points)
        )
    sketcher = Sketcher(
        loss="edges", initializer="random", num_strokes=len(strokes), iterations=100, device="cpu"
    )
    state = RunState.start(
        s, opt, seeds=[0], iterations=100, target=Target(_square_target(), None, (SIZE, SIZE))
    )
    state.iteration = 49
    return state, sketcher


# ----------------------------------------------------------------------------------------------
# geometry


def test_curve_length_and_footprints() -> None:
    pts = torch.tensor([LEFT, DOT])
    assert curve_length(pts).tolist() == pytest.approx([36.0, 0.0])
    two = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])
    assert float(curve_length(two)) == pytest.approx(6.0)
    with pytest.raises(InputError, match="3k \\+ 1"):
        curve_length(torch.zeros(5, 2))
    from clipasso.render import create_rasterizer

    foot = stroke_footprints(create_rasterizer("torch"), pts, torch.full((2,), 1.5), (SIZE, SIZE))
    assert foot.shape == (2, SIZE, SIZE) and foot.dtype == torch.bool
    assert bool(foot[0, 30, 15]) and not bool(foot[0, 30, 20]) and bool(foot[1, 5, 5])
    assert 4 <= int(foot[1].sum()) <= 12  # a dot of radius 1.5


def test_fit_stroke_follows_the_pixels() -> None:
    xs = torch.linspace(0, 30, 31)
    arc = torch.stack([xs, 10 + 0.02 * (xs - 15) ** 2], dim=1)  # a shallow parabola
    ctrl = fit_stroke(arc)
    assert ctrl.shape == (4, 2)
    curve = bernstein(torch.linspace(0, 1, 50)) @ ctrl
    gap = torch.cdist(arc, curve).min(dim=1).values
    assert float(gap.max()) < 0.5
    assert sorted([float(ctrl[0, 0]), float(ctrl[-1, 0])]) == pytest.approx([0.0, 30.0], abs=0.5)
    assert fit_stroke(arc, num_segments=3).shape == (10, 2)
    single = fit_stroke(torch.tensor([[3.0, 4.0]]))
    assert torch.equal(single, torch.tensor([[3.0, 4.0]] * 4))
    with pytest.raises(InputError, match="pixels"):
        fit_stroke(torch.zeros(0, 2))


@given(
    ctrl=st.lists(st.floats(-50, 50), min_size=8, max_size=8),
    k=st.integers(1, 4),
    u=st.floats(0, 1),
)
def test_split_is_the_same_curve(ctrl: list[float], k: int, u: float) -> None:
    c = torch.tensor(ctrl, dtype=torch.float64).view(4, 2)
    parts = split(c, k)
    assert parts.shape == (3 * k + 1, 2) and torch.equal(parts[0], c[0])
    j = min(int(u * k), k - 1)  # the segment holding parameter u, and u within it
    local = u * k - j
    whole = bernstein(torch.tensor([u], dtype=torch.float64)) @ c
    piece = bernstein(torch.tensor([local], dtype=torch.float64)) @ parts[3 * j : 3 * j + 4]
    torch.testing.assert_close(piece, whole, atol=1e-9, rtol=0)


# ----------------------------------------------------------------------------------------------
# the rule on fixed cases


def test_a_collapsed_stroke_moves_to_an_uncovered_edge_and_live_strokes_stay() -> None:
    state, sketcher = _state([LEFT, DOT, TOP])
    before = state.strokes.points.detach().clone()
    events = Reseed(every=50).reseed(sketcher, state, 49)
    assert [(e.candidate, e.stroke, e.reason) for e in events] == [(0, 1, "collapsed")]
    after = state.strokes.points.detach()
    assert torch.equal(after[0, 0], before[0, 0]) and torch.equal(after[0, 2], before[0, 2])
    moved = after[0, 1]
    # onto the uncovered right and bottom sides: the densest place is their corner, which it rounds
    assert bool((moved > 30).all()), moved
    assert float(curve_length(moved)) > 15.0
    edges = edge_ink(_square_target())[0, 0] > 0.5
    foot = stroke_footprints(sketcher.rasterizer, moved[None], torch.tensor([1.5]), (SIZE, SIZE))[0]
    assert float((foot & binary_dilate(edges, 2.0)).sum() / foot.sum()) > 0.9
    # Adam: first moment zeroed, second moments the live strokes' mean (strokes 0 and 2: (0 + 2) / 2)
    slots = state.optimizer.state[state.strokes.points]  # type: ignore[union-attr]
    assert torch.equal(slots["exp_avg"][0, 1], torch.zeros(4, 2))
    assert torch.equal(slots["exp_avg"][0, 0], torch.full((4, 2), 0.5))
    assert torch.equal(slots["exp_avg_sq"][0, 1], torch.full((4, 2), 1.0))
    assert torch.equal(slots["exp_avg_sq"][0, 2], torch.full((4, 2), 2.0))


def test_a_stroke_off_the_edges_moves_and_two_dead_strokes_go_to_different_places() -> None:
    state, sketcher = _state([LEFT, INSIDE, DOT, TOP])
    events = Reseed(every=50).reseed(sketcher, state, 49)
    assert [(e.stroke, e.reason) for e in events] == [(1, "off-edges"), (2, "collapsed")]
    pts = state.strokes.points.detach()[0]
    edges = binary_dilate(edge_ink(_square_target())[0, 0] > 0.5, 2.0)
    foot = stroke_footprints(sketcher.rasterizer, pts[1:3], torch.full((2,), 1.5), (SIZE, SIZE))
    for f in foot:  # both on the edges, on the uncovered sides, and apart
        assert float((f & edges).sum() / f.sum()) > 0.9
        assert not bool(f[:, :12].any()) and not bool(f[:12].any())
    assert int((foot[0] & foot[1]).sum()) < 0.1 * int(foot[0].sum())  # they may touch, not overlap
    assert float((pts[1].mean(0) - pts[2].mean(0)).norm()) > 15.0


def test_nothing_moves_when_the_edges_are_covered() -> None:
    right, bottom = _line(47.5, 14.0, 47.5, 50.0), _line(14.0, 47.5, 50.0, 47.5)
    state, sketcher = _state([LEFT, TOP, right, bottom, DOT])
    before = state.strokes.points.detach().clone()
    assert Reseed(every=50).reseed(sketcher, state, 49) == []
    assert torch.equal(state.strokes.points.detach(), before)


def test_only_active_candidates_and_only_on_schedule() -> None:
    state, sketcher = _state([LEFT, DOT, TOP])
    state.stopped = [True]  # a stopped candidate is never touched
    before = state.strokes.points.detach().clone()
    cb = Reseed(every=50)
    assert cb.reseed(sketcher, state, 49) == []
    state.stopped = [False]
    for it in (10, 48, 50):  # rounds run after steps 49, 99, ... only
        state.iteration = it
        cb.on_step(sketcher, state)
    assert torch.equal(state.strokes.points.detach(), before)
    state.iteration = 49
    cb.on_step(sketcher, state)
    assert not torch.equal(state.strokes.points.detach(), before)
    state2, _ = _state([LEFT, DOT, TOP])
    state2.iteration = 49
    Reseed(every=50, until=40).on_step(sketcher, state2)  # past `until`
    assert torch.equal(state2.strokes.points.detach(), before)


def test_without_an_optimizer_the_strokes_still_move() -> None:
    state, sketcher = _state([LEFT, DOT, TOP], adam=False)
    state.optimizer = None
    assert len(Reseed().reseed(sketcher, state, 49)) == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"every": 0}, "every"),
        ({"until": -1}, "until"),
        ({"min_length": -1.0}, "min_length"),
        ({"reach": 0.0}, "reach"),
        ({"min_on_edges": 1.5}, "min_on_edges"),
        ({"min_residual": 0}, "min_residual"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        Reseed(**options)
    if "every" not in options:  # through the settings: refused when the Sketcher is built
        with pytest.raises(InputError, match=match):
            Sketcher(loss="edges", initializer="random", reseed_every=10, reseed_options=options)


# ----------------------------------------------------------------------------------------------
# in runs

_RUN: dict[str, Any] = dict(
    loss="edges",
    initializer="random",
    num_strokes=6,
    iterations=30,
    image_size=96,
    num_sketches=2,
    device="cpu",
    reseed_every=0,  # the callbacks are given explicitly below
)


def _disc(size: int = 96) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    return (1 - 0.8 * (r < size * 0.3).float()).expand(3, -1, -1).contiguous()


def test_runs_are_deterministic_and_the_setting_is_the_callback() -> None:
    a_cb, b_cb = Reseed(every=10), Reseed(every=10)
    a = Sketcher(**_RUN, callbacks=[a_cb]).sketch(_disc())
    b = Sketcher(**_RUN, callbacks=[b_cb]).sketch(_disc())
    c = Sketcher(**{**_RUN, "reseed_every": 10}).sketch(_disc())
    plain = Sketcher(**_RUN).sketch(_disc())
    assert a_cb.events and a_cb.events == b_cb.events
    assert {e.iteration for e in a_cb.events} <= {9, 19}  # until = 30 - 10: rounds after steps 9, 19
    for ca, cb_, cc in zip(a.candidates, b.candidates, c.candidates):
        assert torch.equal(ca.strokes.points, cb_.strokes.points)
        assert torch.equal(ca.strokes.points, cc.strokes.points)
        assert ca.history.train == cc.history.train
    assert any(
        not torch.equal(ca.strokes.points, cp.strokes.points)
        for ca, cp in zip(a.candidates, plain.candidates)
    )
    assert "reseed_every" in c.config.to_dict() and c.config.reseed_every == 10


def test_reseeding_reduces_dead_strokes_in_a_run() -> None:
    cb = Reseed(every=10)
    Sketcher(**{**_RUN, "num_sketches": 1, "iterations": 40}, callbacks=[cb]).sketch(_disc())
    first = [e for e in cb.events if e.iteration == 9]
    later = [e for e in cb.events if e.iteration > 9]
    assert first and len(later) < len(first)
    assert all(math.isfinite(e.site[0]) for e in cb.events)


def test_the_default_is_on_for_the_edges_objective_only() -> None:
    from clipasso.losses import EdgeLoss

    assert Sketcher(loss="edges").reseed_every() == 50
    assert Sketcher(loss=EdgeLoss(sigmas=(0.0, 2.0))).reseed_every() == 50
    assert Sketcher().reseed_every() == 0 and Sketcher().build_callbacks() == []  # the reference: off
    assert Sketcher("reference").config.reseed_every is None
    assert Sketcher(loss="edges", reseed_every=0).build_callbacks() == []
    (cb,) = Sketcher(reseed_every=20, reseed_options={"reach": 8.0}).build_callbacks()
    assert isinstance(cb, Reseed) and cb.every == 20 and cb.reach == 8.0


def test_the_silhouette_weighting_draws_the_outline_before_inner_edges() -> None:
    img = torch.ones(1, 3, SIZE, SIZE)
    img[..., 10:54, 10:54] = 0.6  # a grey object
    img[..., 28:36, 28:36] = 0.0  # with a black spot inside: a dense ring of inner edges
    sites = {}
    for relevance in ("uniform", "silhouette"):
        state, sketcher = _state([DOT])
        state.target = Target(img, None, (SIZE, SIZE))
        (event,) = Reseed(relevance=relevance).reseed(sketcher, state, 49)  # type: ignore[arg-type]
        sites[relevance] = torch.tensor(event.site)
    spot = torch.tensor([32.0, 32.0])
    assert float((sites["uniform"] - spot).norm()) < 6.0  # unweighted: the densest edges, the spot
    assert float((sites["silhouette"] - spot).norm()) > 20.0  # weighted: near the object's outline
    with pytest.raises(InputError, match="relevance"):
        Reseed(relevance="clip")  # type: ignore[arg-type]
