"""BatchNorm folded into the convolutions (clipasso.losses.folding, CLIPConvLoss(fold_batchnorm=...))."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from clip_inputs import calibrated_resnet, run_loss, smooth_images
from clipasso import SketchConfig, Sketcher
from clipasso.cli import main
from clipasso.losses import CLIPConvLoss
from clipasso.losses.folding import FoldedTower, batchnorm_pairs, fold_batchnorm
from clipasso.models import visual_of
from clipasso.settings import RunSettings
from clipasso.testing import tiny_clip


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return calibrated_resnet()


def _random_stats(bn: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        c = bn.num_features
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=bn.running_mean.dtype))  # type: ignore[union-attr]
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=bn.running_var.dtype) * 2 + 0.1)  # type: ignore[union-attr]
        bn.weight.copy_(torch.randn(c, generator=g, dtype=bn.weight.dtype))
        bn.bias.copy_(torch.randn(c, generator=g, dtype=bn.bias.dtype))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kernel=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    bias=st.booleans(),
    groups=st.sampled_from([1, 2]),
)
def test_folding_is_exact_in_float64(seed: int, kernel: int, stride: int, bias: bool, groups: int) -> None:
    """bn(conv(x)) and the folded conv agree to float64 rounding, outputs and input gradients."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(4, 6, kernel, stride=stride, padding=kernel // 2, bias=bias, groups=groups),
        nn.BatchNorm2d(6),
        nn.ReLU(),
    ).double()
    _random_stats(net[1], g)
    net.eval().requires_grad_(False)
    folded = fold_batchnorm(net)
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    x = torch.randn(2, 4, 9, 9, generator=g, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = net(xa), folded(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-10, atol=1e-10)
    w = torch.randn(ya.shape, generator=g, dtype=torch.float64)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-10)
    assert isinstance(net[1], nn.BatchNorm2d) and net[0].weight.dtype == torch.float64  # untouched


def test_every_batchnorm_of_a_clip_resnet_folds(resnet: nn.Module) -> None:
    tower = visual_of(resnet)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in tower.modules())
    assert len(batchnorm_pairs(tower)) == norms > 0
    folded = fold_batchnorm(tower, torch.bfloat16)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.dtype == torch.bfloat16 and m.bias is not None for m in convs)
    assert all(not p.requires_grad for p in folded.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in tower.modules())  # the tower is untouched
    # what does not fold is shared, not copied (fp32: the attention pool's weights)
    pool, pool_copy = tower.attnpool, folded.attnpool  # type: ignore[union-attr]
    assert fold_batchnorm(tower).attnpool.q_proj.weight is pool.q_proj.weight  # type: ignore[union-attr]
    assert pool_copy.positional_embedding is pool.positional_embedding


def test_a_training_batchnorm_does_not_fold() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert batchnorm_pairs(net) == []  # training mode: batch statistics, nothing to fold
    assert FoldedTower().get(net.requires_grad_(False)) is net
    assert batchnorm_pairs(net.eval()) == [("", "0", "1")]
    assert FoldedTower().get(net.requires_grad_(True)) is net  # trainable weights: left as they are


def test_the_copy_is_reused_and_follows_changes(resnet: nn.Module) -> None:
    tower = visual_of(resnet)
    cache = FoldedTower()
    first = cache.get(tower, torch.bfloat16)
    assert cache.get(tower, torch.bfloat16) is first
    assert cache.get(tower, torch.float32) is not first  # another dtype: rebuilt
    again = cache.get(tower, torch.bfloat16)
    bn = next(m for m in tower.modules() if isinstance(m, nn.BatchNorm2d))
    saved = bn.running_var.clone()  # type: ignore[union-attr]
    try:
        with torch.no_grad():
            bn.running_var.mul_(4.0)  # type: ignore[union-attr]  # e.g. a BatchNorm recalibration in place
        rebuilt = cache.get(tower, torch.bfloat16)
        assert rebuilt is not again
        conv = next(m for m in rebuilt.modules() if isinstance(m, nn.Conv2d))
        old = next(m for m in again.modules() if isinstance(m, nn.Conv2d))
        torch.testing.assert_close(conv.weight.float(), old.weight.float() / 2, rtol=1e-2, atol=1e-6)
    finally:
        with torch.no_grad():
            bn.running_var.copy_(saved)  # type: ignore[union-attr]


