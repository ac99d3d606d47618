"""Speed options of the CLIP conv loss: bf16 (with its guard), channels_last, target caches, compile."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from clip_inputs import calibrated_resnet, smooth_images
from clipasso.augment import ReferenceViews
from clipasso.config import SketchConfig
from clipasso.errors import InputError
from clipasso.losses import CLIPConvLoss, LossContext
from clipasso.losses.clip_conv import bf16_supported
from clipasso.models import visual_of
from clipasso.testing import tiny_clip

_images = smooth_images


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return calibrated_resnet()


def gens(seed: int, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def _total(terms: dict[str, Tensor]) -> Tensor:
    return torch.stack(list(terms.values())).sum(0)


def _count_feature_batches(monkeypatch: Any) -> list[int]:
    """Record the batch size of every ResNet feature pass the CLIP conv loss makes from now on."""
    import clipasso.losses.clip_conv as mod

    sizes: list[int] = []
    real = mod.resnet_features

    def spy(visual: nn.Module, images: Tensor, layers: Any) -> dict[str, Tensor]:
        sizes.append(images.shape[0])
        return real(visual, images, layers)

    monkeypatch.setattr(mod, "resnet_features", spy)
    return sizes


def test_bf16_loss_is_finite_and_close_to_fp32(resnet: nn.Module) -> None:
    sketch, target = _images(2, 1), _images(1, 2)
    ctx = LossContext(generators=gens(5, 2))
    fp32 = _total(CLIPConvLoss(resnet, precision="fp32")(sketch, target, ctx))
    ctx = LossContext(generators=gens(5, 2))
    bf16 = _total(CLIPConvLoss(resnet, precision="bf16")(sketch, target, ctx))
    assert torch.isfinite(bf16).all()
    assert not torch.equal(bf16, fp32)  # bf16 really ran
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=1e-3)


def test_bf16_input_gradient_follows_fp32(resnet: nn.Module) -> None:
    loss = CLIPConvLoss(resnet)
    cos = loss.gradient_cosines(_images(2, 3), _images(1, 4), ("fp32", "bf16"))
    assert len(cos) == 2 and all(c > 0.9 for c in cos), cos
    same = loss.gradient_cosines(_images(1, 3), _images(1, 4), ("fp32", "fp32"))
    assert same[0] == pytest.approx(1.0, abs=1e-9)


def test_auto_precision_resolves_and_guard_falls_back(resnet: nn.Module, monkeypatch: Any) -> None:
    import clipasso.losses.precision as mod

    sketch, target = _images(1, 5), _images(1, 6)
    monkeypatch.setattr(mod, "bf16_supported", lambda device: True)
    ok = CLIPConvLoss(resnet, precision="auto", bf16_min_cosine=0.5)
    assert ok.active_precision is None
    ok(sketch, target, LossContext(mode="eval"))
    assert ok.active_precision == "bf16" and len(ok.guard_cosines) == 1
    strict = CLIPConvLoss(resnet, precision="auto", bf16_min_cosine=1.0)
    with pytest.warns(RuntimeWarning, match="bf16_min_cosine"):
        strict(sketch, target, LossContext(mode="eval"))
    assert strict.active_precision == "fp32"
    monkeypatch.setattr(mod, "bf16_supported", lambda device: False)
    none = CLIPConvLoss(resnet, precision="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none(sketch, target, LossContext(mode="eval"))
    assert none.active_precision == "fp32" and none.guard_cosines == []


def test_bf16_supported_is_false_for_meta() -> None:
    assert bf16_supported(torch.device("meta")) is False


def test_channels_last_gives_the_same_loss_and_gradient(resnet: nn.Module) -> None:
    target = _images(1, 8)
    out = []
    for cl in (False, True):
        sketch = _images(2, 7).requires_grad_(True)
        terms = CLIPConvLoss(resnet, channels_last=cl)(sketch, target, LossContext(generators=gens(1, 2)))
        _total(terms).sum().backward()
        assert sketch.grad is not None
        out.append((_total(terms).detach(), sketch.grad))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-3, atol=1e-7)


def test_base_view_cache_is_exact_and_reused(resnet: nn.Module, monkeypatch: Any) -> None:
    sketch, target = _images(2, 9), _images(1, 10)
    plain = CLIPConvLoss(resnet, cache_target_base=False)
    cached = CLIPConvLoss(resnet, cache_target_base=True)
    for mode in ("eval", "train"):
        a = plain(sketch, target, LossContext(mode=mode, generators=gens(2, 2)))
        b = cached(sketch, target, LossContext(mode=mode, generators=gens(2, 2)))
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7)
    sizes = _count_feature_batches(monkeypatch)
    cached(sketch, target, LossContext(mode="eval"))
    assert sizes == [2]  # the sketches only: the target's view 0 comes from the cache
    cached(sketch, _images(1, 11), LossContext(mode="eval"))
    assert sizes == [2, 1, 2]  # a new target is recomputed


def test_target_pool_uses_cached_features_and_matches_direct_computation(
    resnet: nn.Module, monkeypatch: Any
) -> None:
    sketch, target = _images(2, 12), _images(1, 13)
    loss = CLIPConvLoss(resnet, target_pool=6, num_views=3)
    out = loss(sketch, target, LossContext(generators=gens(4, 2)))
    assert set(out) == {"conv_layer2", "conv_layer3", "fc"} and all(
        torch.isfinite(v).all() for v in out.values()
    )
    # the same views by hand: each sketch draws 3 pool entries from its own generator
    pool = ReferenceViews(3).sample_pool(224, 224, 6)
    plain = CLIPConvLoss(resnet, cache_target_base=False)
    for b, g in enumerate(gens(4, 2)):
        pick = torch.randint(6, (3,), generator=g).tolist()
        xs = plain.augment.views_from(sketch[b : b + 1], [pool[i] for i in pick])
        ys = plain.augment.views_from(target, [pool[i] for i in pick])
        fx = plain.view_features(visual_of(resnet), xs, "fp32")
        fy = plain.view_features(visual_of(resnet), ys, "fp32")
        ref = plain.terms(fx, fy, torch.float32)
        for k in ref:
            torch.testing.assert_close(out[k][b], ref[k][0], rtol=1e-4, atol=1e-6)
    sizes = _count_feature_batches(monkeypatch)
    loss(sketch, target, LossContext(generators=gens(7, 2)))
    assert sizes == [8]  # 2 sketches x (view 0 + 3 pool views); no target pass at all


def test_target_pool_gradient_flows(resnet: nn.Module) -> None:
    sketch = _images(1, 14).requires_grad_(True)
    loss = CLIPConvLoss(resnet, target_pool=4)
    _total(loss(sketch, _images(1, 15), LossContext(generators=gens(0, 1)))).sum().backward()
    assert sketch.grad is not None and sketch.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"precision": "fp16"}, {"target_pool": -1}, {"target_pool": True}, {"bf16_min_cosine": 2.0}],
)
def test_bad_speed_options_raise(resnet: nn.Module, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        CLIPConvLoss(resnet, **kwargs)


def test_config_precision_is_validated_and_reaches_the_loss(resnet: nn.Module) -> None:
    from clipasso import Sketcher

    with pytest.raises(InputError, match="precision"):
        SketchConfig(precision="half")
    loss = Sketcher(clip_model=resnet, precision="fp32", channels_last=False).build_loss()
    assert isinstance(loss, CLIPConvLoss)
    assert loss.precision == "fp32" and loss.channels_last is False
    loss = Sketcher(clip_model=resnet, loss_options={"precision": "bf16"}).build_loss()
    assert isinstance(loss, CLIPConvLoss) and loss.precision == "bf16" and loss.channels_last is True


@pytest.mark.parametrize("bad", [-1, True, 2.5, "8"])
def test_config_target_pool_is_validated(bad: Any) -> None:
    with pytest.raises(InputError, match="target_pool"):
        SketchConfig(target_pool=bad)


def test_config_target_pool_reaches_the_losses_that_take_it(resnet: nn.Module) -> None:
    from clipasso import Sketcher
    from clipasso.losses import EdgeLoss

    assert SketchConfig().target_pool == 0  # the reference: every view's target pass recomputed
    loss = Sketcher(clip_model=resnet, target_pool=8).build_loss()
    assert isinstance(loss, CLIPConvLoss) and loss.target_pool == 8
    # the loss's own option wins, as for precision
    loss = Sketcher(clip_model=resnet, target_pool=8, loss_options={"target_pool": 0}).build_loss()
    assert isinstance(loss, CLIPConvLoss) and loss.target_pool == 0
    # a loss without the option is built without it
    assert isinstance(Sketcher(loss="edges", target_pool=8).build_loss(), EdgeLoss)


def test_sample_pool_is_reproducible_and_independent_of_the_module_generator() -> None:
    views = ReferenceViews(4, seed=5)
    before = views.generator.get_state()
    assert views.sample_pool(224, 224, 3) == ReferenceViews(4, seed=5).sample_pool(224, 224, 3)
    assert torch.equal(views.generator.get_state(), before)
    with pytest.raises(InputError):
        views.sample_pool(224, 224, 0)


# -- fewer views per step: num_views and identity_weight ------------------------------------------


def test_identity_weight_of_the_plain_mean_changes_nothing(resnet: nn.Module) -> None:
    sketch, target = _images(2, 3), _images(1, 4)
    for views in (1, 2, 4):
        plain = CLIPConvLoss(resnet, num_views=views)(sketch, target, LossContext(generators=gens(7, 2)))
        weighted = CLIPConvLoss(resnet, num_views=views, identity_weight=1 / (1 + views))(
            sketch, target, LossContext(generators=gens(7, 2))
        )
        assert plain.keys() == weighted.keys()
        for key in plain:
            torch.testing.assert_close(weighted[key], plain[key], rtol=1e-5, atol=0.0)


@settings(max_examples=6, deadline=None)
@given(weight=st.floats(0.0, 1.0), views=st.sampled_from([1, 2, 3]))
def test_identity_weight_mixes_view_0_and_the_random_views_linearly(
    resnet: nn.Module, weight: float, views: int
) -> None:
    """L(w) = w L(1) + (1 - w) L(0) on the same draws; L(1) in train mode is the eval loss."""
    sketch, target = _images(1, 5), _images(1, 6)

    def terms(w: float, mode: str = "train") -> dict[str, Tensor]:
        loss = CLIPConvLoss(resnet, num_views=views, identity_weight=w)
        return loss(sketch, target, LossContext(mode=mode, generators=gens(11, 1)))  # type: ignore[arg-type]

    only_0, only_random, mixed, evaluated = terms(1.0), terms(0.0), terms(weight), terms(1.0, "eval")
    # the random views do differ from view 0
    assert not torch.allclose(only_0["conv_layer2"], only_random["conv_layer2"], rtol=1e-2)
    for key in only_0:
        torch.testing.assert_close(only_0[key], evaluated[key], rtol=1e-5, atol=0.0)
        expected = weight * only_0[key] + (1 - weight) * only_random[key]
        torch.testing.assert_close(mixed[key], expected, rtol=1e-5, atol=1e-12)


def test_fewer_views_cost_fewer_feature_rows(resnet: nn.Module, monkeypatch: Any) -> None:
    sizes = _count_feature_batches(monkeypatch)
    loss = CLIPConvLoss(resnet, num_views=1, identity_weight=0.2)
    sketch = _images(2, 7).requires_grad_(True)
    _total(loss(sketch, _images(1, 8), LossContext(generators=gens(3, 2)))).sum().backward()
    assert sketch.grad is not None and bool(torch.isfinite(sketch.grad).all())
    # target view 0 once (cached), the target's 1 random view per sketch, the sketches' 2 views each
    assert sorted(sizes) == [1, 2, 4]


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.2", float("nan")])
def test_bad_identity_weight_raises(resnet: nn.Module, bad: Any) -> None:
    with pytest.raises(InputError, match="identity_weight"):
        CLIPConvLoss(resnet, identity_weight=bad)
    with pytest.raises(InputError, match="identity_weight"):
        SketchConfig(identity_weight=bad)


def test_identity_weight_needs_view_0(resnet: nn.Module) -> None:
    with pytest.raises(InputError, match="view 0"):
        CLIPConvLoss(resnet, augment=ReferenceViews(2, identity_view=False), identity_weight=0.2)


def test_config_views_reach_the_losses_that_take_them(resnet: nn.Module) -> None:
    from clipasso import Sketcher
    from clipasso.losses import EdgeLoss

    loss = Sketcher(clip_model=resnet).build_loss()
    assert isinstance(loss, CLIPConvLoss)
    assert loss.augment.num_views == 4 and loss.identity_weight is None  # the reference
    loss = Sketcher(clip_model=resnet, num_views=1, identity_weight=0.2).build_loss()
    assert isinstance(loss, CLIPConvLoss)
    assert loss.augment.num_views == 1 and loss.identity_weight == 0.2
    assert isinstance(Sketcher(loss="edges", num_views=1, identity_weight=0.2).build_loss(), EdgeLoss)
    with pytest.raises(InputError, match="num_views"):
        SketchConfig(num_views=-1)


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_bf16_weights_copy_is_bit_for_bit_autocast(resnet: nn.Module, arch: str) -> None:
    model = resnet if arch == "resnet" else tiny_clip("vit", seed=4)
    sketch, target = _images(2, 1), _images(1, 2)

    def run(once: bool) -> tuple[dict[str, Tensor], Tensor]:
        layers = None if arch == "resnet" else (0.0, 1.0, 1.0)  # the tiny ViT has 3 blocks
        loss = CLIPConvLoss(
            model, layer_weights=layers, precision="bf16", channels_last=arch == "resnet", bf16_weights=once
        )
        x = sketch.clone().requires_grad_(True)
        terms = loss(x, target, LossContext(generators=gens(5, 2)))
        _total(terms).sum().backward()
        assert x.grad is not None
        return {k: v.detach() for k, v in terms.items()}, x.grad

    (a, ga), (b, gb) = run(False), run(True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(ga, gb) and ga.abs().sum() > 0


def test_bf16_weights_copy_shares_the_rest_and_follows_weight_changes(resnet: nn.Module) -> None:
    from clipasso.losses.precision import BF16Tower

    tower = visual_of(resnet)
    shadow = BF16Tower()
    copy = shadow.get(tower)
    convs = [m for m in copy.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    norms = [(m, n) for m, n in zip(tower.modules(), copy.modules()) if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.weight is n.weight and m.running_mean is n.running_mean for m, n in norms)
    assert next(tower.parameters()).dtype == torch.float32  # the tower itself is untouched
    assert shadow.get(tower) is copy  # reused while the weights stand
    first = next(m for m in tower.modules() if isinstance(m, nn.Conv2d))
    saved = first.weight.detach().clone()
    try:
        with torch.no_grad():
            first.weight.mul_(2.0)  # an in-place change: the copy is rebuilt with the new values
        again = shadow.get(tower)
        assert again is not copy
        rebuilt = next(m for m in again.modules() if isinstance(m, nn.Conv2d))
        assert torch.equal(rebuilt.weight, first.weight.detach().to(torch.bfloat16))
    finally:
        with torch.no_grad():
            first.weight.copy_(saved)
    trainable = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))  # weights that require grad: no copy
    assert shadow.get(trainable) is trainable
