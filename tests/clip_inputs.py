"""Shared inputs of the CLIP speed-option tests: smooth random images, a tiny ResNet CLIP whose
BatchNorm statistics were recalibrated on them, and one training-loss call with its input gradient."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipasso.losses import CLIPConvLoss, LossContext
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