class _Misnamed(nn.Module):
    """``conv1``/``bn1`` attributes, but bn1 runs BEFORE conv1: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.bn1(x))


def _relative(tower: nn.Module, folded: nn.Module, dtype: torch.dtype) -> float:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    want, got = tower(x), folded(x)
    return float((got - want).norm() / want.norm())


def test_a_copy_that_fails_its_check_is_not_used() -> None:
    net = _Misnamed()
    _random_stats(net.bn1, torch.Generator().manual_seed(2))
    net.eval().requires_grad_(False)
    assert batchnorm_pairs(net) == [("", "conv1", "bn1")]  # the names alone would fold it
    cache = FoldedTower(check=_relative)
    with pytest.warns(RuntimeWarning, match="differs from the tower"):
        assert cache.get(net) is net
    assert cache.checked is not None and cache.checked > 0.05
    good = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))
    _random_stats(good[1], torch.Generator().manual_seed(3))
    good.eval().requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FoldedTower(check=_relative).get(good) is not good


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_fp32_folding_gives_the_same_loss_and_gradient(resnet: nn.Module) -> None:
    sketch, target = smooth_images(2, 1), smooth_images(1, 2)
    a, ga = run_loss(CLIPConvLoss(resnet, precision="fp32", channels_last=True), sketch, target)
    folded = CLIPConvLoss(resnet, precision="fp32", channels_last=True, fold_batchnorm=True)
    b, gb = run_loss(folded, sketch, target)
    assert folded.fixed >= {"fold_batchnorm"} and folded._folded.checked is not None
    assert folded._folded.checked < 1e-5  # the probe: fp32 rounding only
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
    assert _cos(ga, gb) > 0.9999 and not torch.equal(ga, gb)  # the same function, other rounding


def test_bf16_folding_is_as_close_to_fp32_as_the_unfolded_bf16_pass(resnet: nn.Module) -> None:
    sketch, target = smooth_images(2, 1), smooth_images(1, 2)
    ref, g32 = run_loss(CLIPConvLoss(resnet, precision="fp32", channels_last=True), sketch, target)
    plain, g_plain = run_loss(CLIPConvLoss(resnet, precision="bf16", channels_last=True), sketch, target)
    folded = CLIPConvLoss(resnet, precision="bf16", channels_last=True, fold_batchnorm=True)
    fold, g_fold = run_loss(folded, sketch, target)
    assert folded._folded.checked is not None and folded._folded.checked < 0.05
    for k in ref:
        err_plain = float((plain[k] - ref[k]).abs().max() / ref[k].abs().max())
        err_fold = float((fold[k] - ref[k]).abs().max() / ref[k].abs().max())
        assert err_fold < max(3 * err_plain, 0.02), (k, err_fold, err_plain)
    # the tiny model's bf16 gradients are noisy (here: 0.967 unfolded, 0.983 folded against fp32),
    # so the bar is relative to the unfolded pass, plus an absolute one that a wrong fold would miss
    assert _cos(g_fold, g32) >= 0.9
    assert _cos(g_fold, g32) > _cos(g_plain, g32) - 0.02


def test_folding_leaves_vit_towers_alone() -> None:
    vit = tiny_clip("vit", seed=4)
    sketch, target = smooth_images(1, 1), smooth_images(1, 2)
    layers = (0.0, 1.0, 1.0)
    a, ga = run_loss(CLIPConvLoss(vit, layer_weights=layers, precision="fp32"), sketch, target)
    b, gb = run_loss(
        CLIPConvLoss(vit, layer_weights=layers, precision="fp32", fold_batchnorm=True), sketch, target
    )
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(ga, gb)


@pytest.mark.parametrize("name", ["fold_batchnorm", "prepack_weights", "fuse_activations"])
def test_the_setting_reaches_the_loss_and_the_presets(resnet: nn.Module, name: str) -> None:
    """The tower-copy settings (this file's, tests/test_prepack.py's and tests/test_fusion.py's): off
    by default and in the reference, on in fast, adopted by a loss unless given to its constructor,
    validated."""
    assert getattr(SketchConfig(), name) is False
    assert getattr(SketchConfig.preset("reference"), name) is False
    assert getattr(SketchConfig.preset("fast"), name) is True
    fast = Sketcher("fast", clip_model=resnet).build_loss()
    assert isinstance(fast, CLIPConvLoss) and getattr(fast, name)
    plain = Sketcher(clip_model=resnet).build_loss()
    assert isinstance(plain, CLIPConvLoss) and not getattr(plain, name)
    fixed = CLIPConvLoss(resnet, **{name: False})
    fixed.configure(RunSettings(**{name: True}))
    assert not getattr(fixed, name)  # given to the constructor: stays
    free = CLIPConvLoss(resnet)
    free.configure(RunSettings(**{name: True}))
    assert getattr(free, name) and f"{name}=True" in repr(free)
    with pytest.raises(Exception, match=name):
        SketchConfig(**{name: "yes"})


def test_the_target_cache_does_not_mix_folded_and_unfolded_features(resnet: nn.Module) -> None:
    sketch, target = smooth_images(1, 1), smooth_images(1, 2)
    loss = CLIPConvLoss(resnet, precision="bf16", channels_last=True)
    plain, _ = run_loss(loss, sketch, target)
    loss.fold_batchnorm = True
    switched, _ = run_loss(loss, sketch, target)
    fresh, _ = run_loss(
        CLIPConvLoss(resnet, precision="bf16", channels_last=True, fold_batchnorm=True), sketch, target
    )
    assert all(torch.equal(switched[k], fresh[k]) for k in fresh)
    assert any(not torch.equal(plain[k], fresh[k]) for k in fresh)


@pytest.mark.parametrize("name", ["fold_batchnorm", "prepack_weights", "fuse_activations"])
def test_cli_flag(capsys: pytest.CaptureFixture[str], name: str) -> None:
    flag = name.replace("_", "-")
    assert main(["sketch", "--print-config", f"--{flag}"]) == 0
    assert f"{name} = true" in capsys.readouterr().out
    assert main(["sketch", "--print-config", "--preset", "fast", f"--no-{flag}"]) == 0
    assert f"{name} = false" in capsys.readouterr().out
