"""LossContext.mask as a soft weight inside the losses (clipasso.losses.masking)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clipasso import Sketcher
from clipasso.augment import ReferenceViews
from clipasso.errors import InputError
from clipasso.losses import CLIPConvLoss, CLIPViTLayerLoss, EdgeLoss, LossContext
from clipasso.losses.clip_conv import feature_distance
from clipasso.losses.masking import (
    MaskWeighting,
    composite_target,
    pool_weights,
    weighted_feature_distance,
    weighted_token_distance,
)
from clipasso.losses.pixel import masked_mean


@pytest.mark.parametrize("distance", ["l2", "l1", "cos"])
def test_unit_weights_give_the_unweighted_distance(distance: str) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 2, 5, 6, 6, generator=g), torch.randn(1, 2, 5, 6, 6, generator=g)
    ones = torch.ones(1, 2, 1, 12, 12)
    got = weighted_feature_distance(x, y, ones, distance)
    assert torch.allclose(got, feature_distance(x, y, distance, 2), atol=1e-6)
    vw = torch.tensor([0.2, 0.8])
    assert torch.allclose(
        weighted_feature_distance(x, y, ones, distance, view_weights=vw),
        feature_distance(x, y, distance, 2, vw),
        atol=1e-6,
    )


def test_weighted_distance_by_hand() -> None:
    # one sketch, one view, one channel, a 2x2 map; the weights given at 4x4 pool to [[1, 0], [0.5, 0]]
    x = torch.tensor([[[[[1.0, 2.0], [3.0, 4.0]]]]])
    y = torch.zeros_like(x)
    w = torch.zeros(1, 1, 1, 4, 4)
    w[..., :2, :2] = 1.0
    w[..., 2:, :2] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.equal(pool_weights(w, (2, 2))[0, 0, 0], torch.tensor([[1.0, 0.0], [0.5, 0.0]]))
    got = weighted_feature_distance(x, y, w, "l2")
    assert torch.allclose(got, torch.tensor([(1.0 * 1 + 0.5 * 9) / 1.5]))


def test_token_distance_weights_patches_and_keeps_the_class_token() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 5, 8, generator=g), torch.randn(2, 3, 5, 8, generator=g)  # class + 2x2 patches
    ones = torch.ones(2, 3, 1, 8, 8)
    for cls in (True, False):
        xs, ys = (x, y) if cls else (x[:, :, 1:], y[:, :, 1:])
        got = weighted_token_distance(xs, ys, ones, "l2", class_token=cls)
        assert torch.allclose(got, feature_distance(xs, ys, "l2", 3), atol=1e-6)
    w = torch.zeros(1, 3, 1, 8, 8)
    w[..., :4, :4] = 1.0  # only the top-left patch
    got = weighted_token_distance(x[:, :, 1:], y[:, :, 1:], w, "l2", class_token=False)
    assert torch.allclose(got, ((x[:, :, 1] - y[:, :, 1]) ** 2).mean(-1).mean(-1))


def test_weighted_distance_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, 3, 4, 4, generator=g, dtype=torch.float64)
    w = torch.rand(1, 2, 1, 8, 8, generator=g, dtype=torch.float64)
    for d in ("l2", "l1", "cos"):
        assert torch.autograd.gradcheck(lambda t, d=d: weighted_feature_distance(t, y, w, d), (x,))


@pytest.mark.parametrize("gens", ["list", "one", "none"])
def test_mask_views_replay_the_same_warps(gens: str) -> None:
    """The mask's views are the images' views: an image whose channels ARE the mask is warped alike."""
    aug = ReferenceViews(3, normalize=False, seed=5)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(1, 1, 32, 32, generator=g)
    sketch = torch.rand(2, 3, 32, 32, generator=g)
    generators: object = {
        "list": [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)],
        "one": torch.Generator().manual_seed(9),
        "none": None,
    }[gens]
    ctx = LossContext(mode="train", generators=generators, mask=mask)  # type: ignore[arg-type]
    masking = MaskWeighting.start("features", ctx, aug)
    _, ys = aug(sketch, mask.expand(1, 3, 32, 32), generators)  # type: ignore[arg-type]
    assert ys is not None
    views = masking.views(sketch)
    assert views.shape[1] == 4
    assert torch.allclose(views, ys[:, :, :1], atol=1e-6)


def test_target_mode_is_the_composited_target(tiny_resnet: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    sketch, target = torch.rand(2, 3, 224, 224, generator=g), torch.rand(1, 3, 224, 224, generator=g)
    w = torch.rand(1, 1, 224, 224, generator=g)
    ctx = LossContext(mode="eval", mask=w)
    a = CLIPConvLoss(tiny_resnet, mask_weighting="target")(sketch, target, ctx)
    b = CLIPConvLoss(tiny_resnet)(sketch, composite_target(target, w), LossContext(mode="eval"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=0.0) for k in a)
    ignored = CLIPConvLoss(tiny_resnet)(sketch, target, ctx)  # the default: the reference, mask ignored
    plain = CLIPConvLoss(tiny_resnet)(sketch, target, LossContext(mode="eval"))
    assert all(torch.equal(ignored[k], plain[k]) for k in plain)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_feature_mode_with_unit_weights_is_the_plain_loss(tiny_resnet: nn.Module, mode: str) -> None:
    g = torch.Generator().manual_seed(4)
    sketch, target = torch.rand(2, 3, 224, 224, generator=g), torch.rand(1, 3, 224, 224, generator=g)

    def ctx(mask: torch.Tensor | None) -> LossContext:
        gens = [torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]
        return LossContext(mode=mode, generators=gens, mask=mask)  # type: ignore[arg-type]

    # no perspective: the views have no padding, so a unit mask's views are all ones (with padding,
    # the mask's views are 0 where the warp leaves the image: those positions do not count)
    loss = CLIPConvLoss(
        tiny_resnet, augment=ReferenceViews(2, distortion_scale=0.0), mask_weighting="features"
    )
    a = loss(sketch, target, ctx(torch.ones(1, 1, 224, 224)))
    b = CLIPConvLoss(tiny_resnet, augment=ReferenceViews(2, distortion_scale=0.0))(sketch, target, ctx(None))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=0.0) for k in b)  # tiny values: relative
    w = torch.zeros(1, 1, 224, 224)
    w[..., 50:170, 50:170] = 1.0
    c = loss(sketch, target, ctx(w))
    assert not torch.allclose(c["conv_layer3"], b["conv_layer3"], rtol=1e-2, atol=0.0)
    assert torch.equal(c["fc"], a["fc"])
    if mode == "train":  # the pool of views is a train-mode thing
        with pytest.raises(InputError, match="target_pool"):
            CLIPConvLoss(tiny_resnet, target_pool=4, mask_weighting="both")(sketch, target, ctx(w))


def test_vit_layer_loss_feature_mode(tiny_vit: nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    sketch, target = torch.rand(1, 3, 224, 224, generator=g), torch.rand(1, 3, 224, 224, generator=g)
    ones = LossContext(mode="eval", mask=torch.ones(1, 1, 224, 224))
    a = CLIPViTLayerLoss(tiny_vit, layers=1, mask_weighting="features")(sketch, target, ones)
    b = CLIPViTLayerLoss(tiny_vit, layers=1)(sketch, target, LossContext(mode="eval"))
    assert torch.allclose(a["vit_block1"], b["vit_block1"], rtol=1e-4, atol=0.0)
    half = torch.zeros(1, 1, 224, 224)
    half[..., :, :112] = 1.0
    c = CLIPViTLayerLoss(tiny_vit, layers=1, mask_weighting="both")(
        sketch, target, LossContext(mode="eval", mask=half)
    )
    assert not torch.allclose(c["vit_block1"], b["vit_block1"], rtol=1e-2, atol=0.0)


def test_edge_loss_modes() -> None:
    target = torch.ones(1, 3, 48, 48)
    target[..., 8:24, 8:24] = 0.0  # an object
    target[..., 30:44, 30:44] = 0.0  # background clutter
    sketch = torch.ones(2, 3, 48, 48)
    sketch[1, :, 28:46, 37] = 0.0  # a stroke on the clutter
    w = torch.zeros(1, 1, 48, 48)
    w[..., 4:28, 4:28] = 1.0
    ctx = LossContext(mode="eval", mask=w)
    loss = EdgeLoss(sigmas=(0.0, 2.0))
    # "features" (the default) is what the edge term always did with a mask
    ink = loss.edge_ink(target)
    from clipasso.xdog import gaussian_blur, rgb_to_grey

    def by_hand(ink_t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s = 1.0 - rgb_to_grey(sketch)
        total = 0.5 * masked_mean((s - ink_t) ** 2, mask)
        return total + 0.5 * masked_mean((gaussian_blur(s, 2.0) - gaussian_blur(ink_t, 2.0)) ** 2, mask)

    assert torch.allclose(loss(sketch, target, ctx)["edge"], by_hand(ink, w))
    target_mode = EdgeLoss(sigmas=(0.0, 2.0), mask_weighting="target")(sketch, target, ctx)["edge"]
    assert torch.allclose(target_mode, by_hand(loss.edge_ink(composite_target(target, w)), None))
    # a stroke on the clutter: free when only the errors are weighted, a cost when the target is
    free = loss(sketch, target, ctx)["edge"]
    assert float(free[1] - free[0]) == pytest.approx(0.0, abs=1e-7) and float(target_mode[1]) > float(
        target_mode[0]
    )


def test_the_sketcher_passes_the_weighting_in_weight_mode() -> None:
    for background, expect in (("keep", "features"), ("weight", "both")):
        sk = Sketcher(loss="edges", background=background, mask_weighting="both", device="cpu")
        assert isinstance(sk.loss, EdgeLoss) and sk.loss.mask_weighting == expect
    with pytest.raises(InputError, match="mask_weighting"):
        Sketcher(mask_weighting="all")
    with pytest.raises(InputError, match="mask_weighting"):
        EdgeLoss(mask_weighting="all")
