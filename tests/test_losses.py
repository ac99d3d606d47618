"""Losses: registry-parametrised contract tests, hand re-computations of METHOD §4, composition, edges."""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import clip
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipasso.augment import ReferenceViews
from clipasso.errors import ClipassoError, InputError
from clipasso.losses import (
    LOSSES,
    CLIPConvLoss,
    CLIPSemanticLoss,
    CLIPViTLayerLoss,
    ComposedLoss,
    EdgeLoss,
    LossContext,
    OpacitySparsityLoss,
    PixelL2Loss,
    SketchLoss,
    Term,
    create_loss,
    list_losses,
    parse_vit_layers,
    register_loss,
    total_loss,
)
from clipasso.models import normalize, resnet_features, vit_block_index, vit_features, vit_tokens
from clipasso.testing import recalibrate_batchnorm, tiny_clip_file
from clipasso.xdog import gaussian_blur, rgb_to_grey, xdog

SIZE = 224


# A user-defined loss, registered at import (collection) time: the registry-parametrised tests below
# must pick it up exactly like the built-in ones.
@register_loss("_test_user_abs", overwrite=True)
class UserAbsLoss(SketchLoss):
    name = "user_abs"

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
        return (sketch - target).abs().mean(dim=(1, 2, 3))


ALL_LOSSES = list_losses()


