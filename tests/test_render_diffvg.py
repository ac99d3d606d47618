"""Tests of the diffvg adapter; they skip unless the real (compiled) diffvg is installed."""

from __future__ import annotations

import pytest
import torch

from clipasso.render import available_backends, composite, rasterize

pytestmark = [
    pytest.mark.diffvg,
    pytest.mark.skipif("diffvg" not in available_backends(), reason="the real diffvg is not installed"),
]


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    p0 = torch.rand(2, 8, 1, 2, generator=g) * 48 + 8
    # random walks (never collinear evenly spaced control points: diffvg draws only their caps)
    pts = torch.cat([p0, p0 + (4 * (torch.rand(2, 8, 3, 2, generator=g) - 0.5)).cumsum(2) * 2], 2)
    return pts, torch.full((2, 8), 1.5), torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(2, 8, 4)


def test_diffvg_shapes_and_agreement_with_torch() -> None:
    pts, w, c = _scene()
    a = rasterize(pts, w, c, size=64, backend="diffvg")
    b = rasterize(pts, w, c, size=64, backend="torch")
    assert a.shape == b.shape == (2, 4, 64, 64)
    inked = (a[:, 3] > 0) | (b[:, 3] > 0)
    # 2×2 sampling is noisy; the mean difference over inked pixels stays small
    assert float((composite(a) - composite(b)).abs().mean(1)[inked].mean()) < 0.1


def test_diffvg_gradients_flow() -> None:
    pts, w, c = _scene()
    pts = pts.clone().requires_grad_()
    composite(rasterize(pts, w, c, size=64, backend="diffvg")).mean().backward()
    assert pts.grad is not None and float(pts.grad.abs().sum()) > 0


def test_diffvg_batch_equals_items() -> None:
    pts, w, c = _scene()
    batch = rasterize(pts, w, c, size=64, backend="diffvg")
    for i in range(2):
        assert torch.allclose(batch[i : i + 1], rasterize(pts[i], w[i], c[i], size=64, backend="diffvg"))
