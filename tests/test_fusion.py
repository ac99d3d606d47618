"""ReLUs and residual additions fused into the convolutions (clipasso.losses.fusion,
PackedConv2d.post_op / add_relu, fuse_activations=...). The setting's presets, configure and CLI
flag are tested with the other tower-copy settings in tests/test_folding.py."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from clip_inputs import (
    CONV_CASES,
    ConvCase,
    calibrated_resnet,
    cosine,
    needs_onednn,
    run_loss,
    smooth_images,
    tolerances,
)
from clipasso import InputError
from clipasso.losses import CLIPConvLoss
from clipasso.losses.folding import fold_batchnorm
from clipasso.losses.fusion import FusedBottleneck, fuse_activations
from clipasso.losses.prepack import PackedConv2d, prepack_available, prepack_convolutions
from clipasso.models import resnet_features, visual_of


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return calibrated_resnet()


@needs_onednn
@settings(max_examples=25, deadline=None)
@given(case=CONV_CASES)
def test_relu_post_op_is_relu_of_the_convolution(case: ConvCase) -> None:
    """Forward and input gradient of post_op="relu" equal relu(conv(x)), with and without autograd:
    to rounding (bit for bit where measured, since ReLU commutes with rounding; another CPU may
    pick another kernel for a convolution with a post-op)."""
    dtype = case.dtype
    conv = case.conv()
    plain, fused = PackedConv2d.from_conv(conv), PackedConv2d.from_conv(conv)
    fused.post_op = "relu"
    x = case.input()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = torch.relu(plain(xa)), fused(xb)
    assert bool((yb >= 0).all())
    torch.testing.assert_close(yb.float(), ya.float(), **tolerances(dtype))
    w = torch.randn(ya.shape, dtype=dtype)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    torch.testing.assert_close(xb.grad.float(), xa.grad.float(), **tolerances(dtype))
    with torch.no_grad():
        torch.testing.assert_close(fused(x).float(), torch.relu(plain(x)).float(), **tolerances(dtype))


@needs_onednn
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kernel=st.sampled_from([1, 3]),
    bias=st.booleans(),
    bf16=st.booleans(),
    channels_last=st.booleans(),
    other_grad=st.booleans(),
)
def test_add_relu_is_relu_of_the_sum(
    seed: int, kernel: int, bias: bool, bf16: bool, channels_last: bool, other_grad: bool
) -> None:
    """relu(conv(x) + other) and its gradients to x and to other: fp32 to rounding, bf16 to bf16's
    rounding (the fused sum rounds once, the separate one twice)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    conv = ConvCase(seed, kernel, 1, 1, bias, bf16, channels_last).conv()
    packed = PackedConv2d.from_conv(conv)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 4, 9, 9, dtype=dtype).contiguous(memory_format=fmt)
    other = torch.randn(2, 8, 9, 9, dtype=dtype).contiguous(memory_format=fmt)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    oa, ob = other.clone().requires_grad_(other_grad), other.clone().requires_grad_(other_grad)
    ref = torch.relu(conv(xa) + oa)
    got = packed.add_relu(xb, ob)
    assert got.shape == ref.shape and got.dtype == dtype and bool((got >= 0).all())
    torch.testing.assert_close(got.float(), ref.float(), **tolerances(dtype))
    w = torch.randn(ref.shape, dtype=dtype)
    (ref * w).sum().backward()
    (got * w).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    if bf16:  # where a sum rounds to the other side of 0 the ReLU's masks differ
        assert cosine(xa.grad, xb.grad) > 0.99
    else:
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    if other_grad:
        assert oa.grad is not None and ob.grad is not None
        keep = ref.detach().float().abs() > (0.05 if bf16 else 0.0)  # away from the masks' edges
        torch.testing.assert_close((ob.grad * keep).float(), (oa.grad * keep).float(), **tolerances(dtype))
    else:
        assert ob.grad is None
    with torch.no_grad():
        assert torch.equal(packed.add_relu(x, other), got.detach())  # without autograd: the same call


