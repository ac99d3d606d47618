"""Convolution weights reordered once for oneDNN (clipasso.losses.prepack, prepack_weights=...)."""

from __future__ import annotations

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
    needs_onednn,
    run_loss,
    smooth_images,
    tolerances,
)
from clipasso.losses import CLIPConvLoss
from clipasso.losses import prepack as prepack_module
from clipasso.losses.prepack import PackedConv2d, prepack_available, prepack_convolutions
from clipasso.models import visual_of


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return calibrated_resnet()


@needs_onednn
@settings(max_examples=30, deadline=None)
@given(case=CONV_CASES)
def test_packed_convolution_matches_conv2d(case: ConvCase) -> None:
    """Forward and the input gradient equal nn.Conv2d's (to rounding; the same kernels)."""
    dtype = case.dtype
    conv = case.conv()
    packed = PackedConv2d.from_conv(conv)
    x = case.input()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = conv(xa), packed(xb)
    assert yb.shape == ya.shape and yb.dtype == ya.dtype
    torch.testing.assert_close(yb.float(), ya.float(), **tolerances(dtype))
    w = torch.randn(ya.shape, dtype=dtype)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert xa.grad is not None and xb.grad is not None
    torch.testing.assert_close(xb.grad.float(), xa.grad.float(), **tolerances(dtype))
    with torch.no_grad():
        torch.testing.assert_close(packed(x).float(), conv(x).float(), **tolerances(dtype))


@needs_onednn
def test_packs_are_made_once_per_input_shape_and_follow_the_weights() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1).requires_grad_(False)
    packed = PackedConv2d.from_conv(conv)
    assert packed.weight is conv.weight and packed.bias is conv.bias and type(conv) is nn.Conv2d
    x = torch.randn(1, 3, 8, 8)
    packed(x)
    packed(torch.randn(5, 3, 8, 8))  # another batch size: the same pack
    assert len(packed._packs) == 1
    packed(torch.randn(1, 3, 12, 12))
    assert len(packed._packs) == 2
    with torch.no_grad():
        conv.weight.mul_(-1.0)  # in place: the packs are made again
    torch.testing.assert_close(packed(x), conv(x), rtol=1e-5, atol=1e-5)
    assert len(packed._packs) == 1