def _images(batch: int, seed: int) -> Tensor:
    """Sketch-like images: white with a few dark random blobs (so CLIP features vary)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.ones(batch, 3, SIZE, SIZE)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    for b in range(batch):
        for _ in range(6):
            cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([SIZE, SIZE, 30.0])).tolist()
            ink = ((yy - cy) ** 2 + (xx - cx) ** 2).float().sqrt().sub(r + 3).neg().clamp(0, 1)
            img[b] = img[b] * (1 - ink) + ink * torch.rand(3, 1, 1, generator=g)
    return img


@pytest.fixture(scope="module")
def resnet(tiny_resnet: nn.Module) -> nn.Module:
    """The tiny ResNet with BatchNorm recalibrated, so features (and loss values) are not ~0."""
    model = copy.deepcopy(tiny_resnet)
    recalibrate_batchnorm(model, _images(4, 123))
    return model


@pytest.fixture(scope="module")
def vit(tiny_vit: nn.Module) -> nn.Module:
    return tiny_vit


def make(name: str, model: nn.Module, vit: nn.Module | None = None, **extra: Any) -> SketchLoss:
    """Build any registered loss for tests: a ``model`` kwarg gets the tiny model (the tiny ViT for a
    loss whose class says ``tower = "vit"``), few views."""
    factory = LOSSES.get(name)
    params = inspect.signature(factory).parameters
    kwargs: dict[str, Any] = {}
    if "model" in params:
        kwargs["model"] = vit if getattr(factory, "tower", None) == "vit" and vit is not None else model
    if "num_views" in params:
        kwargs["num_views"] = 2
    kwargs.update(extra)
    return create_loss(name, **kwargs)


def context_for(loss: SketchLoss, batch: int, **kw: Any) -> LossContext:
    strokes = torch.rand(batch, 5, generator=torch.Generator().manual_seed(1)) if loss.needs_strokes else None
    return LossContext(strokes=strokes, **kw)


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# --- registry-parametrised contract ------------------------------------------------------------


def test_user_loss_is_registered_and_parametrised() -> None:
    assert "_test_user_abs" in ALL_LOSSES
    assert {"clip_conv", "clip_semantic", "clip_vit_layer", "edges", "pixel_l2", "sparsity"} <= set(
        ALL_LOSSES
    )
    loss = create_loss("_test_user_abs", weight=2.0)
    out = loss(torch.zeros(2, 3, 8, 8), torch.ones(1, 3, 8, 8))
    torch.testing.assert_close(out["user_abs"], torch.tensor([2.0, 2.0]))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_terms_shape_finite_nonnegative_and_gradients(name: str, resnet: nn.Module, vit: nn.Module) -> None:
    loss = make(name, resnet, vit)
    sketch = _images(2, 1).requires_grad_(True)
    target = _images(1, 2)
    out = loss(sketch, target, context_for(loss, 2, generators=gens(0, 1)))
    assert list(out) == loss.term_names() and out
    for key, value in out.items():
        assert value.shape == (2,), key
        assert torch.isfinite(value).all(), key
        assert (value >= 0).all(), (key, value)
    if not loss.needs_strokes:  # every term that reads the sketch must give it a gradient
        total_loss(out).sum().backward()
        assert sketch.grad is not None and torch.isfinite(sketch.grad).all()
        assert sketch.grad.abs().sum() > 0
    for model in (resnet, vit):  # the CLIP models got no weight gradient
        assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_identical_sketch_gives_zero_distance(
    name: str, mode: str, resnet: nn.Module, vit: nn.Module
) -> None:
    loss = make(name, resnet, vit)
    if not loss.is_distance:
        pytest.skip("not a sketch-target distance")
    if mode == "train" and not loss.aligned_views:
        pytest.skip("compares augmented sketches with the un-augmented target")
    img = _images(2, 3)
    out = loss(img, img, context_for(loss, 2, mode=mode, generators=gens(4, 5)))
    for key, value in out.items():
        torch.testing.assert_close(value, torch.zeros(2), rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_batched_equals_single_calls(name: str, resnet: nn.Module, vit: nn.Module) -> None:
    loss = make(name, resnet, vit)
    sketch, target = _images(3, 6), _images(1, 7)
    ctx = context_for(loss, 3, generators=gens(10, 11, 12))
    batched = loss(sketch, target, ctx)
    for b in range(3):
        strokes = None if ctx.strokes is None else ctx.strokes[b : b + 1]
        single = loss(sketch[b : b + 1], target, LossContext(generators=gens(10 + b), strokes=strokes))
        for key in batched:
            torch.testing.assert_close(batched[key][b : b + 1], single[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_same_seed_same_value_and_eval_is_deterministic(name: str, resnet: nn.Module, vit: nn.Module) -> None:
    loss = make(name, resnet, vit)
    sketch, target = _images(1, 8), _images(1, 9)
    a = loss(sketch, target, context_for(loss, 1, generators=gens(3)))
    b = loss(sketch, target, context_for(loss, 1, generators=gens(3)))
    e1 = loss(sketch, target, context_for(loss, 1, mode="eval"))
    e2 = loss(sketch, target, context_for(loss, 1, mode="eval"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        torch.testing.assert_close(e1[key], e2[key], rtol=0, atol=0)


# --- hand re-computations (METHOD §4) -----------------------------------------------------------


def _conv_by_hand(
    model: nn.Module, xs: Tensor, ys: Tensor, weights: dict[str, float], distance: str, fc: float
) -> dict[str, Tensor]:
    """xs, ys: [V, 3, 224, 224] normalised views of ONE sketch and its target."""
    names = [*weights, "attnpool"]
    fx, fy = resnet_features(model, xs, names), resnet_features(model, ys, names)
    out = {}
    for k, w in weights.items():
        if distance == "l2":
            d = torch.mean((fx[k] - fy[k]) ** 2)
        elif distance == "l1":
            d = torch.mean(torch.abs(fx[k] - fy[k]))
        else:
            d = torch.mean(1 - F.cosine_similarity(fx[k], fy[k], dim=1))
        out[f"conv_{k}"] = w * d
    out["fc"] = fc * torch.mean(1 - F.cosine_similarity(fx["attnpool"], fy["attnpool"], dim=1))
    return out


@pytest.mark.parametrize("distance", ["l2", "l1", "cos"])
def test_clip_conv_eval_equals_hand_computation(distance: str, resnet: nn.Module) -> None:
    sketch, target = _images(2, 20), _images(1, 21)
    weights = (0.5, 0.0, 1.0, 2.0, 0.25)
    loss = CLIPConvLoss(resnet, layer_weights=weights, distance=distance)  # type: ignore[arg-type]
    out = loss(sketch, target, LossContext(mode="eval"))
    named = dict(zip(("stem", "layer1", "layer2", "layer3", "layer4"), weights))
    named = {k: w for k, w in named.items() if w}
    assert sorted(out) == sorted([f"conv_{k}" for k in named] + ["fc"])
    for b in range(2):
        ref = _conv_by_hand(resnet, normalize(sketch[b : b + 1]), normalize(target), named, distance, 0.1)
        for key, value in ref.items():
            assert float(value) > 1e-4, key  # the comparison is meaningful
            torch.testing.assert_close(out[key][b], value, rtol=1e-6, atol=1e-6, msg=key)


def test_clip_conv_default_train_equals_hand_computation_on_five_views(resnet: nn.Module) -> None:
    sketch, target = _images(1, 22), _images(1, 23)
    loss = CLIPConvLoss(resnet)  # reference defaults: layers 2, 3 weight 1, fc 0.1, 4 random views
    out = loss(sketch, target, LossContext(generators=gens(42)))
    xs, ys = ReferenceViews(4)(sketch, target, generators=gens(42))
    assert ys is not None and xs.shape == (1, 5, 3, 224, 224)
    ref = _conv_by_hand(resnet, xs[0], ys[0], {"layer2": 1.0, "layer3": 1.0}, "l2", 0.1)
    assert sorted(out) == ["conv_layer2", "conv_layer3", "fc"]
    for key, value in ref.items():
        torch.testing.assert_close(out[key][0], value, rtol=1e-6, atol=1e-6, msg=key)


@pytest.mark.parametrize("distance", ["l2", "cos"])
def test_clip_conv_vit_blocks_equal_hand_computation(distance: str, vit: nn.Module) -> None:
    sketch, target = _images(1, 24), _images(1, 25)
    loss = CLIPConvLoss(vit, layer_weights={"block0": 0.5, "block2": 1.0}, distance=distance)  # type: ignore[arg-type]
    out = loss(sketch, target, LossContext(mode="eval"))
    fx, fy = vit_features(vit, normalize(sketch), attention=False), vit_features(vit, normalize(target))
    assert fx.embedding is not None and fy.embedding is not None
    for i, w in ((0, 0.5), (2, 1.0)):
        if distance == "l2":
            d = torch.mean((fx.tokens[i] - fy.tokens[i]) ** 2)
        else:
            d = torch.mean(1 - F.cosine_similarity(fx.tokens[i], fy.tokens[i], dim=-1))
        torch.testing.assert_close(out[f"conv_block{i}"][0], w * d, rtol=1e-6, atol=1e-6)
    fc = 0.1 * (1 - F.cosine_similarity(fx.embedding, fy.embedding, dim=-1)).mean()
    torch.testing.assert_close(out["fc"][0], fc, rtol=1e-6, atol=1e-6)


def test_clip_conv_zero_weight_layers_are_not_computed(resnet: nn.Module, monkeypatch: Any) -> None:
    calls: list[list[str]] = []
    import clipasso.losses.clip_conv as mod

    real = mod.resnet_features

    def spy(visual: nn.Module, images: Tensor, layers: Any) -> dict[str, Tensor]:
        calls.append(list(layers))
        return real(visual, images, layers)

    monkeypatch.setattr(mod, "resnet_features", spy)
    CLIPConvLoss(resnet, fc_weight=0.0)(_images(1, 0), _images(1, 1), LossContext(mode="eval"))
    assert calls == [["layer2", "layer3"], ["layer2", "layer3"]]


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_clip_semantic_equals_hand_computation(kind: str, resnet: nn.Module, vit: nn.Module) -> None:
    model = resnet if kind == "resnet" else vit
    sketch, target = _images(1, 30), _images(1, 31)
    loss = CLIPSemanticLoss(model, num_views=4)
    with torch.no_grad():
        ty = model.encode_image(normalize(target))
        ev = loss(sketch, target, LossContext(mode="eval"))["clip_semantic"]
        ref = 1 - F.cosine_similarity(model.encode_image(normalize(sketch)), ty, dim=-1)
        torch.testing.assert_close(ev, ref, rtol=1e-6, atol=1e-6)
        tr = loss(sketch, target, LossContext(generators=gens(9)))["clip_semantic"]
        xs, _ = ReferenceViews(4, identity_view=False)(sketch, None, generators=gens(9))
        assert xs.shape[1] == 4  # 4 augmented sketches, no identity view (reference)
        ref = (1 - F.cosine_similarity(model.encode_image(xs[0]), ty, dim=-1)).mean()
        torch.testing.assert_close(tr[0], ref, rtol=1e-6, atol=1e-6)


def test_clip_semantic_text_target(vit: nn.Module) -> None:
    sketch = _images(2, 32).requires_grad_(True)
    loss = CLIPSemanticLoss(vit, text=["a cat", "a dog"])
    out = loss(sketch, _images(1, 0), LossContext(mode="eval"))["clip_semantic"]
    with torch.no_grad():
        t = vit.encode_text(clip.tokenize(["a cat", "a dog"]))
        e = vit.encode_image(normalize(sketch))
        ref = (1 - F.cosine_similarity(e[:, None], t[None], dim=-1)).mean(dim=1)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert sketch.grad is not None and sketch.grad.abs().sum() > 0
    with pytest.raises(InputError, match="encode_text"):
        CLIPSemanticLoss(vit.visual, text="a cat")


def test_pixel_edge_and_sparsity_equal_hand_computation() -> None:
    sketch, target = _images(2, 40), _images(1, 41)
    mask = (torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    pix = PixelL2Loss()(sketch, target, LossContext(mask=mask))["pixel_l2"]
    ref = ((sketch - target) ** 2 * mask).sum(dim=(1, 2, 3)) / (3 * mask.sum())
    torch.testing.assert_close(pix, ref, rtol=1e-6, atol=1e-7)

    edge = EdgeLoss(sigmas=(0.0, 2.0), scale_weights=(1.0, 3.0), edges="fill")(sketch, target)["edge"]
    ink_s, ink_t = 1 - rgb_to_grey(sketch), 1 - xdog(target)
    ref = 0.25 * ((ink_s - ink_t) ** 2).mean(dim=(1, 2, 3)) + 0.75 * (
        (gaussian_blur(ink_s, 2.0) - gaussian_blur(ink_t, 2.0)) ** 2
    ).mean(dim=(1, 2, 3))
    torch.testing.assert_close(edge, ref, rtol=1e-6, atol=1e-7)

    alpha = torch.tensor([[0.2, 1.5, -0.1, 0.4], [1.0, 1.0, 1.0, 1.0]])
    sp = OpacitySparsityLoss()(sketch, target, LossContext(strokes=alpha))["sparsity"]
    torch.testing.assert_close(sp, torch.tensor([0.4, 1.0]))
    sp_sum = OpacitySparsityLoss(reduction="sum", power=2.0)(sketch, target, LossContext(strokes=alpha))
    torch.testing.assert_close(sp_sum["sparsity"], torch.tensor([0.04 + 1 + 0.16, 4.0]))


def test_sparsity_reads_stroke_set_colors() -> None:
    class FakeStrokes:
        colors = torch.tensor([[[0, 0, 0, 0.5], [0, 0, 0, 0.0]]])

    out = OpacitySparsityLoss(power=0.5)(_images(1, 0), _images(1, 0), LossContext(strokes=FakeStrokes()))
    expected = (math.sqrt(0.5 + 1e-6) - math.sqrt(1e-6)) / 2  # shifted power, exactly 0 at 0
    torch.testing.assert_close(out["sparsity"], torch.tensor([expected]))
    alpha = torch.zeros(1, 3, requires_grad=True)
    OpacitySparsityLoss(power=0.5)(_images(1, 0), _images(1, 0), LossContext(strokes=alpha))[
        "sparsity"
    ].backward()
    assert alpha.grad is not None and torch.isfinite(alpha.grad).all()
    with pytest.raises(InputError, match="strokes"):
        OpacitySparsityLoss()(_images(1, 0), _images(1, 0))


# --- models: sharing, laziness, freezing --------------------------------------------------------


def test_losses_share_one_model_and_never_train_it(resnet: nn.Module) -> None:
    conv, sem = CLIPConvLoss(resnet), CLIPSemanticLoss(resnet)
    assert conv.model.get(torch.device("cpu")) is sem.model.get(torch.device("cpu")) is resnet
    assert not any(p.requires_grad for p in resnet.parameters()) and not resnet.training
    assert not any("layer1" in k for k in (conv + sem).state_dict())  # no CLIP weights in the loss state


def test_model_given_by_path_is_loaded_lazily_once() -> None:
    path = tiny_clip_file("resnet")
    loss = CLIPConvLoss(path, arch="resnet", fc_weight=0.0)
    assert not loss.model.loaded  # nothing loaded in __init__
    sketch = _images(1, 0)
    loss(sketch, sketch, LossContext(mode="eval"))
    first = loss.model.get(torch.device("cpu"))
    loss(sketch, sketch, LossContext(mode="eval"))
    assert loss.model.loaded and loss.model.get(torch.device("cpu")) is first
    assert not any(p.requires_grad for p in first.parameters())


def test_user_model_is_frozen_on_adoption(tiny_resnet: nn.Module) -> None:
    model = copy.deepcopy(tiny_resnet).train()
    model.requires_grad_(True)
    CLIPConvLoss(model)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


# --- composition --------------------------------------------------------------------------------


def test_weighted_sum_reports_each_term_by_name() -> None:
    a, b = PixelL2Loss(), UserAbsLoss()
    sketch, target = _images(1, 50), _images(1, 51)
    pa, pb = a(sketch, target)["pixel_l2"], b(sketch, target)["user_abs"]
    both = a + 0.5 * b
    assert isinstance(both, ComposedLoss) and both.term_names() == ["pixel_l2", "user_abs"]
    out = both(sketch, target)
    torch.testing.assert_close(out["pixel_l2"], pa)
    torch.testing.assert_close(out["user_abs"], 0.5 * pb)
    torch.testing.assert_close(both.total(sketch, target), pa + 0.5 * pb)
    nested = 2.0 * (a + 0.5 * b)
    torch.testing.assert_close(nested(sketch, target)["user_abs"], pb)
    assert sum([a, b]).term_names() == ["pixel_l2", "user_abs"]  # type: ignore[union-attr]


def test_schedules_switch_terms_on_and_off() -> None:
    a, b = PixelL2Loss(), UserAbsLoss()
    loss = a + (3.0 * b).after(10)
    sketch, target = _images(1, 52), _images(1, 53)
    before = loss(sketch, target, LossContext(iteration=9))
    after = loss(sketch, target, LossContext(iteration=10))
    assert float(before["user_abs"]) == 0.0 and sorted(before) == sorted(after)
    torch.testing.assert_close(after["user_abs"], 3.0 * b(sketch, target)["user_abs"])
    window = ComposedLoss([Term(b, start=2, stop=4, weight=lambda it: float(it))])
    values = [float(window(sketch, target, LossContext(iteration=i))["user_abs"]) for i in range(6)]
    pb = float(b(sketch, target)["user_abs"])
    assert values == pytest.approx([0, 0, 2 * pb, 3 * pb, 0, 0])
    assert b.between(5, 7).terms[0].start == 5 and b.between(5, 7).terms[0].stop == 7


def test_schedules_are_read_at_the_schedule_iteration() -> None:
    seen: list[int] = []

    class Spy(SketchLoss):
        name = "spy"

        def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
            seen.append(context.iteration)
            return sketch.mean(dim=(1, 2, 3))

    loss = PixelL2Loss() + (2.0 * Spy()).after(10)
    sketch, target = _images(1, 54), _images(1, 55)
    assert float(loss(sketch, target, LossContext(iteration=3))["spy"]) == 0.0
    out = loss(sketch, target, LossContext(iteration=3, schedule_iteration=10))
    torch.testing.assert_close(out["spy"], 2.0 * sketch.mean(dim=(1, 2, 3)))
    assert seen == [3]  # the parts still see the current step
    assert LossContext(iteration=4).scheduled_at == 4
    with pytest.raises(InputError, match="schedule_iteration"):
        LossContext(schedule_iteration=-1)


def test_inactive_terms_are_not_computed() -> None:
    class Exploding(SketchLoss):
        name = "boom"

        def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
            raise AssertionError("computed while inactive")

    loss = PixelL2Loss() + Exploding().after(100)
    out = loss(_images(1, 0), _images(1, 1), LossContext(iteration=5))
    assert float(out["boom"]) == 0.0


def test_name_clash_needs_a_prefix() -> None:
    with pytest.raises(InputError, match="prefix"):
        PixelL2Loss() + PixelL2Loss()
    loss = ComposedLoss([PixelL2Loss(), Term(PixelL2Loss(), weight=0.5, prefix="half_")])
    out = loss(_images(1, 0), _images(1, 1))
    torch.testing.assert_close(out["half_pixel_l2"], 0.5 * out["pixel_l2"])


def test_reference_objective_with_optional_semantic_term(resnet: nn.Module, vit: nn.Module) -> None:
    # METHOD §4: conv + fc terms, and the optional ViT term switched on after start_clip.
    objective = CLIPConvLoss(resnet, num_views=1) + CLIPSemanticLoss(vit, num_views=1, weight=0.5).after(3)
    sketch, target = _images(1, 60), _images(1, 61)
    early = objective(sketch, target, LossContext(iteration=0, mode="eval"))
    late = objective(sketch, target, LossContext(iteration=3, mode="eval"))
    assert sorted(early) == ["clip_semantic", "conv_layer2", "conv_layer3", "fc"]
    assert float(early["clip_semantic"]) == 0.0 and float(late["clip_semantic"]) > 0.0
    torch.testing.assert_close(early["conv_layer2"], late["conv_layer2"])


# --- errors -------------------------------------------------------------------------------------


def test_bad_inputs_raise_input_error(resnet: nn.Module) -> None:
    loss = PixelL2Loss()
    with pytest.raises(InputError, match="sketch"):
        loss(torch.rand(3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="target batch"):
        loss(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))
    with pytest.raises(InputError, match="size"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 9, 8))
    with pytest.raises(InputError, match="mask"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), LossContext(mask=torch.ones(1, 8, 8)))
    with pytest.raises(InputError, match="mode"):
        LossContext(mode="test")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown loss"):
        create_loss("no_such_loss")
    with pytest.raises(InputError, match="empty"):
        CLIPConvLoss(resnet, layer_weights=(0, 0, 0, 0, 0), fc_weight=0.0)
    with pytest.raises(InputError, match="layer_weights"):
        CLIPConvLoss(resnet, layer_weights=(1, 1))


def test_vit_block_out_of_range_is_reported(vit: nn.Module) -> None:
    loss = CLIPConvLoss(vit, layer_weights={"block99": 1.0})
    with pytest.raises(InputError, match="blocks"):
        loss(_images(1, 0), _images(1, 0), LossContext(mode="eval"))


def test_wrong_terms_from_a_subclass_are_reported() -> None:
    class Wrong(SketchLoss):
        name = "wrong"

        def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> dict[str, Tensor]:
            return {"other": sketch.mean(dim=(1, 2, 3))}

    with pytest.raises(ClipassoError, match="term_names"):
        Wrong()(_images(1, 0), _images(1, 0))


# --- EdgeLoss on a synthetic circle -------------------------------------------------------------


def _ring(cy: float, cx: float, radius: float, size: int = 96) -> Tensor:
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    d = ((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2).sqrt()
    ink = (2.0 - (d - radius).abs()).clamp(0, 1)  # a ~3 px ring
    return (1 - ink).expand(3, -1, -1).unsqueeze(0).contiguous()


def _disk(size: int = 96, radius: float = 25.0) -> Tensor:
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    d = ((yy + 0.5 - size / 2) ** 2 + (xx + 0.5 - size / 2) ** 2).sqrt()
    return (d > radius).float().expand(3, -1, -1).unsqueeze(0).contiguous()


def test_edge_loss_is_zero_for_the_targets_own_edge_drawing() -> None:
    target = _disk()
    ink = 1 - xdog(target)
    outline = F.max_pool2d(ink, 3, 1, 1) + F.max_pool2d(-ink, 3, 1, 1)  # dilation - erosion
    assert 0 < outline.mean() < 0.2  # a thin ring, not the filled disk
    drawing = (1 - outline).expand(-1, 3, -1, -1)  # black outline on white, as a sketch would be
    torch.testing.assert_close(EdgeLoss()(drawing, target)["edge"], torch.zeros(1), rtol=0, atol=1e-7)
    filled = (1 - ink).expand(-1, 3, -1, -1)
    torch.testing.assert_close(
        EdgeLoss(edges="fill")(filled, target)["edge"], torch.zeros(1), rtol=0, atol=1e-7
    )


@pytest.mark.parametrize("shift", [4.0, 8.0, 16.0])
def test_edge_loss_prefers_a_sketch_on_the_outline(shift: float) -> None:
    target = _disk()
    loss = EdgeLoss()
    on = loss(_ring(48, 48, 25), target)["edge"]
    off = loss(_ring(48 + shift, 48 - shift / 2, 25), target)["edge"]
    assert float(on) < float(off)


@pytest.mark.slow
def test_edge_loss_optimised_through_the_rasterizer_follows_the_outline() -> None:
    from clipasso.render import composite, rasterize

    size, radius = 64, 17.0
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    dist = ((yy + 0.5 - size / 2) ** 2 + (xx + 0.5 - size / 2) ** 2).sqrt()
    target = (dist > radius).float().expand(3, -1, -1).unsqueeze(0).contiguous()
    near = ((dist - radius).abs() < 3).float()

    def on_outline(points: Tensor) -> float:
        ink = 1 - composite(rasterize(points[None], 1.5, (0, 0, 0, 1), size=size))[0, 0]
        return float((ink * near).sum() / ink.sum())

    g = torch.Generator().manual_seed(0)
    start = torch.rand(4, 1, 2, generator=g) * 40 + 12
    points = (start + torch.cumsum((torch.rand(4, 4, 2, generator=g) - 0.5) * 8, dim=1)).requires_grad_(True)
    before = on_outline(points.detach())
    loss, opt = EdgeLoss(), torch.optim.Adam([points], lr=1.0)
    for _ in range(60):
        image = composite(rasterize(points[None], 1.5, (0, 0, 0, 1), size=size))
        value = loss(image, target)["edge"].sum()
        opt.zero_grad()
        value.backward()
        opt.step()
    after = on_outline(points.detach())
    assert after > 0.8 and after > before + 0.3, (before, after)


# --- CLIPViTLayerLoss: fidelity by ViT block (CLIPascene) ----------------------------------------


def test_vit_tokens_by_block_name(vit: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    images = normalize(_images(2, 70))
    taps = vit_tokens(vit, images, ["block0", 2])
    full = vit_features(vit, images, attention=False)
    assert sorted(taps) == ["block0", "block2"]
    for name, i in (("block0", 0), ("block2", 2)):
        assert taps[name].shape == (2, 50, 128)  # [B, 1 + 7 * 7 patches, width]
        torch.testing.assert_close(taps[name], full.tokens[i], rtol=0, atol=0)
    calls: list[int] = []  # the pass stops after the deepest block asked for
    for i, block in enumerate(vit.visual.transformer.resblocks):
        monkeypatch.setattr(
            block, "forward", lambda x, b=block, i=i: calls.append(i) or type(b).forward(b, x)
        )
    vit_tokens(vit, images[:1], ["block1"])
    assert calls == [0, 1]
    assert vit_block_index("block11") == 11 and vit_block_index(3) == 3
    for bad in ("layer3", "block", "block-1", -1, True, 2.0):
        with pytest.raises(InputError, match="block"):
            vit_block_index(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="3 blocks"):
        vit_tokens(vit, images, ["block3"])


def _vit_layer_by_hand(
    model: nn.Module, xs: Tensor, ys: Tensor, weights: dict[int, float], distance: str, cls: bool
) -> dict[str, Tensor]:
    """xs, ys: [V, 3, 224, 224] normalised views of ONE sketch and its target; plain mean over views."""
    fx, fy = vit_features(model, xs, attention=False), vit_features(model, ys, attention=False)
    first = 0 if cls else 1
    out = {}
    for i, w in weights.items():
        x, y = fx.tokens[i][:, first:], fy.tokens[i][:, first:]  # [V, T, D]
        if distance == "l2":
            per_token = ((x - y) ** 2).mean(dim=-1)
        else:
            per_token = 1 - F.cosine_similarity(x, y, dim=-1)
        out[f"vit_block{i}"] = w * per_token.mean()
    return out


@pytest.mark.parametrize("distance", ["l2", "cos"])
@pytest.mark.parametrize("cls", [False, True])
def test_clip_vit_layer_equals_hand_computation(distance: str, cls: bool, vit: nn.Module) -> None:
    sketch, target = _images(2, 71), _images(1, 72)
    loss = CLIPViTLayerLoss(vit, layers={"block0": 0.5, "block2": 2.0}, distance=distance, class_token=cls)  # type: ignore[arg-type]
    assert loss.term_names() == ["vit_block0", "vit_block2"]
    ev = loss(sketch, target, LossContext(mode="eval"))
    for b in range(2):
        ref = _vit_layer_by_hand(
            vit, normalize(sketch[b : b + 1]), normalize(target), {0: 0.5, 2: 2.0}, distance, cls
        )
        for key, value in ref.items():
            assert float(value) > 1e-4, key
            torch.testing.assert_close(ev[key][b], value, rtol=1e-5, atol=1e-7, msg=key)
    tr = loss(sketch[:1], target, LossContext(generators=gens(5)))  # view 0 + 4 random views, shared
    xs, ys = ReferenceViews(4)(sketch[:1], target, generators=gens(5))
    assert ys is not None and xs.shape[1] == 5
    ref = _vit_layer_by_hand(vit, xs[0], ys[0], {0: 0.5, 2: 2.0}, distance, cls)
    for key, value in ref.items():
        torch.testing.assert_close(tr[key][0], value, rtol=1e-5, atol=1e-7, msg=key)


def test_clip_vit_layer_class_token_and_views_are_options(vit: nn.Module) -> None:
    sketch, target = _images(1, 73), _images(1, 74)
    ctx = LossContext(mode="eval")
    patches = CLIPViTLayerLoss(vit, layers=1)(sketch, target, ctx)["vit_block1"]
    every = CLIPViTLayerLoss(vit, layers=1, class_token=True)(sketch, target, ctx)["vit_block1"]
    fx = vit_tokens(vit, normalize(sketch), [1])["block1"]
    fy = vit_tokens(vit, normalize(target), [1])["block1"]
    cls_only = ((fx[:, 0] - fy[:, 0]) ** 2).mean()
    torch.testing.assert_close(every, (49 * patches + cls_only) / 50, rtol=1e-5, atol=1e-8)  # 49 patches + 1
    # identity_weight: view 0 gets w, the random views share 1 - w (as CLIPConvLoss)
    weighted = CLIPViTLayerLoss(vit, layers=1, num_views=2, identity_weight=0.2)
    out = weighted(sketch, target, LossContext(generators=gens(6)))["vit_block1"]
    xs, ys = ReferenceViews(2)(sketch, target, generators=gens(6))
    assert ys is not None
    per_view = [
        _vit_layer_by_hand(vit, xs[0, v : v + 1], ys[0, v : v + 1], {1: 1.0}, "l2", False) for v in range(3)
    ]
    expected = 0.2 * per_view[0]["vit_block1"] + 0.4 * (per_view[1]["vit_block1"] + per_view[2]["vit_block1"])
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-8)


def test_clip_vit_layer_embedding_term_is_clipassos_fc(vit: nn.Module) -> None:
    sketch, target = _images(1, 75), _images(1, 76)
    out = CLIPViTLayerLoss(vit, layers=2, fc_weight=0.1)(sketch, target, LossContext(mode="eval"))
    assert sorted(out) == ["vit_block2", "vit_fc"]
    with torch.no_grad():
        ref = 0.1 * (
            1 - F.cosine_similarity(vit.encode_image(normalize(sketch)), vit.encode_image(normalize(target)))
        )
    torch.testing.assert_close(out["vit_fc"], ref, rtol=1e-5, atol=1e-8)
    only_fc = CLIPViTLayerLoss(vit, layers={2: 0.0}, fc_weight=0.1)
    assert only_fc.term_names() == ["vit_fc"]


def test_clip_vit_layer_gradcheck_float64(vit: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss's gradient to the sketch equals finite differences, in float64 on a tiny ViT. CLIP's
    LayerNorm runs in float32 whatever its input (a half-precision guard); for the check it runs in
    the input's dtype (torch's own LayerNorm), so the whole chain is float64."""
    monkeypatch.setattr(clip.model.LayerNorm, "forward", nn.LayerNorm.forward)
    model = copy.deepcopy(vit).double()
    g = torch.Generator().manual_seed(0)
    base = _images(1, 77).double()
    patterns = torch.randn(3, 1, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    target = _images(1, 78).double()

    def make_sketch(coef: Tensor) -> Tensor:
        return base + (coef.view(3, 1, 1, 1, 1) * patterns).sum(0) * 0.02  # a 3-parameter family of images

    for ctx_kwargs, distance in ((dict(mode="eval"), "l2"), (dict(), "cos")):
        loss = CLIPViTLayerLoss(model, layers={"block0": 1.0, "block1": 0.5}, distance=distance, num_views=1)  # type: ignore[arg-type]

        def fn(coef: Tensor, loss: SketchLoss = loss, kw: dict[str, Any] = ctx_kwargs) -> Tensor:
            # fresh generators each call: every evaluation sees the same random view
            ctx = LossContext(generators=gens(11), **kw)
            return total_loss(loss(make_sketch(coef), target, ctx))

        coef = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(fn(coef), coef)
        assert grad.abs().min() > 1e-6  # a real gradient, not 0 = 0
        assert torch.autograd.gradcheck(fn, (coef,), eps=1e-6, atol=1e-7, rtol=1e-4)


def test_clip_vit_layer_gradients_reach_the_strokes(vit: nn.Module) -> None:
    from clipasso.render import composite, rasterize

    g = torch.Generator().manual_seed(3)
    points = (torch.rand(2, 4, 4, 2, generator=g) * 160 + 32).requires_grad_(True)
    sketch = composite(rasterize(points, 1.5, (0, 0, 0, 1), size=SIZE))
    loss = CLIPViTLayerLoss(vit, layers=[0, 2])
    out = loss(sketch, _images(1, 79), LossContext(generators=gens(0, 1)))
    total_loss(out).sum().backward()
    assert points.grad is not None and torch.isfinite(points.grad).all()
    assert (points.grad.abs().sum(dim=(2, 3)) > 0).all()  # every stroke of both sketches moves
    assert all(p.grad is None for p in vit.parameters())


def test_clip_vit_layer_options_are_validated(resnet: nn.Module, vit: nn.Module) -> None:
    assert parse_vit_layers(7) == {"block7": 1.0}
    assert parse_vit_layers(["block8", 2]) == {"block2": 1.0, "block8": 1.0}
    assert parse_vit_layers({"block3": 0.5, 1: 0.0}) == {"block3": 0.5}
    for bad, match in (
        ({"block2": -1.0}, ">= 0"),
        ({"block2": float("nan")}, "finite"),
        ([2, "block2"], "twice"),
        ("layer3", "block"),
        (2.5, "layers must be"),
    ):
        with pytest.raises(InputError, match=match):
            CLIPViTLayerLoss(vit, layers=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="empty"):
        CLIPViTLayerLoss(vit, layers={2: 0.0})
    with pytest.raises(InputError, match="distance"):
        CLIPViTLayerLoss(vit, distance="l1")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs a CLIP ViT"):
        CLIPViTLayerLoss(resnet)
    deep = CLIPViTLayerLoss(vit, layers=11)  # ViT-B/32's last block; the tiny ViT has 3
    with pytest.raises(InputError, match=r"3 blocks \(block0..block2\)"):
        deep.load(torch.device("cpu"))
    with pytest.raises(InputError, match="3 blocks"):
        deep(_images(1, 0), _images(1, 0), LossContext(mode="eval"))
    by_name = CLIPViTLayerLoss(tiny_clip_file("resnet"), layers=2)  # a ResNet by path: refused on load
    with pytest.raises(InputError, match="needs a CLIP ViT"):
        by_name.load(torch.device("cpu"))


# --- the text target: tokenised once, embedded once --------------------------------------------


def test_text_target_is_tokenised_once_and_its_embedding_cached(
    vit: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenised: list[list[str]] = []
    real_tokenize = clip.tokenize

    def counting_tokenize(texts: Any, *args: Any, **kwargs: Any) -> Tensor:
        tokenised.append(list(texts))
        return real_tokenize(texts, *args, **kwargs)

    monkeypatch.setattr(clip, "tokenize", counting_tokenize)
    encoded: list[int] = []
    model = copy.deepcopy(vit)
    real_encode = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda t: encoded.append(t.shape[0]) or real_encode(t))
    loss = CLIPSemanticLoss(model, text=["a cat", "a dog"], num_views=1)
    sketch = _images(1, 80)
    first = loss(sketch, sketch, LossContext(mode="eval"))["clip_semantic"]
    for i in range(3):
        loss(sketch, sketch, LossContext(iteration=i, generators=gens(i)))
    again = loss(sketch, sketch, LossContext(mode="eval"))["clip_semantic"]
    assert tokenised == [["a cat", "a dog"]] and encoded == [2]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert loss.text_tokens().shape == (2, 77)
    loss.text_embedding(torch.device("cpu"), torch.float64)  # another dtype: embedded again, not tokenised
    assert len(tokenised) == 1 and encoded == [2, 2]


def test_the_edge_term_computes_a_targets_maps_once_and_the_same() -> None:
    from clipasso.losses import EdgeLoss

    g = torch.Generator().manual_seed(3)
    sketch, target = torch.rand(2, 3, 48, 48, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    loss = EdgeLoss()
    first = loss(sketch, target, LossContext(mode="eval"))["edge"]
    maps = loss.target_maps(target)
    assert loss.target_maps(target.clone()) is maps  # an equal target: the cached maps
    again = loss(sketch, target, LossContext(mode="eval"))["edge"]
    assert torch.equal(first, again) and torch.equal(
        first, EdgeLoss()(sketch, target, LossContext(mode="eval"))["edge"]
    )
    other = target.flip(-1)
    assert loss.target_maps(other) is not maps  # another target: computed afresh
