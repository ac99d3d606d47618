"""Shared inputs of the CLIP speed-option tests: smooth random images, a tiny ResNet CLIP whose
BatchNorm statistics were recalibrated on them, one training-loss call with its input gradient, and
the frozen convolutions (with an input) that the packed-convolution tests draw."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from clipasso.losses import CLIPConvLoss, LossContext
from clipasso.losses.prepack import prepack_available
from clipasso.testing import recalibrate_batchnorm, tiny_clip


def smooth_images(batch: int, seed: int) -> Tensor:
    """``[batch, 3, 224, 224]`` images upsampled from 28 px noise (deterministic in ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, 28, 28, generator=g)
    return torch.nn.functional.interpolate(base, size=224, mode="bilinear", align_corners=False)


def calibrated_resnet() -> nn.Module:
    """A new tiny ResNet CLIP of seed 3 with its BatchNorm recalibrated on 8 smooth images."""
    return recalibrate_batchnorm(tiny_clip("resnet", seed=3), smooth_images(8, 99))


def run_loss(loss: CLIPConvLoss, sketch: Tensor, target: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """The loss's terms of ``sketch`` (train mode, one seeded generator per sketch) and the input
    gradient of their sum."""
    x = sketch.clone().requires_grad_(True)
    gens = [torch.Generator().manual_seed(5 + i) for i in range(sketch.shape[0])]
    terms = loss(x, target, LossContext(generators=gens))
    torch.stack(list(terms.values())).sum().backward()
    assert x.grad is not None
    return {k: v.detach() for k, v in terms.items()}, x.grad


@dataclass(frozen=True)
class ConvCase:
    """One frozen 4 → 8 channel convolution and its input ``[2, 4, 11, 11]`` (see :data:`CONV_CASES`)."""

    seed: int
    kernel: int
    stride: int
    groups: int
    bias: bool
    bf16: bool
    channels_last: bool

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32

    def conv(self) -> nn.Conv2d:
        torch.manual_seed(self.seed)
        k = self.kernel
        conv = nn.Conv2d(4, 8, k, stride=self.stride, padding=k // 2, bias=self.bias, groups=self.groups)
        return conv.to(self.dtype).requires_grad_(False)

    def input(self) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        g = torch.Generator().manual_seed(self.seed + 1)
        return torch.randn(2, 4, 11, 11, generator=g).to(self.dtype).contiguous(memory_format=fmt)


#: Kernel sizes 1 and 3, strides 1 and 2, 1 or 2 groups, with and without bias, fp32 and bf16,
#: contiguous and channels-last inputs.
CONV_CASES = st.builds(
    ConvCase,
    seed=st.integers(0, 2**16),
    kernel=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    bf16=st.booleans(),
    channels_last=st.booleans(),
)


#: Skips a test where PyTorch lacks oneDNN's prepacked-weight ops.
needs_onednn = pytest.mark.skipif(not prepack_available(), reason="this PyTorch has no oneDNN prepacked ops")


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    """``assert_close`` bars for rounding in ``dtype`` (bf16's or fp32's)."""
    return {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-5}


def cosine(a: Tensor, b: Tensor) -> float:
    """The cosine of two tensors, flattened, in float64."""
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))
