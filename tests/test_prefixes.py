"""Prefix renders: the sketches of the first k strokes, from one pass (issue 20)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipasso.errors import InputError
from clipasso.render import create_rasterizer, list_rasterizers


def _strokes(b: int, n: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(b, n, 4, 2, generator=g, dtype=dtype) * 28 + 2).requires_grad_(True)
    widths = torch.full((b, n), 1.5, dtype=dtype)
    colors = torch.rand(b, n, 4, generator=g, dtype=dtype)
    colors[..., 3] = 0.4 + 0.6 * colors[..., 3]
    return pts, widths, colors


@pytest.mark.parametrize("backend", list_rasterizers())
def test_every_prefix_is_the_render_of_its_first_strokes(backend: str) -> None:
    r = create_rasterizer(backend)
    pts, widths, colors = _strokes(2, 5, 0)
    ks = [0, 1, 3, 5, 3]
    out = r.render_prefixes(pts, widths, colors, (32, 32), ks, background=0.9)
    assert out.shape == (2, len(ks), 3, 32, 32)
    for j, k in enumerate(ks):
        ref = r.render_over(pts[:, :k], widths[:, :k], colors[:, :k], (32, 32), 0.9)
        # the torch backend's one pass draws the same strokes in the same order: bit for bit
        torch.testing.assert_close(out[:, j], ref, rtol=0, atol=0 if backend == "torch" else 1e-5)


@given(
    n=st.integers(1, 6), seed=st.integers(0, 10_000), ks=st.lists(st.integers(0, 6), min_size=1, max_size=4)
)
def test_prefix_gradients_equal_the_sum_of_separate_renders(n: int, seed: int, ks: list[int]) -> None:
    ks = [min(k, n) for k in ks]
    r = create_rasterizer("torch")
    pts, widths, colors = _strokes(1, n, seed)
    weights = torch.randn(1, len(ks), 3, 24, 24, generator=torch.Generator().manual_seed(seed))
    (r.render_prefixes(pts, widths, colors, (24, 24), ks) * weights).sum().backward()
    one_pass, pts.grad = pts.grad, None
    sum(
        (r.render_over(pts[:, :k], widths[:, :k], colors[:, :k], (24, 24), 1.0) * weights[:, j]).sum()
        for j, k in enumerate(ks)
    ).backward()
    torch.testing.assert_close(one_pass, pts.grad, rtol=1e-4, atol=1e-4)


def test_prefix_composite_gradcheck_float64() -> None:
    r = create_rasterizer("torch")
    pts, widths, colors = _strokes(1, 3, 3, torch.float64)
    colors.requires_grad_(True)

    def f(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return r.render_prefixes(p, widths, c, (12, 12), [1, 3, 2])

    small = (pts.detach() * 0.4).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (small, colors), eps=1e-6, atol=1e-5, nondet_tol=0.0)


@pytest.mark.parametrize("bad", [[], [-1], [4], [1.5], [True]])
def test_bad_prefixes_are_refused(bad: list[object]) -> None:
    pts, widths, colors = _strokes(1, 3, 1)
    with pytest.raises(InputError, match="prefix"):
        create_rasterizer("torch").render_prefixes(pts, widths, colors, (16, 16), bad)  # type: ignore[arg-type]