def test_fallbacks_keep_the_relu_and_the_sum() -> None:
    """Where the packed path does not apply (trainable weights, float64), the module still computes
    relu(conv(x)) and relu(conv(x) + other), with the weights' gradients."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    fused = PackedConv2d.from_conv(conv)
    fused.post_op = "relu"
    x = torch.randn(1, 3, 8, 8)
    y = fused(x)
    torch.testing.assert_close(y, torch.relu(conv(x)))
    y.sum().backward()
    assert conv.weight.grad is not None and not fused._packs
    double = PackedConv2d.from_conv(nn.Conv2d(3, 4, 1).double().requires_grad_(False))
    other = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(double.add_relu(x.double(), other), torch.relu(double(x.double()) + other))
    if prepack_available():  # another dtype for the shortcut than the input: the plain path
        plain = PackedConv2d.from_conv(nn.Conv2d(3, 4, 1).requires_grad_(False))
        torch.testing.assert_close(plain.add_relu(x, other), torch.relu(plain(x).double() + other))


def test_post_op_settings_are_checked() -> None:
    conv = PackedConv2d.from_conv(nn.Conv2d(3, 4, 1).requires_grad_(False))
    conv.post_op = "gelu"
    with pytest.raises(ValueError, match="post_op"):
        conv(torch.randn(1, 3, 4, 4))
    conv.post_op = "relu"
    with pytest.raises(ValueError, match="add_relu"):
        conv.add_relu(torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4))


def _folded_packed(resnet: nn.Module, dtype: torch.dtype) -> nn.Module:
    return prepack_convolutions(fold_batchnorm(visual_of(resnet), dtype))


@needs_onednn
@pytest.mark.parametrize("bf16", [False, True])
def test_fused_tower_computes_the_folded_towers_features(resnet: nn.Module, bf16: bool) -> None:
    dtype = torch.bfloat16 if bf16 else torch.float32
    plain = _folded_packed(resnet, dtype)
    fused = fuse_activations(_folded_packed(resnet, dtype))
    blocks = [m for m in fused.modules() if type(m).__name__ == "Bottleneck"]
    assert not blocks and any(type(m) is FusedBottleneck for m in fused.modules())
    assert all(getattr(fused, f"conv{i}").post_op == "relu" for i in (1, 2, 3))
    assert all(type(getattr(fused, f"relu{i}")) is nn.Identity for i in (1, 2, 3))
    assert not any(isinstance(m, (PackedConv2d, FusedBottleneck)) for m in visual_of(resnet).modules())
    images = smooth_images(2, 7).contiguous(memory_format=torch.channels_last)
    names = ["stem", "layer1", "layer2", "layer3", "layer4", "attnpool"]
    xa, xb = images.clone().requires_grad_(True), images.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fa = resnet_features(plain, xa, names)
        fb = resnet_features(fused, xb, names)
    for k in names:
        if bf16:  # one rounding fewer per bottleneck: bf16's scale
            a, b = fa[k].detach().float(), fb[k].detach().float()
            rel = float((b - a).norm() / a.norm())
            assert rel < 0.03, (k, rel)
        else:
            torch.testing.assert_close(fb[k], fa[k], rtol=1e-4, atol=1e-5)
    sum(f.float().square().mean() for f in fa.values()).backward()  # type: ignore[union-attr]
    sum(f.float().square().mean() for f in fb.values()).backward()  # type: ignore[union-attr]
    assert xa.grad is not None and xb.grad is not None
    assert cosine(xa.grad, xb.grad) > (0.97 if bf16 else 0.99999)  # bf16: 0.989 measured
    with torch.no_grad():  # the encoder's own forward (ModifiedResNet.forward) agrees too
        torch.testing.assert_close(
            fused(images.to(dtype)).float(), plain(images.to(dtype)).float(), rtol=5e-2, atol=5e-2
        )


@needs_onednn
def test_only_clip_blocks_with_folded_packed_parts_are_rewritten(resnet: nn.Module) -> None:
    unfolded = prepack_convolutions(copy.deepcopy(visual_of(resnet)))  # BatchNorms still there
    fuse_activations(unfolded)
    assert not any(type(m) is FusedBottleneck for m in unfolded.modules())
    assert all(m.post_op == "none" for m in unfolded.modules() if type(m) is PackedConv2d)
    tower = _folded_packed(resnet, torch.float32)
    block = tower.layer1[0]

    class Other(type(block)):  # type: ignore[misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    block.__class__ = Other  # another forward: not CLIP's bottleneck any more
    fuse_activations(tower)
    assert type(tower.layer1[0]) is Other
    assert all(type(m) is FusedBottleneck for m in tower.layer1[1:])


@needs_onednn
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_loss_runs_its_copy_fused(resnet: nn.Module, precision: str) -> None:
    sketch, target = smooth_images(2, 1), smooth_images(1, 2)
    kw: dict[str, Any] = {"precision": precision, "channels_last": True}
    kw |= {"fold_batchnorm": True, "prepack_weights": True}
    a, ga = run_loss(CLIPConvLoss(resnet, **kw), sketch, target)
    loss = CLIPConvLoss(resnet, fuse_activations=True, **kw)
    b, gb = run_loss(loss, sketch, target)
    bf16 = precision == "bf16"
    for k in a:  # bf16: the terms are about 1, the fc term about 0.01 (measured here: 0.0165 vs 0.0164)
        torch.testing.assert_close(b[k], a[k], rtol=2e-2 if bf16 else 1e-4, atol=1e-3 if bf16 else 1e-6)
    assert cosine(ga, gb) > (0.97 if bf16 else 0.99999)
    if bf16:  # as close to the fp32 gradient as the unfused bf16 pass (0.984 and 0.982 measured)
        _, g32 = run_loss(CLIPConvLoss(resnet, **{**kw, "precision": "fp32"}), sketch, target)
        assert cosine(gb, g32) > cosine(ga, g32) - 0.01 and cosine(gb, g32) > 0.95
    tower = visual_of(resnet)
    fused = loss._tower_copy(tower, bf16)
    assert any(type(m) is FusedBottleneck for m in fused.modules())
    assert loss._tower_copy(tower, bf16) is fused  # made once
    loss.fuse_activations = False  # switched off: an unfused (still prepacked) copy again
    again = loss._tower_copy(tower, bf16)
    assert again is not fused and not any(type(m) is FusedBottleneck for m in again.modules())
    assert any(type(m) is PackedConv2d for m in again.modules())
    unfused, _ = run_loss(loss, sketch, target)
    assert all(torch.equal(unfused[k], a[k]) for k in a)  # the target cache did not mix them


def test_fusion_needs_the_folded_prepacked_copy(resnet: nn.Module) -> None:
    with pytest.raises(InputError, match="fuse_activations needs fold_batchnorm and prepack_weights"):
        CLIPConvLoss(resnet, fuse_activations=True, fold_batchnorm=False)
    with pytest.raises(InputError, match="fuse_activations needs"):
        CLIPConvLoss(resnet, fuse_activations=True, prepack_weights=False)
    alone = CLIPConvLoss(resnet, precision="bf16", fuse_activations=True)  # nothing to fuse: no effect
    tower = visual_of(resnet)
    assert not any(type(m) is FusedBottleneck for m in alone._tower_copy(tower, True).modules())
    assert alone._tower_copy(tower, False) is tower
    vit = CLIPConvLoss(
        "ViT-B/32", arch="vit", fuse_activations=True, fold_batchnorm=True, prepack_weights=True
    )
    assert vit._rewrites() == (False, False)  # ViT towers: nothing to rewrite
    both = {"fold_batchnorm": True, "prepack_weights": True, "fuse_activations": True}
    assert CLIPConvLoss(resnet, **both)._rewrites() == (True, True)
    compiled = CLIPConvLoss(resnet, compile_model=True, **both)  # inductor packs and fuses its own way
    assert compiled._rewrites() == (False, False)


@needs_onednn
def test_a_fused_loss_can_be_copied_and_pickled(resnet: nn.Module) -> None:
    sketch, target = smooth_images(1, 1), smooth_images(1, 2)
    kw: dict[str, Any] = {"precision": "bf16", "channels_last": True}
    loss = CLIPConvLoss(resnet, fold_batchnorm=True, prepack_weights=True, fuse_activations=True, **kw)
    a, ga = run_loss(loss, sketch, target)
    twin = copy.deepcopy(loss)
    buffer = io.BytesIO()
    torch.save(loss, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (twin, loaded):
        b, gb = run_loss(other, sketch, target)
        assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(ga, gb)


@needs_onednn
@pytest.mark.parametrize("bf16", [False, True])
def test_a_bottleneck_runs_as_one_autograd_node(resnet: nn.Module, bf16: bool, monkeypatch: Any) -> None:
    """With autograd, each fused bottleneck is one node (_BottleneckFunction) whose forward pass and
    input gradient are the per-convolution path's: bit for bit through the whole tower with one
    feature tap, and to rounding with two (layer2's output then gets three gradient contributions,
    which the two paths sum in another order)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    tower = fuse_activations(_folded_packed(resnet, dtype))
    blocks = [m for m in tower.modules() if type(m) is FusedBottleneck]
    assert any(b.downsample is not None for b in blocks)
    assert any(type(b.avgpool) is nn.AvgPool2d for b in blocks)
    images = smooth_images(2, 3).contiguous(memory_format=torch.channels_last).to(dtype)

    def run(one_node: bool, taps: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor, set[str]]:
        if not one_node:
            monkeypatch.setattr(FusedBottleneck, "_one_node", lambda self, x: False)
        x = images.clone().requires_grad_(True)
        feats = resnet_features(tower, x, taps)
        nodes = {type(f.grad_fn).__name__ for f in feats.values()}
        weights = {k: torch.linspace(-1, 1, f.numel()).reshape(f.shape) for k, f in feats.items()}
        sum((f.float() * weights[k]).sum() for k, f in feats.items()).backward()  # type: ignore[union-attr]
        monkeypatch.undo()
        assert x.grad is not None
        return {k: f.detach() for k, f in feats.items()}, x.grad, nodes

    fa, ga, nodes_a = run(True, ["layer4"])
    fb, gb, nodes_b = run(False, ["layer4"])
    assert nodes_a == {"_BottleneckFunctionBackward"} and "_BottleneckFunctionBackward" not in nodes_b
    assert torch.equal(fa["layer4"], fb["layer4"]) and torch.equal(ga, gb)
    _, ga, _ = run(True, ["layer2", "layer4"])
    _, gb, _ = run(False, ["layer2", "layer4"])
    if bf16:
        assert cosine(ga, gb) > 0.999
    else:
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)
