"""The DCT-II route of the edge loss: the basis, the blur's eigenvalues, and EdgeLoss spectral == spatial."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipasso.dct import dct_matrix, gaussian_response
from clipasso.errors import InputError
from clipasso.losses import EdgeLoss, LossContext
from clipasso.xdog import gaussian_blur

F64 = torch.float64


@given(n=st.integers(1, 64))
@settings(max_examples=20, deadline=None)
def test_the_dct_matrix_is_orthonormal(n: int) -> None:
    c = dct_matrix(n, dtype=F64)
    torch.testing.assert_close(c @ c.T, torch.eye(n, dtype=F64), rtol=0, atol=1e-12)


@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    sigma=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0, 13.0]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=30, deadline=None)
def test_the_blur_is_diagonal_in_the_dct_basis_for_any_radius(
    h: int, w: int, sigma: float, seed: int
) -> None:
    # radius 4σ + ½ exceeds small images: the blur then wraps through further reflections, and the
    # DCT's periodic symmetric extension is exactly that
    x = torch.rand(2, 1, h, w, dtype=F64, generator=torch.Generator().manual_seed(seed))
    ch, cw = dct_matrix(h, dtype=F64), dct_matrix(w, dtype=F64)
    gh, gw = gaussian_response(sigma, h, dtype=F64), gaussian_response(sigma, w, dtype=F64)
    via_dct = ch.T @ ((gh[:, None] * gw[None, :]) * (ch @ x[:, 0] @ cw.T)) @ cw
    torch.testing.assert_close(via_dct, gaussian_blur(x, sigma)[:, 0], rtol=0, atol=1e-12)


def test_the_response_of_no_blur_is_one_and_bad_arguments_are_refused() -> None:
    assert torch.equal(gaussian_response(0.0, 5), torch.ones(5))
    assert gaussian_response(2.0, 9, dtype=F64)[0].item() == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(InputError, match="sigma"):
        gaussian_response(-1.0, 4)
    with pytest.raises(InputError, match="length"):
        dct_matrix(0)


def _pair(
    batch: int, tb: int, h: int, w: int, seed: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sketch = torch.rand(batch, 3, h, w, generator=g, dtype=F64)
    target = torch.ones(tb, 3, h, w, dtype=F64)
    target[..., h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (
        torch.rand(tb, 3, 1, 1, generator=g, dtype=F64) * 0.3
    )
    target = (target + 0.05 * torch.rand(target.shape, generator=g, dtype=F64)).clamp(0, 1)
    return sketch.to(dtype), target.to(dtype)


@given(
    batch=st.integers(1, 3),
    shared_target=st.booleans(),
    h=st.integers(6, 48),
    w=st.integers(6, 48),
    sigmas=st.lists(st.sampled_from([0.0, 0.7, 1.0, 2.0, 4.0, 8.0]), min_size=1, max_size=4),
    edges=st.sampled_from(["outline", "fill"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_the_spectral_edge_loss_equals_the_spatial_one_in_float64(
    batch: int, shared_target: bool, h: int, w: int, sigmas: list[float], edges: str, seed: int
) -> None:
    sketch, target = _pair(batch, 1 if shared_target else batch, h, w, seed, F64)
    weights = [1.0 + i for i in range(len(sigmas))]
    spatial = EdgeLoss(sigmas=sigmas, scale_weights=weights, edges=edges, method="spatial")  # type: ignore[arg-type]
    spectral = EdgeLoss(sigmas=sigmas, scale_weights=weights, edges=edges, method="spectral")  # type: ignore[arg-type]
    a, b = spatial(sketch, target)["edge"], spectral(sketch, target)["edge"]
    assert a.shape == b.shape == (batch,)
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-14)


def test_the_spectral_edge_loss_agrees_in_float32_and_its_gradient_too() -> None:
    sketch, target = _pair(2, 1, 224, 224, 0, torch.float32)
    out = {}
    for method in ("spatial", "auto"):
        x = sketch.clone().requires_grad_(True)
        value = EdgeLoss(method=method)(x, target)["edge"]  # type: ignore[arg-type]
        value.sum().backward()
        assert x.grad is not None
        out[method] = (value.detach(), x.grad)
    torch.testing.assert_close(out["auto"][0], out["spatial"][0], rtol=5e-6, atol=0)
    g0, g1 = out["spatial"][1], out["auto"][1]
    assert float((g1 - g0).abs().max() / g0.abs().max()) < 1e-5


def test_the_spectral_edge_loss_passes_gradcheck() -> None:
    sketch, target = _pair(2, 1, 9, 7, 3, F64)
    loss = EdgeLoss(sigmas=(0.0, 1.0, 3.0), method="spectral")
    x = sketch.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, target)["edge"], (x,))


def test_the_spectral_edge_loss_stays_in_float32_under_bf16_autocast() -> None:
    sketch, target = _pair(1, 1, 64, 64, 1, torch.float32)
    plain = EdgeLoss()(sketch, target)["edge"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = EdgeLoss()(sketch, target)["edge"]
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=1e-6, atol=0)


def test_a_mask_on_the_errors_uses_the_blurs_and_spectral_refuses_it() -> None:
    sketch, target = _pair(2, 1, 32, 32, 2, torch.float32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:20, 6:30] = 1.0
    ctx = LossContext(mask=mask)
    auto = EdgeLoss(mask_weighting="features")(sketch, target, ctx)["edge"]
    spatial = EdgeLoss(mask_weighting="features", method="spatial")(sketch, target, ctx)["edge"]
    assert torch.equal(auto, spatial)
    unmasked = EdgeLoss(method="spatial")(sketch, target)["edge"]
    assert not torch.allclose(auto, unmasked)  # the mask did weight the errors
    with pytest.raises(InputError, match="mask"):
        EdgeLoss(mask_weighting="features", method="spectral")(sketch, target, ctx)
    # a mask that only changes the target ("target") keeps the spectral route: the same as spatial
    tgt = EdgeLoss(mask_weighting="target", method="spectral")(sketch, target, ctx)["edge"]
    ref = EdgeLoss(mask_weighting="target", method="spatial")(sketch, target, ctx)["edge"]
    torch.testing.assert_close(tgt, ref, rtol=1e-5, atol=0)


def test_the_target_spectrum_follows_the_target() -> None:
    loss = EdgeLoss(method="spectral")
    sketch, t1 = _pair(1, 1, 24, 24, 4, torch.float32)
    _, t2 = _pair(1, 1, 24, 24, 5, torch.float32)
    first = loss(sketch, t1)["edge"]
    second = loss(sketch, t2)["edge"]
    torch.testing.assert_close(second, EdgeLoss(method="spectral")(sketch, t2)["edge"], rtol=0, atol=0)
    torch.testing.assert_close(loss(sketch, t1)["edge"], first, rtol=0, atol=0)
    other = torch.nn.functional.interpolate(sketch, size=(16, 20))
    torch.testing.assert_close(
        loss(other, torch.nn.functional.interpolate(t1, size=(16, 20)))["edge"],
        EdgeLoss(method="spatial")(other, torch.nn.functional.interpolate(t1, size=(16, 20)))["edge"],
        rtol=1e-5,
        atol=0,
    )


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(InputError, match="method"):
        EdgeLoss(method="fft")  # type: ignore[arg-type]
