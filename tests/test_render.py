"""Tests of clipasso.render, parametrised over the rasterizer registry."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clipasso.errors import BackendUnavailableError, InputError
from clipasso.render import (
    ENV_VAR,
    RASTERIZERS,
    Rasterizer,
    box_coverage,
    composite,
    create_rasterizer,
    list_rasterizers,
    rasterize,
    register_rasterizer,
)
from clipasso.testing import supersampled_render

BLACK = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Bars:
    """Accuracy bars of one backend configuration (measured: docs/rasterizer.md, "The diffvg backend")."""

    ink_column: float  # |ink of one column − 2r| along a long horizontal stroke
    ink_mean: float  # |mean ink per column − 2r|
    dot_area: float  # |area − πr²| / (πr²) of a round dot
    mae: float  # inked-pixel MAE against the supersampled reference


#: An exact backend: the torch backend's bars.
EXACT_BARS = Bars(ink_column=1e-3, ink_mean=1e-3, dot_area=0.03, mae=0.02)
#: A sampled backend with n × n jittered samples per pixel. ``ink_column`` is the stratification bound
#: 2/n (each of a column's n sample columns is off by at most one sample at each edge); the others are
#: the worst measured over 40 jitter seeds (n = 2: 0.11, 13 %, 0.034) or 10 (n = 16: 0.005, 0.6 %,
#: 0.0018), rounded up.
SAMPLED_BARS = {
    2: Bars(ink_column=1.0, ink_mean=0.15, dot_area=0.15, mae=0.04),
    16: Bars(ink_column=0.125, ink_mean=0.01, dot_area=0.01, mae=0.005),
}


def bars(backend: Rasterizer) -> Bars:
    """The bars a backend configuration is held to."""
    if backend.exact:
        return EXACT_BARS
    n = getattr(backend, "num_samples", None)
    if n not in SAMPLED_BARS:
        pytest.fail(f"no measured accuracy bars for {backend!r}: measure them and add them to SAMPLED_BARS")
    return SAMPLED_BARS[n]


def _configurations() -> list[Any]:
    """Every registered backend as registered; a sampled one also with 16 × 16 samples per pixel."""
    out = []
    for name in RASTERIZERS.names():
        out.append(pytest.param((name, None), id=name))
        factory = RASTERIZERS.get(name)
        sampled = not getattr(factory, "exact", False)
        if sampled and "num_samples" in inspect.signature(factory).parameters:
            out.append(pytest.param((name, 16), id=f"{name}-16x16"))
    return out


@pytest.fixture(params=_configurations(), scope="module")
def backend(request: pytest.FixtureRequest) -> Rasterizer:
    """A registered backend: as registered (diffvg: the reference's 2 × 2 samples), and a sampled one
    again with 16 × 16 samples, where its geometry shows through its noise."""
    name, samples = request.param
    try:
        return RASTERIZERS.create(name) if samples is None else RASTERIZERS.create(name, num_samples=samples)
    except BackendUnavailableError as exc:
        pytest.skip(f"rasterizer {name!r} is not available here: {exc}")


@pytest.fixture(params=RASTERIZERS.names(), scope="module")
def any_backend(request: pytest.FixtureRequest) -> Rasterizer:
    """Each registered backend as registered (for properties that hold whatever the sampling)."""
    try:
        return RASTERIZERS.create(request.param)
    except BackendUnavailableError as exc:
        pytest.skip(f"rasterizer {request.param!r} is not available here: {exc}")


def clipasso_strokes(n: int, size: int, *, batch: int = 1, seed: int = 0, segments: int = 1) -> torch.Tensor:
    """CLIPasso-like strokes (METHOD §3.7): uniform start, 3k steps of 0.05·size·(u − 0.5)."""
    g = torch.Generator().manual_seed(seed)
    p0 = torch.rand(batch, n, 1, 2, generator=g) * size
    steps = 0.05 * size * (torch.rand(batch, n, 3 * segments, 2, generator=g) - 0.5)
    return torch.cat([p0, p0 + steps.cumsum(2)], dim=2)


# the hard-edged supersampled image (clipasso.testing): what exact coverage should equal
reference_render = supersampled_render


# ------------------------------------------------------------------------------- registry / API
def test_registry_has_torch_and_diffvg() -> None:
    assert {"torch", "diffvg"} <= set(RASTERIZERS.names())
    assert "torch" in list_rasterizers()


def test_auto_is_torch_unless_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert create_rasterizer("auto").name == "torch"
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(InputError, match="nope"):
        create_rasterizer("auto")


def test_unknown_and_unavailable_backends() -> None:
    with pytest.raises(InputError, match="unknown rasterizer"):
        rasterize(torch.zeros(1, 4, 2), 1.0, BLACK, size=8, backend="nope")
    if "diffvg" not in list_rasterizers():
        with pytest.raises(BackendUnavailableError, match="diffvg"):
            rasterize(torch.zeros(1, 4, 2), 1.0, BLACK, size=8, backend="diffvg")


def test_plugin_backend_is_used() -> None:
    @register_rasterizer("test-blank")
    class Blank(Rasterizer):
        name = "test-blank"

        def render(self, points, widths, colors, size):  # type: ignore[no-untyped-def]
            return points.new_full((points.shape[0], 4, *size), 0.25)

    try:
        out = rasterize(torch.zeros(2, 3, 4, 2), 1.0, BLACK, size=(5, 6), backend="test-blank")
        assert out.shape == (2, 4, 5, 6) and float(out.mean()) == 0.25
    finally:
        RASTERIZERS.remove("test-blank")


@pytest.mark.parametrize(
    ("points", "widths", "colors", "match"),
    [
        (torch.zeros(1, 5, 2), 1.0, BLACK, "3k\\+1"),
        (torch.zeros(1, 4, 3), 1.0, BLACK, "shape"),
        (torch.zeros(2, 4, 2), torch.ones(3), BLACK, "widths"),
        (torch.zeros(2, 4, 2), 1.0, torch.ones(3, 4), "colors"),
        (torch.full((1, 4, 2), math.nan), 1.0, BLACK, "NaN"),
        (torch.zeros(1, 4, 2), -1.0, BLACK, ">= 0"),
        (torch.zeros(1, 4, 2, dtype=torch.long), 1.0, BLACK, "floating"),
    ],
)
def test_input_validation(points: torch.Tensor, widths: object, colors: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        rasterize(points, widths, colors, size=8)  # type: ignore[arg-type]


def test_bad_size() -> None:
    with pytest.raises(InputError, match="size"):
        rasterize(torch.zeros(1, 4, 2), 1.0, BLACK, size=(0, 4))


def test_composite_background() -> None:
    rgba = torch.zeros(2, 4, 3, 3)
    rgba[:, 0] = 1.0
    rgba[:, 3, 1, 1] = 0.5
    out = composite(rgba, background=(0.0, 0.0, 1.0))
    assert out.shape == (2, 3, 3, 3)
    assert torch.allclose(out[:, :, 1, 1], torch.tensor([0.5, 0.0, 0.5]).expand(2, 3))
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]).expand(2, 3))
    assert torch.equal(composite(rgba, 1.0), composite(rgba, torch.ones(3)))
    with pytest.raises(InputError):
        composite(torch.zeros(2, 3, 4, 4))


def test_box_coverage_limits() -> None:
    t = torch.linspace(-1, 1, 41, dtype=torch.float64)
    axis = box_coverage(t, torch.ones_like(t), torch.zeros_like(t))
    assert torch.allclose(axis, (t + 0.5).clamp(0, 1))
    diag = box_coverage(t, torch.full_like(t, 0.5**0.5), torch.full_like(t, 0.5**0.5))
    # Monte Carlo-free check: the diagonal CDF is the triangle-distribution CDF.
    s = t * 2**0.5
    tri = torch.where(s < 0, (s + 1).clamp(0, 1) ** 2 / 2, 1 - (1 - s).clamp(0, 1) ** 2 / 2)
    assert torch.allclose(diag, tri, atol=1e-12)


# ------------------------------------------------------------------------------- exact cases
def test_horizontal_line_ink_per_column(backend: Rasterizer) -> None:
    # the ink per column is 2r: widths are half-widths (diffvg's stroke_width too)
    pts = torch.tensor([[[2.0, 10.3], [12.0, 10.3], [22.0, 10.3], [38.0, 10.3]]], dtype=torch.float64)
    bar = bars(backend)
    for r in (1.5, 0.4, 2.25):
        img = backend(pts, torch.tensor([r], dtype=torch.float64), BLACK, (20, 40))
        ink = img[0, 3].sum(0)[8:32]
        assert torch.allclose(ink, torch.full_like(ink, 2 * r), atol=bar.ink_column), (r, ink)
        assert abs(float(ink.mean()) - 2 * r) <= bar.ink_mean, (r, float(ink.mean()))


def test_round_dot_area(backend: Rasterizer) -> None:
    bar = bars(backend)
    for r, centre in ((1.5, 10.3), (3.0, 9.7), (4.5, 10.0)):
        pts = torch.full((1, 4, 2), centre, dtype=torch.float64)
        img = backend(pts, torch.tensor([r], dtype=torch.float64), BLACK, (20, 20))
        area = float(img[0, 3].sum())
        assert abs(area - math.pi * r * r) <= bar.dot_area * math.pi * r * r, (r, area)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_supersampled_reference(backend: Rasterizer, seed: int) -> None:
    # random colours and opacities: also checks that the output is straight alpha
    size = 40
    pts = clipasso_strokes(8, size, seed=seed)[0] * 1.6
    g = torch.Generator().manual_seed(seed)
    widths = 0.6 + 1.5 * torch.rand(8, generator=g)
    colors = torch.cat([torch.rand(8, 3, generator=g), 0.5 + 0.5 * torch.rand(8, 1, generator=g)], -1)
    ours = composite(backend(pts, widths, colors, (size, size)))[0].double()
    ref = reference_render(pts, widths, colors, (size, size))
    inked = ((ours < 1 - 1e-6) | (ref < 1 - 1e-6)).any(0)
    mae = float((ours - ref).abs()[:, inked].mean())
    assert mae <= bars(backend).mae, mae


def test_long_and_multisegment_strokes_match_reference() -> None:
    size = (48, 64)
    pts = torch.tensor(
        [
            [
                [-10.0, 5.0],
                [30.0, 60.0],
                [40.0, -20.0],
                [80.0, 40.0],
                [60.0, 47.0],
                [20.0, 30.0],
                [5.0, 44.0],
            ],
            [[3.0, 3.0], [20.0, 4.0], [25.0, 20.0], [30.0, 25.0], [35.0, 30.0], [45.0, 40.0], [60.0, 12.0]],
        ]
    )
    widths = torch.tensor([1.5, 0.8])
    colors = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.9, 0.1, 0.1, 0.7]])
    ours = composite(rasterize(pts, widths, colors, size=size, backend="torch"))[0].double()
    ref = reference_render(pts, widths, colors, size, ss=8)
    inked = ((ours < 1 - 1e-6) | (ref < 1 - 1e-6)).any(0)
    assert float((ours - ref).abs()[:, inked].mean()) <= 0.02


# ------------------------------------------------------------------------------- gradients
GRAD_POINTS = torch.tensor(
    [
        [[2.3, 3.1], [6.2, 1.7], [9.1, 7.4], [12.6, 5.2]],  # gentle curve
        [[-3.1, 10.2], [2.2, 12.7], [5.3, 9.1], [8.7, 13.9]],  # partly outside the canvas
        [[11.3, 11.6], [11.3, 11.6], [11.3, 11.6], [11.3, 11.6]],  # degenerate: a dot
        [[4.4, 6.3], [14.8, 9.9], [1.2, 14.1], [9.6, 2.7]],  # S-shaped, thin
        [[1.7, 14.6], [6.1, 13.3], [10.2, 15.1], [17.5, 13.8]],  # partly below the canvas
    ],
    dtype=torch.float64,
)
GRAD_WIDTHS = torch.tensor([1.5, 1.2, 2.1, 0.6, 1.0], dtype=torch.float64)
GRAD_COLORS = torch.tensor(
    [
        [0.1, 0.2, 0.3, 0.9],
        [0.5, 0.1, 0.2, 0.7],
        [0.2, 0.8, 0.1, 0.6],
        [0.3, 0.3, 0.9, 0.8],
        [0.6, 0.5, 0.4, 1.0],
    ],
    dtype=torch.float64,
)


def _exact_backends() -> list[str]:
    return [n for n in list_rasterizers() if getattr(RASTERIZERS.get(n), "exact", False)]


@pytest.mark.parametrize("name", _exact_backends())
def test_gradcheck_points(name: str) -> None:
    weights = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    movable = [0, 1, 3, 4]  # the dot is checked through its centre below (see docs/rasterizer.md)

    def f(p: torch.Tensor) -> torch.Tensor:
        pts = GRAD_POINTS.clone()
        pts = torch.cat([p[:2], pts[2:3], p[2:]])
        return composite(rasterize(pts, GRAD_WIDTHS, GRAD_COLORS, size=16, backend=name)) * weights

    p = GRAD_POINTS[movable].clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (p,), eps=1e-6, atol=1e-5, rtol=1e-3)

    def dot(c: torch.Tensor) -> torch.Tensor:
        pts = torch.cat([GRAD_POINTS[:2], c.expand(1, 4, 2), GRAD_POINTS[3:]])
        return composite(rasterize(pts, GRAD_WIDTHS, GRAD_COLORS, size=16, backend=name)) * weights

    centre = GRAD_POINTS[2, 0].clone().requires_grad_()
    assert torch.autograd.gradcheck(dot, (centre,), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("name", _exact_backends())
def test_gradcheck_widths_and_colors(name: str) -> None:
    w = GRAD_WIDTHS.clone().requires_grad_()
    c = GRAD_COLORS.clone().requires_grad_()

    def f(w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return rasterize(GRAD_POINTS, w, c, size=16, backend=name)

    # straight RGB is undefined where alpha = 0: check the composite and the alpha channel
    assert torch.autograd.gradcheck(
        lambda w, c: composite(f(w, c), (0.2, 0.5, 0.9)), (w, c), eps=1e-6, atol=1e-5
    )
    assert torch.autograd.gradcheck(lambda w, c: f(w, c)[:, 3], (w, c), eps=1e-6, atol=1e-5)


def test_gradient_of_offset_stroke_feels_the_edge() -> None:
    """A stroke one pixel beside a dark line is pulled towards it by an L2 loss."""
    target = torch.ones(1, 3, 24, 24)
    target[:, :, 11:14, :] = 0.0  # a 3-px line centred on y = 12.5
    pts = torch.tensor([[[2.0, 13.5], [9.0, 13.5], [15.0, 13.5], [22.0, 13.5]]], requires_grad=True)
    loss = (composite(rasterize(pts, 1.5, BLACK, size=24)) - target).square().sum()
    loss.backward()
    assert pts.grad is not None
    # the stroke's edges lie exactly on pixel boundaries and its normal is axis-aligned: the
    # corner branches of the box filter must not leak NaN into the backward (seen on torch 2.9)
    assert torch.isfinite(pts.grad).all()
    assert float(pts.grad[..., 1].sum()) > 0.1  # descent moves the stroke up (towards y = 12.5)


# ------------------------------------------------------------------------------- properties
seeds = st.integers(0, 10_000)


@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_values_in_unit_interval(any_backend: Rasterizer, seed: int) -> None:
    pts = clipasso_strokes(6, 32, seed=seed, batch=2) * 1.5 - 4
    g = torch.Generator().manual_seed(seed)
    rgba = any_backend(
        pts, 0.3 + 2 * torch.rand(2, 6, generator=g), torch.rand(2, 6, 4, generator=g), (32, 32)
    )
    assert rgba.min() >= 0.0 and rgba.max() <= 1.0 + 1e-6


@settings(max_examples=10, deadline=None)
@given(seed=seeds, dx=st.integers(-5, 5), dy=st.integers(-5, 5))
@example(seed=332, dx=-1, dy=0)  # the worst of 1600 cases (seeds 0-399, four shifts): 2.45e-4
def test_integer_translation(seed: int, dx: int, dy: int) -> None:
    # the torch backend only: a sampled backend's jitter follows the pixel index, not the stroke.
    # Equal to Newton's tolerance, not to the bit: a shift rounds the chords' positions otherwise,
    # which can move the search's starting t and so the nearest point after three steps.
    pts = clipasso_strokes(5, 24, seed=seed) * 0.5 + 14  # well inside a 48 canvas
    a = rasterize(pts, 1.5, BLACK, size=48)
    b = rasterize(pts + torch.tensor([float(dx), float(dy)]), 1.5, BLACK, size=48)
    assert torch.allclose(torch.roll(a, shifts=(dy, dx), dims=(2, 3)), b, atol=5e-4)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, segments=st.integers(1, 3))
@example(seed=4600, segments=2)  # a kinked join: segment order once broke the tie (changed 0.032)
def test_reversed_stroke_is_the_same(seed: int, segments: int) -> None:
    # Each segment in reach of a pixel is tried: the nearest counts, ties (a kinked join) by the largest
    # coverage; neither depends on the order (measured: worst 4.2e-5 over 1500 sets, 2 segments).
    pts = clipasso_strokes(5, 32, seed=seed, segments=segments)
    a = rasterize(pts, 1.5, BLACK, size=32)
    b = rasterize(pts.flip(2), 1.5, BLACK, size=32)
    assert torch.allclose(a, b, atol=1e-4)


@settings(max_examples=8, deadline=None)
@given(seed=seeds)
def test_batch_equals_items(any_backend: Rasterizer, seed: int) -> None:
    pts = clipasso_strokes(7, 40, seed=seed, batch=3)
    g = torch.Generator().manual_seed(seed)
    widths = 0.5 + 2 * torch.rand(3, 7, generator=g)
    colors = torch.rand(3, 7, 4, generator=g)
    batch = any_backend(pts, widths, colors, (40, 40))
    for i in range(3):
        single = any_backend(pts[i], widths[i], colors[i], (40, 40))
        assert torch.allclose(batch[i : i + 1], single, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(seed=seeds)
@pytest.mark.parametrize("segments", [1, 2])
def test_batch_equals_items_bit_for_bit(seed: int, segments: int) -> None:
    """The torch backend: a sketch renders, and gets gradients, bit for bit the same alone or in a
    batch of others (the search's chords are chosen per stroke, and its polyline is evaluated
    elementwise, not by a matmul whose blocking depends on the batch), so a batched best-of-N equals
    separate runs exactly on every CPU. Before, a batch of 2 rendered up to 1e-6 apart from its items
    on an AMX Xeon."""
    g = torch.Generator().manual_seed(seed)
    pts = clipasso_strokes(7, 40, seed=seed, batch=3, segments=segments)
    spread = 1 + 9 * torch.rand(3, 7, 1, 1, generator=g)  # strokes of 1x to 10x the usual size
    pts = pts[:, :, :1] + spread * (pts - pts[:, :, :1])
    widths = 0.3 + 2 * torch.rand(3, 7, generator=g)
    colors = torch.rand(3, 7, 4, generator=g)
    weight = torch.rand(3, 4, 40, 40, generator=g)
    leaves = [x.clone().requires_grad_() for x in (pts, widths, colors)]
    batch = rasterize(*leaves, size=40, backend="torch")
    (batch * weight).sum().backward()
    for i in range(3):
        items = [x.detach()[i : i + 1].clone().requires_grad_() for x in (pts, widths, colors)]
        single = rasterize(*items, size=40, backend="torch")
        (single * weight[i : i + 1]).sum().backward()
        assert torch.equal(batch[i : i + 1], single)
        for leaf, item in zip(leaves, items):
            assert leaf.grad is not None and item.grad is not None
            assert torch.equal(leaf.grad[i : i + 1], item.grad)


@settings(max_examples=8, deadline=None)
@given(seed=seeds)
def test_zero_opacity_renders_nothing(any_backend: Rasterizer, seed: int) -> None:
    pts = clipasso_strokes(6, 32, seed=seed)
    colors = torch.rand(6, 4, generator=torch.Generator().manual_seed(seed))
    colors[:, 3] = 0.0
    assert float(any_backend(pts, 1.5, colors, (32, 32)).abs().max()) == 0.0


@settings(max_examples=10, deadline=None)
@given(seed=seeds, r=st.floats(0.2, 3.0), extra=st.floats(0.01, 2.0))
@example(seed=3646, r=1.34375, extra=0.01171875)  # found by CI: a 4.6e-4 dip in one pixel
def test_more_width_never_less_ink(any_backend: Rasterizer, seed: int, r: float, extra: float) -> None:
    pts = clipasso_strokes(4, 32, seed=seed)
    thin = any_backend(pts, r, BLACK, (32, 32))[:, 3]
    thick = any_backend(pts, r + extra, BLACK, (32, 32))[:, 3]
    # Coverage is monotone in r only up to the approximations inside it (Newton's nearest point, the
    # round-cap correction; 0.003-0.010 inked-pixel MAE against supersampling): a tiny widening may
    # lose a few 1e-4 of ink in a pixel. Anything above 1e-3 is a real regression.
    assert bool((thick >= thin - 1e-3).all()), float((thick - thin).min())


@settings(max_examples=8, deadline=None)
@given(seed=seeds, side=st.sampled_from(["left", "right", "top", "bottom"]))
def test_outside_strokes_render_nothing_and_have_zero_gradient(
    any_backend: Rasterizer, seed: int, side: str
) -> None:
    pts = clipasso_strokes(3, 32, seed=seed) * 0.3
    offset = {"left": (-20.0, 10.0), "right": (45.0, 10.0), "top": (10.0, -20.0), "bottom": (10.0, 45.0)}[
        side
    ]
    pts = (pts + torch.tensor(offset)).requires_grad_()
    widths = torch.full((1, 3), 1.5, requires_grad=True)
    colors = torch.tensor(BLACK).expand(1, 3, 4).clone().requires_grad_()
    img = composite(any_backend(pts, widths, colors, (32, 32)))
    assert float((1 - img.detach()).abs().max()) == 0.0
    img.sum().backward()
    for t in (pts, widths, colors):
        assert t.grad is None or float(t.grad.abs().max()) == 0.0


def test_empty_scene_and_float32_vs_float64(any_backend: Rasterizer) -> None:
    empty = any_backend(torch.zeros(2, 0, 4, 2), torch.zeros(2, 0), torch.zeros(2, 0, 4), (8, 8))
    assert empty.shape == (2, 4, 8, 8) and float(empty.abs().max()) == 0.0
    assert any_backend(torch.zeros(0, 3, 4, 2), 1.0, BLACK, (8, 8)).shape == (0, 4, 8, 8)
    pts = clipasso_strokes(16, 64, seed=4)
    a = any_backend(pts, 1.5, BLACK, (64, 64))
    b = any_backend(pts.double(), 1.5, BLACK, (64, 64))
    assert a.dtype == torch.float32 and b.dtype == torch.float64
    assert float((a.double() - b).abs().max()) < 1e-3


@settings(max_examples=10, deadline=None)
@given(seed=seeds, background=st.sampled_from([1.0, 0.0, 0.3, (0.2, 0.5, 0.9)]))
@pytest.mark.parametrize("backend", list_rasterizers())
def test_render_over_equals_composite_of_render(backend: str, seed: int, background: object) -> None:
    """`rasterize(..., background=g)` (the torch backend straight from its premultiplied canvas) is
    `composite(rasterize(...), g)`: values and gradients to points, widths and colours."""
    g = torch.Generator().manual_seed(seed)
    pts = clipasso_strokes(6, 32, seed=seed, batch=2)
    widths = 0.4 + 2 * torch.rand(2, 6, generator=g)
    colors = torch.rand(2, 6, 4, generator=g)
    weight = torch.rand(2, 3, 32, 32, generator=g)
    outs, grads = [], []
    for fused in (False, True):
        leaves = [x.clone().requires_grad_() for x in (pts, widths, colors)]
        if fused:
            out = rasterize(*leaves, size=32, backend=backend, background=background)
        else:
            out = composite(rasterize(*leaves, size=32, backend=backend), background)
        (out * weight).sum().backward()
        outs.append(out.detach())
        grads.append([leaf.grad for leaf in leaves])
    assert outs[1].shape == (2, 3, 32, 32)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=0)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ the coverage function's backward
def _autograd_coverage(
    cf: torch.Tensor,
    r: torch.Tensor,
    t0: torch.Tensor,
    centre: torch.Tensor,
    kappa: torch.Tensor,
    cap: bool,
    thin: bool,
) -> torch.Tensor:
    """The differentiable coverage as autograd ops (the graph `_Coverage` replaces), ``centre [2, A]``."""
    from clipasso.render import torch_backend as tb

    q, dq, _ = tb._eval(cf, t0)
    diff = centre.T - q
    g = -(dq * diff).sum(-1)
    delta = (g - g.detach()) * -kappa
    diff = diff - dq.detach() * delta.unsqueeze(-1)
    dist2 = (diff * diff).sum(-1)
    dist = dist2.clamp_min(torch.finfo(cf.dtype).tiny).sqrt()
    nrm = diff.abs() / dist.unsqueeze(-1)
    on_curve = dist2.detach() <= 1e-12
    na = torch.where(on_curve, torch.ones_like(dist), nrm.amax(dim=-1))
    nb = torch.where(on_curve, torch.zeros_like(dist), nrm.amin(dim=-1))
    offset = r - dist
    cov = box_coverage(offset, na, nb)
    if cap:
        corr = tb._cap_correction(offset, na, nb, r)
        cov = cov - torch.where(kappa == 0, corr, torch.zeros_like(cov))
    if thin:
        cov = cov - box_coverage(-r - dist, na, nb)
    return cov.clamp(0.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("cap", "thin"), [(False, False), (True, False), (False, True), (True, True)])
def test_coverage_function_matches_autograd(dtype: torch.dtype, cap: bool, thin: bool) -> None:
    """`_Coverage`'s hand-written backward gives, bit for bit, autograd's gradients of the same ops
    (the formulas of each op, contributions summed in the engine's order), also on the bounds where
    a clamp or a tie decides: pixels fully covered, on the curve, at the ends, on a diagonal."""
    from clipasso.render import torch_backend as tb

    g = torch.Generator().manual_seed(0)
    n = 4000
    cf = torch.randn(n, 8, generator=g, dtype=torch.float64) * torch.tensor([3, 3, 5, 5, 8, 8, 20, 20.0])
    cf = cf.to(dtype)
    t0 = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    t0[::7], t0[::11] = 0.0, 1.0
    q, _, _ = tb._eval(cf, t0)
    centre = (q + torch.randn(n, 2, generator=g, dtype=torch.float64).to(dtype) * 2).T.contiguous()
    centre[:, ::13] = q[::13].T  # on the curve
    centre[:, 5::17] = q[5::17].T + torch.tensor([[0.5], [0.5]], dtype=dtype)  # a diagonal normal: a tie
    kappa = torch.rand(n, generator=g, dtype=torch.float64).to(dtype) * 0.1
    kappa[(t0 == 0) | (t0 == 1)] = 0.0
    r = (0.2 + 2.5 * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype)
    # pixels whose band edge is a hair inside their far corner: the coverage rounds to exactly 1,
    # on the clamp's bound, where the corner term still has a gradient
    diff = centre.T - q
    dist = diff.norm(dim=-1)
    nrm = diff.abs() / dist.unsqueeze(-1)
    h2 = 0.5 * nrm.sum(-1)
    near_corner = (dist + h2 - (1e-5 if dtype == torch.float32 else 1e-9))[3::19]
    r[3::19] = torch.where(dist[3::19] > 0.1, near_corner, r[3::19])
    weight = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    outs = []
    for fn in (_autograd_coverage, tb._Coverage.apply):
        leaves = [cf.clone().requires_grad_(), r.clone().requires_grad_()]
        out = fn(leaves[0], leaves[1], t0, centre, kappa, cap, thin)
        (out * weight).sum().backward()
        outs.append([out.detach(), *(x.grad for x in leaves)])
    assert int((outs[0][0] == 1).sum()) > 100  # the bound is exercised
    for want, got in zip(outs[0], outs[1]):
        assert torch.equal(want, got)


@pytest.mark.parametrize("grey", [1.0, 0.0, 0.3, 0.7])
@pytest.mark.parametrize("layout", ["planar", "channels_last", "unbatched"])
def test_composite_backward_matches_autograd(grey: float, layout: str) -> None:
    """`composite` onto a grey has its backward written out; it equals autograd's of the plain
    expression bit for bit, and its own backward is differentiable (second derivatives)."""
    g = torch.Generator().manual_seed(1)
    base = torch.rand(2, 4, 9, 7, generator=g)
    if layout == "channels_last":
        base = base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    elif layout == "unbatched":
        base = base[0]
    weight = torch.rand((*base.shape[:-3], 3, *base.shape[-2:]), generator=g)
    grads, outs = [], []
    for fused in (True, False):
        x = base.clone().requires_grad_()
        rgb, alpha = x[..., :3, :, :], x[..., 3:, :, :]
        out = composite(x, grey) if fused else rgb * alpha + (1.0 - alpha) * grey
        (out * weight).sum().backward()
        outs.append(out.detach())
        grads.append(x.grad)
    assert torch.equal(outs[0], outs[1]) and outs[0].stride() == outs[1].stride()
    assert torch.equal(grads[0], grads[1])
    x64 = base.double().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: composite(t, grey), (x64,))


@given(
    seed=st.integers(0, 2**16),
    segments=st.sampled_from([1, 2, 3]),
    n=st.integers(1, 10),
    batch=st.integers(1, 2),
    width=st.sampled_from([0.3, 1.5, 6.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    every_box=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_the_tiled_search_of_large_boxes_renders_bit_for_bit_as_the_full_pass(
    seed: int, segments: int, n: int, batch: int, width: float, dtype: torch.dtype, every_box: bool
) -> None:
    # long strokes over the canvas (large boxes) and short ones (small boxes) together
    import clipasso.render.torch_backend as tb

    g = torch.Generator().manual_seed(seed)
    p = 3 * segments + 1
    start = torch.rand(batch, n, 1, 2, generator=g, dtype=dtype) * 160
    spread = torch.where(torch.rand(batch, n, 1, 1, generator=g) < 0.5, 150.0, 20.0).to(dtype)
    points = start + torch.rand(batch, n, p, 2, generator=g, dtype=dtype) * spread - 10
    points[:, 0] = 80 + torch.rand(batch, p, 2, generator=g, dtype=dtype) * 20  # one always on the canvas
    widths = torch.full((batch, n), width, dtype=dtype)
    # dark enough to show (a pale, nearly transparent thin stroke can round to the white canvas)
    colors = torch.rand(batch, n, 4, generator=g, dtype=dtype) * torch.tensor(
        [0.5, 0.5, 0.5, 0.5], dtype=dtype
    )
    colors[..., 3] += 0.5
    out = {}
    # the tiles and their chord ranges (every box tiled, or the large ones) against every pixel
    # of every box tested against every chord
    tiled_from = 1 if every_box else tb._TILED_MIN_PIXELS
    for name, threshold in (("full", 10**12), ("tiled", tiled_from)):
        pts = points.clone().requires_grad_(True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tb, "_TILED_MIN_PIXELS", threshold)
            image = tb.rasterize_torch(pts, widths, colors, (200, 180), background=1.0)
        (image * torch.linspace(0, 1, 180, dtype=dtype)).sum().backward()
        assert pts.grad is not None
        out[name] = (image.detach(), pts.grad)
    assert torch.equal(out["tiled"][0], out["full"][0])
    assert torch.equal(out["tiled"][1], out["full"][1])
    assert bool((out["full"][0] < 1).any())  # something was drawn
