"""Stroke initializers (clipasso.init): saliency maps, sampling, random walk, registry, SVG, figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clipasso import limits
from clipasso.errors import InputError, LimitError, SVGError
from clipasso.init import (
    INITIALIZERS,
    EdgeInitializer,
    Initializer,
    InitResult,
    RandomInitializer,
    SaliencyInitializer,
    SVGInitializer,
    create_initializer,
    list_initializers,
    make_strokes,
    random_walk,
    register_initializer,
    relevance_from_attention,
    relevance_map,
    saliency_distribution,
    sample_pixels,
    sample_spread_pixels,
    save_saliency_figure,
    silhouette_relevance,
)
from clipasso.models import normalize, vit_features
from clipasso.xdog import edge_ink, xdog

SIZE = 224

SVG_TEXT = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="112" height="112" viewBox="0 0 112 112">'
    '<path d="M 10 20 C 20 30 30 25 40 50" stroke="#000000" stroke-width="3" fill="none"/>'
    '<path d="M 60 60 C 70 50 80 90 100 100" stroke="#000000" stroke-width="3" fill="none"/>'
    "</svg>"
)


def _target(h: int = SIZE, w: int = SIZE) -> torch.Tensor:
    """White canvas with a dark disc and a grey bar: has edges and structure."""
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    img = torch.ones(1, 3, h, w)
    disc = (yy - 0.45 * h) ** 2 + (xx - 0.4 * w) ** 2 < (0.22 * min(h, w)) ** 2
    img[:, :, disc] = 0.15
    img[:, 1:, int(0.75 * h) : int(0.82 * h), int(0.2 * w) : int(0.85 * w)] = 0.6
    return img


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _options(name: str, model: torch.nn.Module) -> dict[str, Any]:
    """Constructor options the registry tests need for the built-in initializers."""
    if name == "saliency":
        return {"model": model}
    if name == "svg":
        return {"source": SVG_TEXT, "top_up_options": {"model": model}}
    return {}


# ----------------------------------------------------------------------------------------------
# relevance map


def _hand_relevance(attention: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """METHOD §3.2 written out with loops, in float64."""
    total = torch.zeros(attention[0].shape[-1] - 1, dtype=torch.float64)
    for a in attention:
        heads = a.shape[1]
        head_sum = torch.zeros_like(total)
        for h in range(heads):
            head_sum += a[0, h].double().clamp(min=0)[0, 1:]
        total += head_sum / heads
    total /= len(attention)
    g = round(total.numel() ** 0.5)
    up = F.interpolate(total.view(1, 1, g, g), size=size, mode="bicubic", align_corners=False)[0, 0]
    return (up - up.min()) / (up.max() - up.min())


def test_relevance_equals_hand_computation(tiny_vit: torch.nn.Module) -> None:
    img = _target()
    attention = vit_features(tiny_vit, normalize(img)).attention
    expected = _hand_relevance(attention, (SIZE, SIZE))
    rel = relevance_map(tiny_vit, img)
    assert rel.shape == (1, 1, SIZE, SIZE)
    assert torch.allclose(rel[0, 0].double(), expected, rtol=0, atol=1e-6)
    assert float(rel.min()) == 0.0 and float(rel.max()) == 1.0
    # the initializer exposes the same map
    res = SaliencyInitializer(model=tiny_vit)(img, 4, generator=_gen(0))
    assert res.relevance is not None and torch.allclose(res.relevance.double(), expected, rtol=0, atol=1e-6)


def test_relevance_from_attention_small_exact() -> None:
    # 2 blocks, 2 heads, 2x2 patches; negative entries must be clamped before the head mean
    a1 = torch.zeros(1, 2, 5, 5)
    a1[0, 0, 0, 1:] = torch.tensor([1.0, 0.0, -5.0, 0.0])
    a1[0, 1, 0, 1:] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    a2 = torch.zeros(1, 2, 5, 5)
    a2[0, :, 0, 1:] = torch.tensor([0.0, 0.0, 0.0, 2.0])
    rel = relevance_from_attention([a1, a2], (2, 2))  # same size: bicubic is the identity
    # mean over heads: [.5, .5, 0, 0] and [0, 0, 0, 2]; mean over blocks: [.25, .25, 0, 1]
    assert torch.allclose(rel[0, 0], torch.tensor([[0.25, 0.25], [0.0, 1.0]]), atol=1e-6)


def test_relevance_rejects_resnet(tiny_resnet: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="ViT"):
        relevance_map(tiny_resnet, _target())


def test_relevance_on_non_square_canvas(tiny_vit: torch.nn.Module) -> None:
    rel = relevance_map(tiny_vit, _target(96, 160))
    assert rel.shape == (1, 1, 96, 160)
    assert float(rel.min()) == 0.0 and float(rel.max()) == 1.0


# ----------------------------------------------------------------------------------------------
# distribution and sampling


def test_distribution_formula() -> None:
    gen = _gen(1)
    rel = torch.rand(6, 7, generator=gen, dtype=torch.float64)
    edges = (torch.rand(6, 7, generator=gen) > 0.5).double()
    p = saliency_distribution(rel, edges, temperature=0.3)
    m = (1 - edges) * rel
    w = torch.where(m > 0, torch.exp(m / 0.3), torch.zeros_like(m))
    assert torch.allclose(p, w / w.sum(), rtol=1e-12, atol=0)
    assert bool((p[m == 0] == 0).all()) and bool((p[m > 0] > 0).all())


def test_distribution_mask_and_empty() -> None:
    rel = torch.rand(5, 5, generator=_gen(2))
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[1:3, 1:3] = True
    p = saliency_distribution(rel, None, mask=mask)
    assert float(p[~mask].abs().sum()) == 0.0 and abs(float(p.sum()) - 1.0) < 1e-6
    assert torch.equal(saliency_distribution(torch.zeros(3, 3)), torch.zeros(3, 3))
    with pytest.raises(InputError, match="temperature"):
        saliency_distribution(rel, temperature=0.0)


def test_sampling_follows_distribution_chi_square() -> None:
    stats = pytest.importorskip("scipy.stats")
    rel = torch.tensor(
        [[0.0, 0.1, 0.5, 1.0], [0.3, 0.0, 0.8, 0.05], [0.6, 0.2, 0.0, 0.9]], dtype=torch.float64
    )
    p = saliency_distribution(rel, temperature=0.3)
    gen = _gen(12345)
    draws = 6000
    counts = torch.zeros(rel.numel(), dtype=torch.float64)
    for _ in range(draws):
        rc = sample_pixels(p, 1, gen)[0]
        counts[rc[0] * 4 + rc[1]] += 1
    flat = p.flatten()
    assert float(counts[flat == 0].sum()) == 0.0, "a zero-probability pixel was drawn"
    expected = flat[flat > 0] * draws
    chi2 = float(((counts[flat > 0] - expected) ** 2 / expected).sum())
    critical = float(stats.chi2.ppf(0.999, int((flat > 0).sum()) - 1))
    assert chi2 < critical, f"chi-square {chi2:.2f} >= {critical:.2f}"
    # and it is not trivially small: a wrong distribution (uniform) fails the same test
    uniform = torch.full_like(expected, float(draws) / expected.numel())
    assert float(((counts[flat > 0] - uniform) ** 2 / uniform).sum()) > critical


def test_sample_pixels_distinct_deterministic_and_too_many() -> None:
    p = torch.rand(10, 12, generator=_gen(3))
    p[:, :3] = 0
    a = sample_pixels(p, 40, _gen(7))
    b = sample_pixels(p, 40, _gen(7))
    assert torch.equal(a, b)
    assert len({(int(r), int(c)) for r, c in a}) == 40
    assert bool((a[:, 1] >= 3).all())
    with pytest.raises(InputError, match="only 90 positive"):
        sample_pixels(p, 91, _gen(7))


# ----------------------------------------------------------------------------------------------
# saliency initializer


def test_saliency_same_seed_same_strokes_and_distinct_pixels(tiny_vit: torch.nn.Module) -> None:
    init = SaliencyInitializer(model=tiny_vit)
    img = _target()
    a = init(img, 64, generator=_gen(0))
    b = init(img, 64, generator=_gen(0))
    c = init(img, 64, generator=_gen(1))
    assert torch.equal(a.strokes.points, b.strokes.points)
    assert not torch.equal(a.strokes.points, c.strokes.points)
    assert a.pixels is not None and a.distribution is not None and a.edges is not None
    assert len({(int(r), int(c)) for r, c in a.pixels}) == 64
    assert bool((a.distribution[a.pixels[:, 0], a.pixels[:, 1]] > 0).all())
    # p0 = (col / W, row / H) in canvas units, i.e. exactly (col, row) in pixels
    starts = a.strokes.points.detach()[0, :, 0, :]
    assert torch.allclose(starts, a.pixels.flip(1).float(), atol=1e-4)
    # the edge map is XDoG of the CLIP-normalised target
    assert torch.equal(a.edges, xdog(normalize(img))[0, 0])


def test_saliency_mask_excludes_outside(tiny_vit: torch.nn.Module) -> None:
    img = _target()
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 40:140, 30:130] = 1.0
    res = SaliencyInitializer(model=tiny_vit)(img, 16, generator=_gen(4), mask=mask)
    assert res.pixels is not None and res.distribution is not None
    r, c = res.pixels[:, 0], res.pixels[:, 1]
    assert bool(((r >= 40) & (r < 140) & (c >= 30) & (c < 130)).all())
    assert float(res.distribution[mask[0, 0] == 0].sum()) == 0.0


def test_saliency_too_many_strokes_is_a_clear_error(tiny_vit: torch.nn.Module) -> None:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[100, 100:103] = True  # 3 pixels; the relevance there must be positive
    init = SaliencyInitializer(model=tiny_vit, use_xdog=False)
    assert init.maps(_target(), mask=mask)[2].gt(0).sum() == 3
    with pytest.raises(InputError, match=r"cannot draw 5 distinct start pixels.*only 3 positive"):
        init(_target(), 5, generator=_gen(0), mask=mask)


def test_saliency_without_xdog(tiny_vit: torch.nn.Module) -> None:
    res = SaliencyInitializer(model=tiny_vit, use_xdog=False, temperature=0.5)(
        _target(), 8, generator=_gen(0)
    )
    assert res.edges is None and res.relevance is not None and res.distribution is not None
    assert torch.allclose(res.distribution, saliency_distribution(res.relevance, temperature=0.5))


def test_saliency_loads_named_model_lazily_once(
    monkeypatch: pytest.MonkeyPatch, tiny_vit: torch.nn.Module
) -> None:
    import clipasso.models

    calls: list[str] = []

    def fake_load(name: str, **kwargs: Any) -> torch.nn.Module:
        calls.append(name)
        return tiny_vit

    monkeypatch.setattr(clipasso.models, "load_clip", fake_load)
    init = SaliencyInitializer(model="ViT-B/32")
    assert calls == []
    init(_target(), 2, generator=_gen(0))
    init(_target(), 2, generator=_gen(1))
    assert calls == ["ViT-B/32"]


def test_saliency_options_and_bad_input(tiny_vit: torch.nn.Module) -> None:
    res = SaliencyInitializer(model=tiny_vit, num_segments=3, radius=0.1, width=2.0)(
        _target(), 5, generator=_gen(0)
    )
    assert res.strokes.points.shape == (1, 5, 10, 2)
    steps = res.strokes.points.detach()[0].diff(dim=1).abs()
    assert float(steps.max()) <= 0.05 * SIZE + 1e-4
    assert torch.allclose(res.strokes.widths, torch.full((1, 5), 2.0))
    with pytest.raises(InputError, match="temperature"):
        SaliencyInitializer(model=tiny_vit, temperature=-1.0)
    with pytest.raises(InputError, match="num_segments"):
        SaliencyInitializer(model=tiny_vit, num_segments=0)
    init = SaliencyInitializer(model=tiny_vit)
    with pytest.raises(InputError, match=r"\[1, 3, H, W\]"):
        init(torch.ones(2, 3, 8, 8), 2, generator=_gen(0))
    with pytest.raises(InputError, match="num_strokes"):
        init(_target(), 0, generator=_gen(0))
    with pytest.raises(InputError, match="mask"):
        init(_target(), 2, generator=_gen(0), mask=torch.ones(1, 1, 8, 8))


# ----------------------------------------------------------------------------------------------
# random walk and random initializer


def test_random_walk_steps() -> None:
    starts = torch.rand(50, 2, generator=_gen(0))
    pts = random_walk(starts, 7, 0.05, _gen(1))
    assert pts.shape == (50, 7, 2)
    assert torch.equal(pts[:, 0], starts)
    steps = pts.diff(dim=1)
    assert float(steps.abs().max()) <= 0.025
    # steps are u - 0.5 scaled: roughly centred and spread over the whole range
    assert abs(float(steps.mean())) < 0.002 and float(steps.abs().max()) > 0.02
    assert torch.equal(pts, random_walk(starts, 7, 0.05, _gen(1)))


def test_random_initializer_uniform_and_masked() -> None:
    img = torch.ones(1, 3, 64, 80)
    res = RandomInitializer()(img, 500, generator=_gen(0))
    starts = res.strokes.points.detach()[0, :, 0, :]
    assert float(starts[:, 0].min()) >= 0 and float(starts[:, 0].max()) < 80
    assert float(starts[:, 1].min()) >= 0 and float(starts[:, 1].max()) < 64
    assert abs(float(starts[:, 0].mean()) / 80 - 0.5) < 0.05
    mask = torch.zeros(64, 80)
    mask[10:20, 30:40] = 1
    res = RandomInitializer()(img, 30, generator=_gen(0), mask=mask)
    assert res.pixels is not None
    assert bool(((res.pixels[:, 0] >= 10) & (res.pixels[:, 0] < 20)).all())
    with pytest.raises(InputError, match="only 100 positive"):
        RandomInitializer()(img, 101, generator=_gen(0), mask=mask)


# ----------------------------------------------------------------------------------------------
# every registered initializer


@pytest.mark.parametrize("name", list_initializers())
def test_registry_shapes_determinism_range(name: str, tiny_vit: torch.nn.Module) -> None:
    init = create_initializer(name, **_options(name, tiny_vit))
    assert isinstance(init, Initializer)
    img = _target()
    a = init(img, 6, generator=_gen(0))
    b = init(img, 6, generator=_gen(0))
    c = init(img, 6, generator=_gen(99))
    assert isinstance(a, InitResult)
    pts = a.strokes.points.detach()
    assert pts.shape == (1, 6, 4, 2) and pts.dtype == torch.float32
    assert torch.equal(pts, b.strokes.points)
    assert not torch.equal(pts, c.strokes.points)
    assert a.strokes.widths.shape == (1, 6) and a.strokes.colors.shape == (1, 6, 4)
    assert bool(torch.isfinite(pts).all())
    assert float(pts.min()) >= -0.25 * SIZE and float(pts.max()) <= 1.25 * SIZE
    for m in (a.relevance, a.edges, a.distribution):
        assert m is None or m.shape == (SIZE, SIZE)


@pytest.mark.parametrize("name", list_initializers())
def test_registry_non_square_canvas(name: str, tiny_vit: torch.nn.Module) -> None:
    init = create_initializer(name, **_options(name, tiny_vit))
    res = init(_target(96, 128), 3, generator=_gen(0))
    pts = res.strokes.points.detach()[0]
    assert tuple(res.strokes.canvas_size) == (96, 128)
    assert float(pts[..., 0].max()) <= 1.25 * 128 and float(pts[..., 1].max()) <= 1.25 * 96


def test_defaults_are_reference_strokes(tiny_vit: torch.nn.Module) -> None:
    for init in (RandomInitializer(), SaliencyInitializer(model=tiny_vit), EdgeInitializer()):
        s = init(_target(), 4, generator=_gen(0)).strokes
        assert torch.equal(s.widths, torch.full((1, 4), 1.5))
        assert torch.equal(s.colors, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(1, 4, 4))


def test_register_custom_initializer() -> None:
    @register_initializer("test-centre")
    class Centre(Initializer):
        def __call__(
            self,
            target: torch.Tensor,
            num_strokes: int,
            *,
            generator: torch.Generator,
            mask: torch.Tensor | None = None,
        ) -> InitResult:
            h, w = target.shape[-2:]
            pts = random_walk(torch.full((num_strokes, 2), 0.5), 4, 0.05, generator)
            return InitResult(strokes=make_strokes(pts, (int(h), int(w))))

    try:
        assert "test-centre" in list_initializers()
        res = create_initializer("test-centre")(_target(32, 32), 3, generator=_gen(0))
        assert torch.equal(res.strokes.points[0, :, 0], torch.full((3, 2), 16.0))
    finally:
        INITIALIZERS.remove("test-centre")
    with pytest.raises(InputError, match="unknown initializer"):
        create_initializer("test-centre")


# ----------------------------------------------------------------------------------------------
# SVG warm start


def test_svg_initializer_keeps_svg_strokes_and_tops_up(tiny_vit: torch.nn.Module) -> None:
    init = SVGInitializer(SVG_TEXT, top_up_options={"model": tiny_vit})
    res = init(_target(), 5, generator=_gen(0))
    pts = res.strokes.points.detach()[0]
    assert pts.shape == (5, 4, 2)
    # canvas 112 -> 224: coordinates doubled
    expected0 = torch.tensor([[10.0, 20.0], [20.0, 30.0], [30.0, 25.0], [40.0, 50.0]]) * 2
    assert torch.allclose(pts[0], expected0, atol=1e-4)
    assert res.distribution is not None and res.pixels is not None and res.pixels.shape == (3, 2)
    assert torch.allclose(pts[2:, 0], res.pixels.flip(1).float(), atol=1e-4)


def test_svg_initializer_excess_and_file(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    path = tmp_path / "warm.svg"
    path.write_text(SVG_TEXT)
    with pytest.raises(InputError, match="2 strokes but num_strokes=1"):
        SVGInitializer(path)(_target(), 1, generator=_gen(0))
    res = SVGInitializer(path, on_excess="truncate")(_target(), 1, generator=_gen(0))
    assert res.strokes.points.shape == (1, 1, 4, 2)
    res = SVGInitializer(str(path))(_target(), 2, generator=_gen(0))
    assert res.distribution is None and res.strokes.points.shape == (1, 2, 4, 2)
    with pytest.raises(InputError, match="not found"):
        SVGInitializer(tmp_path / "missing.svg")(_target(), 2, generator=_gen(0))
    with pytest.raises(InputError, match="on_excess"):
        SVGInitializer(path, on_excess="drop")  # type: ignore[arg-type]


def test_svg_initializer_reads_real_world_svgs_up_front(tmp_path: Path) -> None:
    """Transforms, arcs and shapes are read; a bad file fails when the initializer is built; a stroke
    with more segments than max_segments is refused."""
    drawing = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 56 56">'
        '<g transform="translate(28 28) scale(2)">'
        '<circle r="10"/><path d="M -10 0 A 10 5 0 0 0 10 0" stroke-width="0.5"/></g></svg>'
    )
    init = SVGInitializer(drawing, top_up="random")
    assert init.num_svg_strokes == 6  # 4 quarter circles and an arc of 2 cubics, split: mixed counts
    res = init(_target(), 6, generator=_gen(0))
    pts = res.strokes.points.detach()[0]
    radii = ((pts[:4, [0, 3]] - SIZE / 2).norm(dim=-1) / (SIZE / 56)).flatten()
    assert torch.allclose(radii, torch.full_like(radii, 20.0), atol=1e-4)  # the circle, scaled by 2
    # half of stroke-width 0.5, times the group's scale 2, times the canvas scale
    assert torch.allclose(res.strokes.widths[0, 4:], torch.full((2,), 0.25 * 2 * SIZE / 56))
    bad = tmp_path / "bad.svg"
    bad.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 x 9"/>')
    with pytest.raises(SVGError, match=r"bad\.svg: malformed viewBox"):
        SVGInitializer(bad, top_up="random")
    long = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><path d="M 0 0{}"/></svg>'
    with pytest.raises(LimitError, match="max_segments"):
        SVGInitializer(long.format(" L 1 1" * 65), top_up="random")
    with limits.override(max_segments=65):
        assert SVGInitializer(long.format(" L 1 1" * 65), top_up="random").num_svg_strokes == 1


# ----------------------------------------------------------------------------------------------
# figure


def test_saliency_figure_png(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    img = _target()
    res = SaliencyInitializer(model=tiny_vit)(img, 8, generator=_gen(0))
    out = save_saliency_figure(tmp_path / "fig" / "saliency.png", img, res)
    with Image.open(out) as fig:
        assert fig.format == "PNG" and fig.size == (3 * SIZE + 8, SIZE + 18)
        rgb = fig.convert("RGB")
        assert res.pixels is not None
        r, c = (int(v) for v in res.pixels[0])
        assert rgb.getpixel((c, r + 18)) == (220, 20, 20)
        # the relevance panel is not blank
        panel = rgb.crop((SIZE + 4, 18, 2 * SIZE + 4, SIZE + 18))
        extrema = panel.getextrema()
        assert any(hi - lo > 100 for lo, hi in extrema)
    # maps absent (random initializer): grey panels, still a PNG
    res = RandomInitializer()(img, 4, generator=_gen(0))
    out = save_saliency_figure(tmp_path / "random.png", img, res)
    with Image.open(out) as fig:
        assert fig.convert("RGB").getpixel((2 * SIZE + 8 + 10, 40)) == (200, 200, 200)


def test_saliency_maps_are_computed_once_per_target(tiny_vit: torch.nn.Module) -> None:
    """Best-of-N draws N times from one target: the ViT pass runs once, and again only when the
    target changes."""
    calls = []
    handle = tiny_vit.visual.conv1.register_forward_hook(lambda *a: calls.append(1))
    try:
        init = SaliencyInitializer(model=tiny_vit)
        target = _target()
        a = init(target, 4, generator=_gen(0))
        b = init(target, 4, generator=_gen(1))
        assert len(calls) == 1
        assert torch.equal(a.distribution, b.distribution) and not torch.equal(
            a.strokes.points, b.strokes.points
        )
        target.mul_(0.5)  # changed in place: the maps must be recomputed
        c = init(target, 4, generator=_gen(0))
        assert len(calls) == 2 and not torch.equal(a.relevance, c.relevance)
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------
# weights-free edges


@given(
    box=st.tuples(st.integers(4, 40), st.integers(4, 40), st.integers(12, 40), st.integers(12, 40)),
    grey=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**31 - 1),
    relevance=st.sampled_from(["silhouette", "uniform"]),
)
def test_edges_initializer_starts_on_edges_spread_apart(
    box: tuple[int, int, int, int], grey: float, seed: int, relevance: str
) -> None:
    top, left, h, w = box
    img = torch.ones(1, 3, 64, 64)
    img[..., top : top + h, left : left + w] = grey  # a box, maybe cut by the frame
    img[:, 0, 50:56, 4:30] = 0.3  # and a reddish bar
    init = EdgeInitializer(relevance=relevance)  # type: ignore[arg-type]
    res = init(img, 6, generator=_gen(seed))
    assert res.pixels is not None and res.edges is not None and res.distribution is not None
    ink = edge_ink(img)[0, 0]
    rows, cols = res.pixels[:, 0], res.pixels[:, 1]
    assert bool((ink[rows, cols] == 1).all())  # every start on an edge of the objective's map
    assert torch.equal(res.edges, 1.0 - ink)
    assert bool((res.distribution[ink == 0] == 0).all())
    starts = res.strokes.points[0, :, 0]
    torch.testing.assert_close(starts, torch.stack([cols, rows], dim=1).float(), atol=1e-4, rtol=0)
    d = torch.cdist(res.pixels.float(), res.pixels.float()) + 1e3 * torch.eye(6)
    support = int((res.distribution > 0).sum())
    spacing = 0.06 * 64
    offsets = torch.arange(-4, 5.0)
    per_disc = int((offsets[:, None] ** 2 + offsets[None, :] ** 2 < spacing**2).sum())
    if support > 5 * per_disc:  # 5 draws cannot use the support up: the 6 starts are kept apart
        assert float(d.min()) >= spacing - 1e-6


def test_edges_initializer_respects_the_mask_and_fails_without_edges() -> None:
    img = _target()
    mask = torch.zeros(SIZE, SIZE)
    mask[:, : SIZE // 2] = 1.0
    res = EdgeInitializer()(img, 8, generator=_gen(1), mask=mask)
    assert res.pixels is not None and bool((res.pixels[:, 1] < SIZE // 2).all())
    with pytest.raises(InputError, match="positive entries"):
        EdgeInitializer()(torch.ones(1, 3, 32, 32), 2, generator=_gen(0))
    for bad in ({"relevance": "clip"}, {"edges": "dots"}, {"spacing": 1.0}, {"floor": 2.0}, {"sigma": 0.0}):
        with pytest.raises(InputError):
            EdgeInitializer(**bad)  # type: ignore[arg-type]


def test_silhouette_relevance_peaks_on_the_object_boundary() -> None:
    img = torch.ones(1, 3, 64, 64)
    img[..., 16:48, 16:48] = torch.tensor([0.9, 0.2, 0.2]).view(1, 3, 1, 1)  # a red square
    img[..., 28:36, 28:36] = 0.0  # with a black spot inside
    r = silhouette_relevance(img)
    assert float(r[32, 16]) > 0.9 and float(r[16, 40]) > 0.9  # the silhouette
    assert float(r[32, 31]) == pytest.approx(0.25, abs=1e-3)  # inner edges: the floor
    assert float(r[2, 2]) == pytest.approx(0.25, abs=1e-3)
    assert torch.equal(silhouette_relevance(torch.ones(1, 3, 16, 16)), torch.full((16, 16), 0.25))
    assert torch.equal(silhouette_relevance(img, floor=1.0), torch.ones(64, 64))


def test_spread_sampling_keeps_distance_and_falls_back_when_the_support_runs_out() -> None:
    dist = torch.zeros(40, 40)
    dist[20, :] = 1.0
    px = sample_spread_pixels(dist, 4, _gen(0), 8.0)
    gaps = px[:, 1].sort().values.diff()
    assert bool((px[:, 0] == 20).all()) and bool((gaps >= 8).all())
    crowded = torch.zeros(40, 40)
    crowded[5, 5:10] = 1.0  # 5 pixels, within 8 of each other: distinct, not apart
    px = sample_spread_pixels(crowded, 5, _gen(0), 8.0)
    assert sorted(px[:, 1].tolist()) == [5, 6, 7, 8, 9]
    assert torch.equal(sample_spread_pixels(dist, 4, _gen(3), 0.0), sample_pixels(dist, 4, _gen(3)))
    with pytest.raises(InputError, match="only 5 positive"):
        sample_spread_pixels(crowded, 6, _gen(0), 8.0)