@needs_onednn
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kernel=st.sampled_from([(1, 1), (3, 3), (3, 1), (1, 5)]),
    pad=st.sampled_from(["same", "none", "over"]),
    bf16=st.booleans(),
    channels_last=st.booleans(),
)
def test_backward_as_a_transposed_forward_convolution(
    seed: int, kernel: tuple[int, int], pad: str, bf16: bool, channels_last: bool
) -> None:
    """Stride 1, no groups: the input gradient is the forward convolution of the output gradient
    with the flipped, transposed weight (packed once); it equals convolution_backward's (the
    pack_backward=False path) to rounding, for every padding from 0 to k - 1; a padding past
    k - 1 takes convolution_backward."""
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    padding = {
        "same": (kernel[0] // 2, kernel[1] // 2),
        "none": (0, 0),
        "over": (kernel[0], kernel[1]),  # past k - 1: not transposable
    }[pad]
    conv = nn.Conv2d(5, 6, kernel, padding=padding).to(dtype).requires_grad_(False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, 10, 9, dtype=dtype).contiguous(memory_format=fmt)
    grads = []
    for transposed in (True, False):
        packed = PackedConv2d.from_conv(conv)
        packed.pack_backward = transposed
        xx = x.clone().requires_grad_(True)
        y = packed(xx)
        (y.float() * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        assert xx.grad is not None and xx.grad.shape == x.shape
        grads.append(xx.grad.float())
        made = any(k[0][0] == "transposed" for k in packed._packs if isinstance(k[0], tuple) and k[0])
        assert made == (transposed and pad != "over")
    torch.testing.assert_close(grads[0], grads[1], **tolerances(dtype))
    xr = x.double().requires_grad_(True)
    yr = torch.nn.functional.conv2d(xr, conv.weight.double(), conv.bias.double(), padding=padding)
    (yr * torch.linspace(-1, 1, yr.numel(), dtype=torch.float64).reshape(yr.shape)).sum().backward()
    assert xr.grad is not None
    torch.testing.assert_close(grads[0].double(), xr.grad, **tolerances(dtype))


def test_fallbacks_where_packing_does_not_apply() -> None:
    """Trainable weights, another dtype, reflect padding: nn.Conv2d's own path (weight gradients too)."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    packed = PackedConv2d.from_conv(conv)
    x = torch.randn(1, 3, 8, 8)
    packed(x).sum().backward()
    assert conv.weight.grad is not None and not packed._packs
    double = PackedConv2d.from_conv(nn.Conv2d(3, 4, 3).double().requires_grad_(False))
    double(x.double())
    reflect = PackedConv2d.from_conv(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect").requires_grad_(False)
    )
    reflect(x)
    assert not double._packs and not reflect._packs


def test_prepack_convolutions_swaps_the_modules(monkeypatch: Any) -> None:
    tower = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1)))
    first = tower[0].weight
    if prepack_available():
        out = prepack_convolutions(tower)
        assert out is tower and type(tower[0]) is PackedConv2d and type(tower[2][0]) is PackedConv2d
        assert tower[0].weight is first
    monkeypatch.setattr(prepack_module, "prepack_available", lambda: False)
    plain = nn.Sequential(nn.Conv2d(3, 4, 1))
    assert type(prepack_convolutions(plain)[0]) is nn.Conv2d


@needs_onednn
@pytest.mark.parametrize("fold", [False, True])
def test_the_loss_runs_its_copy_prepacked(resnet: nn.Module, fold: bool) -> None:
    sketch, target = smooth_images(2, 1), smooth_images(1, 2)
    kw: dict[str, Any] = {"precision": "bf16", "channels_last": True, "fold_batchnorm": fold}
    a, ga = run_loss(CLIPConvLoss(resnet, **kw), sketch, target)
    loss = CLIPConvLoss(resnet, prepack_weights=True, **kw)
    b, gb = run_loss(loss, sketch, target)
    # the same kernels: bit for bit where measured; other CPUs may pick other kernels for the two
    # paths, so the bars are bf16 rounding's (folding alone moves this cosine to about 0.987)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=2e-2, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(ga.flatten().double(), gb.flatten().double(), dim=0)
    assert float(cos) > 0.97
    tower = visual_of(resnet)
    copy = loss._tower_copy(tower, True)
    assert any(type(m) is PackedConv2d for m in copy.modules())
    assert not any(type(m) is PackedConv2d for m in tower.modules())  # the user's tower is untouched
    loss.prepack_weights = False  # switched off: an unpacked copy again
    again = loss._tower_copy(tower, True)
    assert again is not copy and not any(type(m) is PackedConv2d for m in again.modules())


def test_an_fp32_pass_without_a_copy_is_left_alone(resnet: nn.Module) -> None:
    loss = CLIPConvLoss(resnet, precision="fp32", prepack_weights=True)
    tower = visual_of(resnet)
    assert loss._tower_copy(tower, False) is tower


@needs_onednn
def test_a_prepacked_loss_can_be_copied_and_pickled(resnet: nn.Module) -> None:
    """oneDNN's packs are opaque tensors: copies and pickles leave them out and make their own."""
    import copy
    import io

    sketch, target = smooth_images(1, 1), smooth_images(1, 2)
    kw: dict[str, Any] = {"precision": "bf16", "channels_last": True, "prepack_weights": True}
    loss = CLIPConvLoss(resnet, fold_batchnorm=True, **kw)
    a, ga = run_loss(loss, sketch, target)
    twin = copy.deepcopy(loss)
    b, gb = run_loss(twin, sketch, target)
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(ga, gb)
    buffer = io.BytesIO()
    torch.save(loss, buffer)
    assert buffer.tell() > 0
