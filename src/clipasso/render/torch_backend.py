"""Pure-PyTorch differentiable rasterizer for cubic Bézier strokes (the default backend).

Each pixel gets the box-filtered coverage of the inked set ``{x : dist(x, curve) ≤ r}`` (what
diffvg's supersampling estimates), computed analytically:

1. **Sparse candidate pairs (no grad).** For every stroke a bounding-box patch (control-point box
   grown by ``r + 1``; one common patch size per size class, and classes of small strokes searched
   together, so many strokes are handled by one vectorised computation) is tested against a
   polyline of the curve. Only (stroke, pixel)
   pairs whose pixel centre can lie within ``r + √2/2`` of the curve are kept (a bound on the
   chord/curve deviation keeps the test conservative), so memory and time grow with the inked
   area, not with ``strokes × segments × pixels``.
2. **Exact nearest point (no grad).** Newton's method on ``t`` refines the chord estimate to the
   nearest point ``q = B(t*)`` on the cubic (clamped to ``[0, 1]``). A multi-segment stroke gives
   one candidate per segment within reach of the pixel; the nearest counts, and among equally near
   ones (a kinked join) the largest coverage (step 3), so the result does not depend on the segment
   order and a reversed stroke renders the same.
3. **Differentiable coverage.** With ``t*`` detached, ``d = |c − B(t*)|`` already has the exact
   gradient (envelope theorem); the direction ``n = (c − q)/d`` additionally gets the implicit
   derivative ``dt*/dθ = −(∂g/∂θ)/(∂g/∂t)`` of the stationarity condition ``g = B'(t)·(B(t) − c)``.
   The coverage is the area of the unit pixel square inside the band ``|n·(x − q)| ≤ r`` (the
   stroke boundary replaced by its tangent lines at the nearest point): exact for straight strokes
   and a very close approximation elsewhere (round caps of radius ``r`` are the worst case).
   The coverage is one custom autograd function (:class:`_Coverage`) whose backward applies,
   op by op, the formulas autograd would, so gradients are bit for bit those of the plain graph.
4. **Compositing.** Strokes are drawn in order with "over" by a custom autograd function on a
   compact canvas of the touched pixels, one *layer* of pairs at a time (a pair's layer: how many
   earlier strokes cover its pixel), once forward and once backward, saving only the canvas values
   under each pair (``[pairs, 4]``), never a per-stroke canvas.

Example:
    >>> import torch
    >>> from clipasso.render.torch_backend import TorchRasterizer
    >>> pts = torch.tensor([[[[2.0, 8.0], [6.0, 8.0], [10.0, 8.0], [14.0, 8.5]]]])
    >>> black = torch.tensor([[[0.0, 0, 0, 1]]])
    >>> rgba = TorchRasterizer().render(pts, torch.tensor([[1.5]]), black, (16, 16))
    >>> rgba.shape
    torch.Size([1, 4, 16, 16])
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .base import Rasterizer, check_prefixes, register_rasterizer

__all__ = ["TorchRasterizer", "box_coverage", "rasterize_torch"]

_HALF_DIAG = math.sqrt(0.5)  # largest distance from a pixel centre to its square's boundary
_SEARCH_BUDGET = 1 << 20  # elements of the largest no-grad search tensor
_SMALL_CLASS = 64  # patches up to this side share one vectorised class
_TILE = 8  # the search culls tiles of this side before its per-pixel pass (large patches only)
_TILED_MIN_PIXELS = 2048  # patches of at least this many pixels are searched tile by tile
_CHORD_STEPS = (4, 8, 16, 32, 64)
_MERGE_ELEMENTS = 1 << 16  # a merged search at most this big is always worth one pass


def box_coverage(t: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Area of ``{u ∈ [-½, ½]² : n·u ≤ t}`` for a unit normal with ``a = max|n_i|, b = min|n_i|``.

    This is the CDF of ``a·U₁ + b·U₂`` with ``U`` uniform on the centred unit square: quadratic
    near both ends, linear in the middle; stable (and differentiable) as ``b → 0``.

    Args:
        t: ``[...]`` signed offset of the half-plane's boundary from the pixel centre.
        a: ``[...]`` larger absolute component of the normal (``≥ √½``).
        b: ``[...]`` smaller absolute component of the normal.

    Returns:
        ``[...]`` coverage in ``[0, 1]``.

    Example:
        >>> import torch
        >>> float(box_coverage(torch.tensor(0.0), torch.tensor(0.8), torch.tensor(0.6)))
        0.5
    """
    h1 = 0.5 * (a - b)
    h2 = 0.5 * (a + b)
    # For an axis-aligned normal (b -> 0) the corner bands have zero width and their value is 0 or 1.
    # Dividing by a clamped 2ab there would give 0 * inf = NaN in the backward of the branch that
    # torch.where does not select, so the denominator is made harmless before dividing.
    ab2 = 2.0 * a * b
    tilted = ab2 > 1e-6
    ab2 = torch.where(tilted, ab2, torch.ones_like(ab2))
    lo = (t + h2).clamp_min(0.0)
    hi = (h2 - t).clamp_min(0.0)
    mid = 0.5 + t / a
    low_corner = torch.where(tilted, lo * lo / ab2, torch.zeros_like(lo))
    high_corner = torch.where(tilted, 1.0 - hi * hi / ab2, torch.ones_like(hi))
    out = torch.where(t <= -h1, low_corner, torch.where(t < h1, mid, high_corner))
    return out.clamp(0.0, 1.0)


def _cap_correction(t: Tensor, a: Tensor, b: Tensor, r: Tensor) -> Tensor:
    """Area between the tangent line ``n·u = t`` and a circle of radius ``r`` inside the pixel.

    The circle (a round cap) bends away from its tangent by ``x²/(2r)`` at tangential offset
    ``x``; integrating over the part of the line inside the pixel square gives
    ``(x₂³ − x₁³)/(6r)``, which is subtracted from the half-plane coverage.

    Args:
        t: ``[A]`` offset of the line from the pixel centre; ``a, b``: ``[A]`` normal components
            (``a ≥ b ≥ 0``); ``r``: ``[A]`` cap radius.

    Returns:
        ``[A]`` area to subtract (``≥ 0``).
    """
    big = 1e3
    lo2 = (-0.5 - t * b) / a
    hi2 = (0.5 - t * b) / a
    steep = b > 1e-6
    bs = torch.where(steep, b, torch.ones_like(b))
    lo1 = torch.where(steep, (t * a - 0.5) / bs, torch.full_like(t, -big))
    hi1 = torch.where(steep, (t * a + 0.5) / bs, torch.full_like(t, big))
    x1 = torch.maximum(lo1, lo2)
    x2 = torch.minimum(hi1, hi2)
    inside = (x2 > x1) & (t.abs() < 0.5 * (a + b))
    area = (x2**3 - x1**3) / (6.0 * r.clamp_min(1e-3))
    return torch.where(inside, area, torch.zeros_like(area))


def _power_coefficients(points: Tensor) -> Tensor:
    """Cubic power-basis coefficients per segment.

    Args:
        points: ``[M, 3k+1, 2]``.

    Returns:
        ``[M, k, 8]`` as ``(a3x, a3y, a2x, a2y, a1x, a1y, a0x, a0y)`` with
        ``B(t) = ((a3 t + a2) t + a1) t + a0``.
    """
    p0, p1, p2, p3 = points[:, 0:-1:3], points[:, 1::3], points[:, 2::3], points[:, 3::3]
    a3 = p3 - 3.0 * p2 + 3.0 * p1 - p0
    a2 = 3.0 * (p2 - 2.0 * p1 + p0)
    a1 = 3.0 * (p1 - p0)
    return torch.cat([a3, a2, a1, p0], dim=-1)


def _eval(coef: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Position, first and second derivative of cubics ``coef [A, 8]`` at ``t [A]`` (each ``[A, 2]``).

    The plain autograd form of what :class:`_Coverage` and :func:`_newton` evaluate (the tests
    compare them with it)."""
    a3, a2, a1, a0 = coef[:, 0:2], coef[:, 2:4], coef[:, 4:6], coef[:, 6:8]
    tt = t.unsqueeze(-1)
    q = ((a3 * tt + a2) * tt + a1) * tt + a0
    dq = (3.0 * a3 * tt + 2.0 * a2) * tt + a1
    ddq = 6.0 * a3 * tt + 2.0 * a2
    return q, dq, ddq


def _accumulate(terms: list[Tensor]) -> Tensor:
    """A gradient with several contributions, summed as autograd's engine sums them: it runs the
    consumers of a tensor latest first, and each adds its part to what has arrived."""
    out = terms[-1]
    for term in reversed(terms[:-1]):
        out = out + term
    return out


def _where0(mask: Tensor, x: Tensor) -> Tensor:
    """``x`` where ``mask``, else 0 (the backward of ``where``, ``clamp`` and ``clamp_min``)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


@functools.cache
def _bounds_pass_gradient() -> tuple[bool, bool]:
    """Whether autograd passes the gradient of ``clamp(x, lo, hi)`` and of ``clamp_min(x, lo)`` at
    ``x`` exactly on a bound (torch 2.14: no, for both), read once from autograd itself so that
    :class:`_Coverage` agrees with it on any torch version."""
    with torch.enable_grad():
        x = torch.tensor([0.0, 1.0], requires_grad=True)
        (g_clamp,) = torch.autograd.grad(x.clamp(0.0, 1.0).sum(), x)
        (g_min,) = torch.autograd.grad(x.clamp_min(0.0).sum(), x)
    return bool(g_clamp[0] != 0), bool(g_min[0] != 0)


def _passes(x: Tensor, lo: float, hi: float | None = None) -> Tensor:
    """Where the gradient of ``x.clamp(lo, hi)`` (``clamp_min`` when ``hi`` is None) is passed."""
    inclusive = _bounds_pass_gradient()[0 if hi is not None else 1]
    if hi is None:
        return x >= lo if inclusive else x > lo
    return (x >= lo) & (x <= hi) if inclusive else (x > lo) & (x < hi)


class _Box:
    """:func:`box_coverage` with its intermediates kept, and its backward written out.

    The backward does, value by value, what autograd does for the ops of :func:`box_coverage`
    (the same formulas in the same order), so gradients are bit for bit those of the autograd
    graph it replaces.
    """

    def __init__(self, t: Tensor, a: Tensor, b: Tensor) -> None:
        h1 = 0.5 * (a - b)
        self.h2 = 0.5 * (a + b)
        self.a2x = 2.0 * a
        ab2 = self.a2x * b
        self.tilted = ab2 > 1e-6
        self.ab2 = torch.where(self.tilted, ab2, torch.ones_like(ab2))
        self.lo_raw = t + self.h2
        self.lo = self.lo_raw.clamp_min(0.0)
        self.hi_raw = self.h2 - t
        self.hi = self.hi_raw.clamp_min(0.0)
        self.tdiv = t / a
        mid = 0.5 + self.tdiv
        self.lc_raw = self.lo * self.lo / self.ab2
        low_corner = torch.where(self.tilted, self.lc_raw, torch.zeros_like(self.lo))
        self.hq = self.hi * self.hi / self.ab2
        high_corner = torch.where(self.tilted, 1.0 - self.hq, torch.ones_like(self.hi))
        self.c1 = t <= -h1
        self.c2 = t < h1
        self.out = torch.where(self.c1, low_corner, torch.where(self.c2, mid, high_corner))
        self.value = self.out.clamp(0.0, 1.0)
        self.a, self.b = a, b

    def backward(self, grad: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Contributions to the gradients of ``(t, a, b)``, each list in the order the ops were made."""
        g_out = _where0(_passes(self.out, 0.0, 1.0), grad)
        g_inner = _where0(~self.c1, g_out)
        g_low = _where0(self.c1, g_out)
        g_mid = _where0(self.c2, g_inner)
        g_high = _where0(~self.c2, g_inner)
        g_hq = -_where0(self.tilted, g_high)
        g_hihi = g_hq / self.ab2
        g_ab2_hi = -(g_hq * (self.hq / self.ab2))
        g_hi = g_hihi * self.hi + g_hihi * self.hi
        g_lcr = _where0(self.tilted, g_low)
        g_lolo = g_lcr / self.ab2
        g_ab2_lo = -(g_lcr * (self.lc_raw / self.ab2))
        g_lo = g_lolo * self.lo + g_lolo * self.lo
        g_t_mid = g_mid / self.a
        g_a_mid = -(g_mid * (self.tdiv / self.a))
        g_hi_raw = _where0(_passes(self.hi_raw, 0.0), g_hi)
        g_lo_raw = _where0(_passes(self.lo_raw, 0.0), g_lo)
        g_ab2 = _where0(self.tilted, g_ab2_hi + g_ab2_lo)
        g_a_2x = (g_ab2 * self.b) * 2.0
        g_b_ab2 = g_ab2 * self.a2x
        g_hs = (g_hi_raw + g_lo_raw) * 0.5
        return [g_lo_raw, -g_hi_raw, g_t_mid], [g_hs, g_a_2x, g_a_mid], [g_hs, g_b_ab2]


class _Cap:
    """:func:`_cap_correction` with its intermediates kept, and its backward written out (as
    :class:`_Box`)."""

    def __init__(self, t: Tensor, a: Tensor, b: Tensor, r: Tensor) -> None:
        big = 1e3
        self.tb = t * b
        self.lo2 = (-0.5 - self.tb) / a
        self.hi2 = (0.5 - self.tb) / a
        self.steep = b > 1e-6
        self.bs = torch.where(self.steep, b, torch.ones_like(b))
        self.ta = t * a
        self.lo1r = (self.ta - 0.5) / self.bs
        lo1 = torch.where(self.steep, self.lo1r, torch.full_like(t, -big))
        self.hi1r = (self.ta + 0.5) / self.bs
        hi1 = torch.where(self.steep, self.hi1r, torch.full_like(t, big))
        self.x1 = torch.maximum(lo1, self.lo2)
        self.x2 = torch.minimum(hi1, self.hi2)
        self.lo1, self.hi1 = lo1, hi1
        self.inside = (self.x2 > self.x1) & (t.abs() < 0.5 * (a + b))
        self.r = r
        self.den = 6.0 * r.clamp_min(1e-3)
        self.area = (self.x2**3 - self.x1**3) / self.den
        self.value = torch.where(self.inside, self.area, torch.zeros_like(self.area))
        self.t, self.a, self.b = t, a, b

    def backward(self, grad: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
        """Contributions to the gradients of ``(t, a, b)`` in the order the ops were made, and the
        gradient of ``r``."""
        t, a, b = self.t, self.a, self.b
        g_area = _where0(self.inside, grad)
        g_num = g_area / self.den
        g_den = -(g_area * (self.area / self.den))
        g_r = _where0(_passes(self.r, 1e-3), g_den * 6.0)
        g_x2 = g_num * (3.0 * self.x2.pow(2))
        g_x1 = -g_num * (3.0 * self.x1.pow(2))
        tie2 = torch.where(self.hi1 == self.hi2, g_x2 / 2, g_x2)
        g_hi1 = tie2.masked_fill(self.hi1 > self.hi2, 0)
        g_hi2 = tie2.masked_fill(self.hi1 < self.hi2, 0)
        tie1 = torch.where(self.lo1 == self.lo2, g_x1 / 2, g_x1)
        g_lo1 = tie1.masked_fill(self.lo1 < self.lo2, 0)
        g_lo2 = tie1.masked_fill(self.lo1 > self.lo2, 0)
        g_hi1r = _where0(self.steep, g_hi1)
        g_ta_hi = g_hi1r / self.bs
        g_bs_hi = -(g_hi1r * (self.hi1r / self.bs))
        g_lo1r = _where0(self.steep, g_lo1)
        g_ta_lo = g_lo1r / self.bs
        g_bs_lo = -(g_lo1r * (self.lo1r / self.bs))
        g_b_bs = _where0(self.steep, g_bs_hi + g_bs_lo)
        g_hi2n = g_hi2 / a
        g_a_hi2 = -(g_hi2 * (self.hi2 / a))
        g_lo2n = g_lo2 / a
        g_a_lo2 = -(g_lo2 * (self.lo2 / a))
        g_tb_hi = -g_hi2n
        g_tb_lo = -g_lo2n
        return (
            [g_tb_lo * b, g_tb_hi * b, g_ta_lo * a, g_ta_hi * a],
            [g_a_lo2, g_a_hi2, g_ta_lo * t, g_ta_hi * t],
            [g_tb_lo * t, g_tb_hi * t, g_b_bs],
            g_r,
        )


class _Coverage(torch.autograd.Function):
    """The differentiable coverage of each (stroke, pixel, segment) triple, with its backward
    written out: one node instead of the ~110 of the autograd graph of the same ops (steps 3 and 4
    of the module docstring).

    The forward computes the very ops of the graph it replaces, with ``(x, y)`` pairs as ``[2, A]``
    (each op one contiguous sweep); the backward applies autograd's formula for each op and sums
    the contributions to a tensor used several times in the order autograd's engine sums them
    (:func:`_accumulate`), so values and gradients are bit for bit those of that graph (tested:
    ``tests/test_render.py::test_coverage_function_matches_autograd``).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        cf: Tensor,
        r: Tensor,
        t0: Tensor,
        centre: Tensor,
        kappa: Tensor,
        cap_any: bool,
        thin: bool,
    ) -> Tensor:
        tiny = torch.finfo(cf.dtype).tiny
        co = cf.T.contiguous()  # [8, A]
        a3, a2, a1, a0 = co[0:2], co[2:4], co[4:6], co[6:8]
        tt = t0
        s1 = a3 * tt + a2
        s2 = s1 * tt + a1
        q = s2 * tt + a0
        n4 = a3 * 3.0 * tt + a2 * 2.0
        dq = n4 * tt + a1
        diff0 = centre - q
        prod = dq * diff0
        g = -(prod[0] + prod[1])
        delta = (g - g) * -kappa  # value 0; its derivative carries dt*/dθ
        diff = diff0 - dq * delta
        dd = diff * diff
        dist2 = dd[0] + dd[1]
        dist = dist2.clamp_min(tiny).sqrt()
        ad = diff.abs()
        nrm = ad / dist
        on_curve = dist2 <= 1e-12
        mx = torch.maximum(nrm[0], nrm[1])
        mn = torch.minimum(nrm[0], nrm[1])
        na = torch.where(on_curve, torch.ones_like(dist), mx)
        nb = torch.where(on_curve, torch.zeros_like(dist), mn)
        offset = r - dist
        box = _Box(offset, na, nb)
        cov = box.value
        cap = kappa == 0  # nearest point at an end or corner: the boundary is a circle of radius r
        capc = _Cap(offset, na, nb, r) if cap_any else None
        if capc is not None:
            cov = cov - torch.where(cap, capc.value, torch.zeros_like(cov))
        box2 = _Box(-r - dist, na, nb) if thin else None
        if box2 is not None:  # thin strokes: subtract the far side of the band
            cov = cov - box2.value
        out = cov.clamp(0.0, 1.0)
        ctx.parts = (tt, kappa, a3, dq, diff0, diff, dist2, dist, nrm, mx, mn, on_curve, cov, cap)  # type: ignore[attr-defined]
        ctx.boxes = (box, capc, box2)  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        tt, kappa, a3, dq, diff0, diff, dist2, dist, nrm, mx, mn, on_curve, cov, cap = ctx.parts
        box, capc, box2 = ctx.boxes
        tiny = torch.finfo(grad.dtype).tiny
        g_cov = _where0(_passes(cov, 0.0, 1.0), grad)
        t_terms, a_terms, b_terms = box.backward(g_cov)
        r_terms: list[Tensor] = []
        if capc is not None:
            g_cap = _where0(cap, -g_cov)
            ct, ca, cb, cr = capc.backward(g_cap)
            t_terms, a_terms, b_terms = t_terms + ct, a_terms + ca, b_terms + cb
        g_t2: Tensor | None = None
        if box2 is not None:
            tt2, ta2, tb2 = box2.backward(-g_cov)
            a_terms, b_terms = a_terms + ta2, b_terms + tb2
            g_t2 = _accumulate(tt2)
        g_offset = _accumulate(t_terms)
        g_na = _accumulate(a_terms)
        g_nb = _accumulate(b_terms)
        # r: used by offset = r − dist, the cap's clamp and the thin band's −r
        r_terms = [g_offset]
        if capc is not None:
            r_terms.append(cr)
        if g_t2 is not None:
            r_terms.append(-g_t2)
        g_r = _accumulate(r_terms)
        # the normal's components (amax / amin over (x, y): ties share the gradient)
        g_mx = _where0(~on_curve, g_na)
        g_mn = _where0(~on_curve, g_nb)
        is_mx = nrm == mx
        is_mn = nrm == mn
        g_nrm = (g_mn / is_mn.sum(0)) * is_mn + (g_mx / is_mx.sum(0)) * is_mx
        g_ad = g_nrm / dist
        g_dist_u = -(g_nrm * (nrm / dist))
        dist_terms = [g_dist_u[0] + g_dist_u[1], -g_offset]
        if g_t2 is not None:
            dist_terms.append(-g_t2)
        g_dist = _accumulate(dist_terms)
        g_dist2 = _where0(_passes(dist2, tiny), g_dist / (2 * dist))
        g_diff_abs = g_ad * diff.sgn()
        g_diff = (g_diff_abs + g_dist2 * diff) + g_dist2 * diff
        g_du = -g_diff
        g_delta_u = g_du * dq
        g_delta = g_delta_u[0] + g_delta_u[1]
        g_g = g_delta * -kappa
        g_p = -g_g
        g_dq = g_p * diff0
        g_diff0 = g_diff + g_p * dq
        g_q = -g_diff0
        # Horner's rule backwards: q = ((a3 t + a2) t + a1) t + a0 and B' = (3a3 t + 2a2) t + a1
        g_s2 = g_q * tt
        g_s1 = g_s2 * tt
        g_n4 = g_dq * tt
        g_co = a3.new_empty(8, a3.shape[1])
        torch.add((g_n4 * tt) * 3.0, g_s1 * tt, out=g_co[0:2])
        torch.add(g_n4 * 2.0, g_s1, out=g_co[2:4])
        torch.add(g_dq, g_s2, out=g_co[4:6])
        g_co[6:8] = g_q
        return g_co.T, g_r, None, None, None, None, None


_CONSTANTS: dict[tuple[Any, ...], Tensor] = {}


def _constant(kind: str, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Small constant tensors kept across renders (no allocation and fill per call).

    ``"arange"``: ``[n]`` long ``0 … n−1`` (``dtype`` unused). ``"params"``: ``[len(_CHORD_STEPS),
    n + 1]``, row ``i`` the search polyline's parameters ``j / c`` for ``c = _CHORD_STEPS[i]`` chords
    (exact: ``c`` is a power of two), padded with ``1.0`` up to ``n`` chords.
    """
    key = (kind, n, dtype, device)
    out = _CONSTANTS.get(key)
    if out is None:
        if len(_CONSTANTS) > 256:  # many canvas sizes, dtypes or devices: start again
            _CONSTANTS.clear()
        if kind == "arange":
            out = torch.arange(n, device=device)
        else:
            out = torch.ones(len(_CHORD_STEPS), n + 1, dtype=dtype, device=device)
            for i, c in enumerate(_CHORD_STEPS):
                if c <= n:
                    out[i, : c + 1] = torch.linspace(0.0, 1.0, c + 1, dtype=dtype, device=device)
        _CONSTANTS[key] = out
    return out


@torch.no_grad()
def _newton(coef: Tensor, centre: Tensor, t: Tensor, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Refine ``t`` towards the nearest point of each cubic to ``centre``.

    The first iterations are guarded (the best iterate by distance is kept, so a bad step never
    makes things worse); the last one or two are plain Newton steps from that best iterate, taken
    only when they are small: near the optimum ``d²`` is flat to rounding and cannot rank iterates,
    while ``t`` still converges quadratically (the gradient needs ``t*`` to full precision).

    ``B(t) − c``, ``B'(t)`` and ``B''(t)`` come from one Horner evaluation of a ``[4, A, 6]`` table
    whose derivative rows start with exact zeros (``0·t + x = x``), so each gets the very
    operations of its own Horner scheme: the values are those of evaluating them one by one, in
    about a third of the tensor ops.

    Args:
        coef: ``[A, 8]`` power-basis coefficients; ``centre``: ``[A, 2]``; ``t``: ``[A]`` start.
        steps: Total Newton iterations.

    Returns:
        ``(t [A], squared distance [A], ∂g/∂t [A])`` at the final parameter.
    """
    # Rows k3..k0 of Horner's rule, each [(B − c, B', B''), (x, y), A]: the pairs along the last,
    # contiguous dimension, so every op is one vectorised sweep (no broadcast over a dim of 2 or 6).
    cols = coef.T  # [8, A]
    a3, a2, a1 = cols[0:2], cols[2:4], cols[4:6]
    table = coef.new_zeros(4, 3, 2, coef.shape[0])
    table[0, 0] = a3
    table[1, 0] = a2
    torch.mul(a3, 3.0, out=table[1, 1])
    table[2, 0] = a1
    torch.mul(a2, 2.0, out=table[2, 1])
    torch.mul(a3, 6.0, out=table[2, 2])
    torch.sub(cols[6:8], centre, out=table[3, 0])  # B(t) − c directly, without cancellation
    table[3, 1] = a1
    table[3, 2] = table[2, 1]
    k3, k2, k1, k0 = table.unbind(0)
    tiny = torch.finfo(t.dtype).tiny
    polish = min(steps, 2 if t.dtype == torch.float64 else 1)

    def evaluate(t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(d², g = B'·(B − c), speed², h = ∂g/∂t)``, each ``[A]``."""
        e = ((k3 * t + k2) * t + k1) * t + k0  # [(B − c, B', B''), (x, y), A]
        prod = e * e[:1]  # (B − c)·(B − c), B'·(B − c), B''·(B − c) by coordinate
        dots = prod[:, 0] + prod[:, 1]
        speed = e[1] * e[1]
        speed2 = speed[0] + speed[1]
        return dots[0], dots[1], speed2, speed2 + dots[2]

    def step(t: Tensor) -> tuple[Tensor, Tensor]:
        d2, g, speed2, h = evaluate(t)
        denom = torch.where(h > 1e-3 * speed2, h, speed2) + tiny
        return d2, g / denom

    best_t = t
    best_d2 = torch.full_like(t, math.inf)
    guarded = steps - polish + 1
    for i in range(guarded):
        d2, delta = step(t)
        better = d2 < best_d2
        best_t = torch.where(better, t, best_t)
        best_d2 = torch.where(better, d2, best_d2)
        if i < guarded - 1:  # the last guarded step only ranks t: the polish starts from the best
            t = (t - delta).clamp(0.0, 1.0)
    t = best_t
    for _ in range(polish):
        _d2, delta = step(t)
        t = torch.where(delta.abs() < 0.05, (t - delta).clamp(0.0, 1.0), t)
    d2, _g, _speed2, h = evaluate(t)
    return t, d2, h


def _chords(leg: float) -> int:
    """Chords per segment of the search polyline for a stroke whose longest segment's control
    polygon is ``leg`` pixels long: about one per 3 px, from 4 to 64, rounded up to one of a few
    steps (powers of 2) so that similar strokes share a vectorised class."""
    need = min(64, max(4, math.ceil(leg / 3.0)))
    return next(c for c in _CHORD_STEPS if c >= need)


def _patch_origin(lo: Tensor, size: int, extent: int) -> Tensor:
    """Clamp patch origins so the patch lies inside the canvas (it still covers the visible box)."""
    return lo.clamp(0, max(extent - size, 0))


@torch.no_grad()
def _chord_distances(
    x: Tensor, y: Tensor, ax: Tensor, ay: Tensor, dx: Tensor, dy: Tensor, inv_len2: Tensor
) -> tuple[Tensor, Tensor]:
    """Squared distances from points ``(x, y)`` to chords starting at ``(ax, ay)`` with directions
    ``(dx, dy)`` (broadcast), and the chords' clamped parameters: ``(d², λ)``. The one formula of
    every search pass, so that their results agree bit for bit."""
    wx = x - ax
    wy = y - ay
    lam = ((wx * dx + wy * dy) * inv_len2).clamp_(0.0, 1.0)
    ex = wx.sub_(lam * dx)
    ey = wy.sub_(lam * dy)
    return ex.square_().add_(ey.square_()), lam


def _search(
    coef: Tensor,
    radius: Tensor,
    d2max: Tensor,
    lo: Tensor,
    size: tuple[int, int],
    chords: list[int],
    patches: list[tuple[int, int]],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Candidate (stroke, pixel, segment) triples of a group of strokes, with a chord-based initial ``t``.

    Every segment whose polyline comes within reach of a pixel gives its own triple (the nearest
    chord of that segment), so a pixel near a join between segments is tested against each of
    them; the triples of one (stroke, pixel) come out consecutively, segments in order, strokes in
    the order given.

    The strokes of a group may come from several classes (chords per segment, patch size) and are
    searched in one vectorised pass all the same: each stroke keeps its own polyline (padded to the
    group's most chords with zero-length chords out of reach) and its own patch (the pixels of the
    group's larger grid outside it are masked out), so the triples and their ``t`` are, bit for
    bit, those of searching each class on its own.

    Args:
        coef: ``[M, k, 8]`` detached power-basis coefficients.
        radius: ``[M]`` half-widths.
        d2max: ``[M]`` largest second difference of the control points, ``max|Δ²P|`` (the
            chord/curve deviation bound is ``¾·max|Δ²P|/chords²``).
        lo: ``[M, 2]`` long, the (column, row) corners of the strokes' boxes.
        size: ``(H, W)`` of the canvas (patches are clamped inside it).
        chords: chords per segment of each stroke's polyline (in ``_CHORD_STEPS``).
        patches: ``(height, width)`` of each stroke's patch.

    Returns:
        ``(m [A], row [A], col [A], seg [A], t [A])`` of the triples, ``m`` indexing the group.
    """
    m_count, k, _ = coef.shape
    dtype, device = coef.dtype, coef.device
    height, width = size
    sh, sw = max(p[0] for p in patches), max(p[1] for p in patches)
    most = max(chords)
    one_polyline = min(chords) == most
    one_patch = all(p == (sh, sw) for p in patches)
    per: Tensor | None = None
    if not (one_polyline and one_patch):  # [4, M]: chords, their row in _CHORD_STEPS, patch h and w
        per = torch.tensor(
            [[c, _CHORD_STEPS.index(c), ph, pw] for c, (ph, pw) in zip(chords, patches)], device=device
        ).T
    if one_polyline:
        s = _constant("params", most, dtype, device)[_CHORD_STEPS.index(most)]
        margin = 0.75 * d2max / most**2
    else:
        assert per is not None
        s = _constant("params", most, dtype, device).index_select(0, per[1]).view(m_count, 1, 1, most + 1)
        c_float = per[0].to(dtype)
        margin = 0.75 * d2max / (c_float * c_float)
    if one_patch:
        ox = _patch_origin(lo[:, 0], sw, width)
        oy = _patch_origin(lo[:, 1], sh, height)
    else:
        assert per is not None
        ox = torch.minimum(lo[:, 0].clamp_min(0), (width - per[3]).clamp_min(0))
        oy = torch.minimum(lo[:, 1].clamp_min(0), (height - per[2]).clamp_min(0))

    # Horner's rule, elementwise (a matmul's blocking would depend on M, i.e. on the batch)
    c3, c2, c1, c0 = (coef[..., i : i + 2].unsqueeze(-1) for i in (0, 2, 4, 6))  # [M, k, 2, 1]
    cxy = ((c3 * s + c2) * s + c1) * s + c0  # [M, k, 2, c+1]
    start = cxy[..., :-1]
    if not one_polyline:  # the padding chords (zero length, at t = 1) out of reach
        assert per is not None
        pad = _constant("arange", most, torch.long, device) >= per[0].view(m_count, 1, 1, 1)
        start = start.masked_fill(pad, 1e30 if dtype == torch.float32 else 1e300)
    # Layout [M, C, Q]: the pixels along the last, contiguous dimension, every chord's values
    # broadcast along it as one number, so each op is a vectorised sweep over a stroke's pixels.
    ax, ay = start[:, :, 0].reshape(m_count, -1, 1), start[:, :, 1].reshape(m_count, -1, 1)  # [M, C, 1]
    dxy = cxy[..., 1:] - cxy[..., :-1]
    dx, dy = dxy[:, :, 0].reshape(m_count, -1, 1), dxy[:, :, 1].reshape(m_count, -1, 1)
    inv_len2 = 1.0 / (dx * dx + dy * dy).clamp_min(torch.finfo(dtype).tiny)
    n_chords = k * most
    cut2 = (radius + _HALF_DIAG + margin + 1e-3).square().view(m_count, 1, 1)

    cols = _constant("arange", sw, torch.long, device)
    rows = _constant("arange", sh, torch.long, device)
    q_count = sh * sw
    px = ((ox.unsqueeze(-1) + cols).to(dtype) + 0.5).view(m_count, 1, sw).expand(m_count, sh, sw)
    py = ((oy.unsqueeze(-1) + rows).to(dtype) + 0.5).view(m_count, sh, 1).expand(m_count, sh, sw)
    px, py = px.reshape(m_count, 1, q_count), py.reshape(m_count, 1, q_count)  # [M, 1, Q]
    inside: Tensor | None = None
    if not one_patch:  # [M, 1, Q]: whether the pixel lies in the stroke's own patch
        assert per is not None
        inside = (rows.view(1, sh, 1) < per[2].view(-1, 1, 1)) & (cols.view(1, 1, sw) < per[3].view(-1, 1, 1))
        inside = inside.view(m_count, 1, q_count)

    out_m, out_q, out_j, out_l = [], [], [], []
    tiled = q_count >= _TILED_MIN_PIXELS
    if tiled:  # a large box: per tile, only the chords that can be nearest to one of its pixels
        tiles_h, tiles_w = -(-sh // _TILE), -(-sw // _TILE)
        tile_count = tiles_h * tiles_w
        half = _TILE / 2.0
        tx = (ox.unsqueeze(-1) + _TILE * _constant("arange", tiles_w, torch.long, device)).to(dtype) + half
        ty = (oy.unsqueeze(-1) + _TILE * _constant("arange", tiles_h, torch.long, device)).to(dtype) + half
        tx = tx.view(m_count, 1, tiles_w).expand(m_count, tiles_h, tiles_w).reshape(m_count, 1, tile_count)
        ty = ty.view(m_count, tiles_h, 1).expand(m_count, tiles_h, tiles_w).reshape(m_count, 1, tile_count)
        # A pixel centre lies within rho = half·√2 of its tile's centre and the distance to a chord
        # is 1-Lipschitz, so for a pixel of the tile a chord at distance D from the tile's centre is
        # within [D − rho, D + rho]. A chord further than (nearest chord of its segment) + 2·rho
        # cannot be that segment's nearest for any pixel of the tile, nor, further than the cut plus
        # rho, within reach; with 0.5 px of slack against rounding, the chords kept per (stroke,
        # segment, tile) are a range [first, last] of the segment's chords that holds every
        # candidate, and the minimum over the range (the first index among equals, as over all
        # chords) is the full pass's to the bit. A tile with no range holds no pixel to test.
        rho = half * math.sqrt(2.0)
        reach = (cut2.sqrt() + rho + 0.5).view(m_count, 1, 1, 1)
        arange_c = _constant("arange", most, torch.long, device).view(1, 1, most, 1)
        firsts, lasts = [], []
        t_step = max(1, _SEARCH_BUDGET // max(tile_count * n_chords, 1))
        for m0 in range(0, m_count, t_step):
            m1 = min(m_count, m0 + t_step)
            d2, _ = _chord_distances(
                tx[m0:m1], ty[m0:m1], ax[m0:m1], ay[m0:m1], dx[m0:m1], dy[m0:m1], inv_len2[m0:m1]
            )
            dist = d2.sqrt_().view(m1 - m0, k, most, tile_count)
            bound = torch.minimum(dist.amin(dim=2, keepdim=True) + (2.0 * rho + 0.5), reach[m0:m1])
            need = dist <= bound  # [m, k, most, T]
            firsts.append(torch.where(need, arange_c, most).amin(dim=2))  # [m, k, T]; none: most
            lasts.append(torch.where(need, arange_c, -1).amax(dim=2))  # none: -1
        first, last = torch.cat(firsts), torch.cat(lasts)  # [M, k, T]
        tile_of = ((rows.view(sh, 1) // _TILE) * tiles_w + cols.view(1, sw) // _TILE).reshape(-1)  # [Q]
        wanted = (last >= 0).any(dim=1).index_select(1, tile_of)  # [M, Q]
        if inside is not None:
            wanted &= inside[:, 0]
        pm, pq = wanted.nonzero().unbind(1)  # (stroke, pixel) order
        if pm.numel():
            pt = tile_of.index_select(0, pq)
            f_p, l_p = first[pm, :, pt], last[pm, :, pt]  # [P, k]
            pixel_span = (l_p - f_p + 1).amax(dim=1)
            widest = pixel_span.new_zeros(m_count).scatter_reduce_(0, pm, pixel_span, "amax")
            spans, counts = torch.stack([widest, torch.bincount(pm, minlength=m_count)]).tolist()  # one sync
            pxs = px[:, 0][pm, pq].view(-1, 1, 1)  # [P, 1, 1]
            pys = py[:, 0][pm, pq].view(-1, 1, 1)
            table = torch.stack([ax, ay, dx, dy, inv_len2]).view(5, m_count * n_chords)
            seg_base = _constant("arange", k, torch.long, device).view(1, k, 1) * most
            for p0, p1, span in _span_chunks(counts, spans, k):
                sm = pm[p0:p1]
                f_c, l_c = f_p[p0:p1].unsqueeze(-1), l_p[p0:p1].unsqueeze(-1)  # [p, k, 1]
                offsets = _constant("arange", span, torch.long, device)
                idx = torch.minimum(f_c + offsets, l_c).clamp_(0, most - 1)  # [p, k, span]
                flat = (sm.view(-1, 1, 1) * n_chords + seg_base + idx).view(-1)
                c_ax, c_ay, c_dx, c_dy, c_inv = table.index_select(1, flat).view(5, p1 - p0, k, span)
                d2, lam = _chord_distances(pxs[p0:p1], pys[p0:p1], c_ax, c_ay, c_dx, c_dy, c_inv)
                d2.masked_fill_(l_c < 0, math.inf)  # a segment with no chord in reach of the tile
                d2min, jl = d2.min(dim=2)  # [p, k]: per segment
                hit = (d2min <= cut2[sm, 0]).nonzero()  # in (pair, segment) order
                if hit.shape[0] == 0:
                    continue
                hp, hs = hit.unbind(1)
                jh = jl[hp, hs]
                out_m.append(sm[hp])
                out_q.append(pq[p0:p1][hp])
                out_j.append(hs * most + idx[hp, hs, jh])
                out_l.append(lam[hp, hs, jh])
    per_stroke = q_count * n_chords
    m_step = max(1, _SEARCH_BUDGET // max(per_stroke, 1))
    q_step = q_count if per_stroke <= _SEARCH_BUDGET else max(1, _SEARCH_BUDGET // n_chords)
    for m0 in range(0, 0 if tiled else m_count, m_step):  # small boxes: every pixel of the patch
        m1 = min(m_count, m0 + m_step)
        for q0 in range(0, q_count, q_step):
            q1 = min(q_count, q0 + q_step)
            d2, lam = _chord_distances(  # [m, C, q]
                px[m0:m1, :, q0:q1],
                py[m0:m1, :, q0:q1],
                ax[m0:m1],
                ay[m0:m1],
                dx[m0:m1],
                dy[m0:m1],
                inv_len2[m0:m1],
            )
            d2min, jc = d2.view(m1 - m0, k, most, q1 - q0).min(dim=2)  # [m, k, q]: per segment
            near = d2min <= cut2[m0:m1]
            if inside is not None:
                near &= inside[m0:m1, :, q0:q1]
            hit = near.transpose(1, 2).nonzero()  # in (stroke, pixel, segment) order
            if hit.shape[0] == 0:
                continue
            hm, hq, hs = hit.unbind(1)
            jj = hs * most + jc[hm, hs, hq]
            out_m.append(hm + m0)
            out_q.append(hq + q0)
            out_j.append(jj)
            out_l.append(lam[hm, jj, hq])
    if not out_m:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty, empty, torch.zeros(0, dtype=dtype, device=device)
    m, q, j, lam_sel = (x[0] if len(x) == 1 else torch.cat(x) for x in (out_m, out_q, out_j, out_l))
    seg = torch.div(j, most, rounding_mode="floor")
    if one_polyline:
        t = ((j - seg * most).to(dtype) + lam_sel) / most
    else:
        t = ((j - seg * most).to(dtype) + lam_sel) / c_float[m]
    row = oy[m] + torch.div(q, sw, rounding_mode="floor")
    col = ox[m] + q % sw
    return m, row, col, seg, t


def _span_chunks(counts: list[int], spans: list[int], segments: int) -> list[tuple[int, int, int]]:
    """``(start, stop, span)`` chunks of a tiled search's pixels (stroke-major, ``counts[m]`` of
    stroke ``m``, each tested against up to ``spans[m]`` chords per segment): consecutive strokes
    share a chunk (tested against the largest span among them) while that costs at most a quarter
    more than apart, or is small anyway (``_MERGE_ELEMENTS``); none exceeds ``_SEARCH_BUDGET``
    elements. Chunks keep the pixels' order, so the triples come out as from one pass."""
    chunks: list[tuple[int, int, int]] = []
    pos = 0
    start, span, apart = 0, 0, 0  # the open chunk: first pixel, span, elements tested apart
    for count, s in zip(counts, spans):
        if count == 0:
            continue
        wide = max(span, s)
        merged = (pos + count - start) * wide * segments
        if (
            pos > start
            and merged <= _SEARCH_BUDGET
            and (merged <= 1.25 * (apart + count * s * segments) or merged <= _MERGE_ELEMENTS)
        ):
            span, apart = wide, apart + count * s * segments
        else:
            if pos > start:
                chunks.append((start, pos, span))
            start, span, apart = pos, s, count * s * segments
        pos += count
    if pos > start:
        chunks.append((start, pos, span))
    out: list[tuple[int, int, int]] = []  # split chunks over the budget by pixels
    for a, b, s in chunks:
        step = max(1, _SEARCH_BUDGET // (s * segments))
        out.extend((p, min(b, p + step), s) for p in range(a, b, step))
    return out


def _groups(classes: list[tuple[int, int, int, int]], segments: int) -> list[list[int]]:
    """Which classes to search together: ``classes`` are ``(strokes, chords, patch h, patch w)``.

    Classes are merged (greedily, smaller patches first) while the merged search is at most twice
    the elements of searching them apart, or small anyway (``_MERGE_ELEMENTS``): a search is a few
    dozen tensor ops whatever its size, so for small patches one pass is cheaper than several.
    Which classes go together changes the time only, never the triples found (see :func:`_search`).

    Returns:
        Lists of indices into ``classes``.
    """
    order = sorted(range(len(classes)), key=lambda i: (classes[i][2] * classes[i][3], classes[i][1]))
    groups: list[list[int]] = []
    apart = 0
    dims = (0, 0, 0, 0)  # strokes, chords, h, w of the current group
    for i in order:
        n_i, c_i, h_i, w_i = classes[i]
        cost = n_i * h_i * w_i * segments * c_i
        if groups:
            n, c, hh, ww = dims[0] + n_i, max(dims[1], c_i), max(dims[2], h_i), max(dims[3], w_i)
            together = n * hh * ww * segments * c
            if together <= max(2 * (apart + cost), _MERGE_ELEMENTS):
                groups[-1].append(i)
                apart += cost
                dims = (n, c, hh, ww)
                continue
        groups.append([i])
        apart, dims = cost, (n_i, c_i, h_i, w_i)
    return groups


class _Touched:
    """The pixels the pairs touch, and the order of the pairs for a layered compositing pass.

    Compositing runs on a compact canvas of the touched pixels only (``[U, 4]``; the rest of the
    image is the empty canvas, or the background, exactly); a pair's *layer* is the number of
    earlier pairs (strokes drawn before) on its pixel. Within a layer every pixel occurs once, so a
    layer is one vectorised update, and every pixel still sees its strokes in drawing order: layer
    by layer "over" does, pixel by pixel, the very operations of stroke by stroke "over", in as
    many steps as the deepest overlap has strokes.

    Args:
        pixel: ``[A]`` long, the pairs' pixels (``b·H·W + row·W + col``), pairs in drawing order.
        shape: ``(B, H, W)``.
        layers: Whether to compute the layer order (:attr:`perm`, :attr:`bounds`).

    Attributes:
        upix: ``[U]`` the touched pixels, ascending.
        slot: ``[A]`` each pair's pixel as an index into ``upix``.
        perm: ``[A]`` the pairs in layer order (drawing order within a layer); ``bounds``: the
            layers' boundaries in it.
    """

    def __init__(self, pixel: Tensor, shape: tuple[int, int, int], layers: bool) -> None:
        count = pixel.shape[0]
        device = pixel.device
        by_pixel = torch.sort(pixel, stable=True)  # each pixel's pairs together, in drawing order
        first = torch.ones(count, dtype=torch.bool, device=device)
        torch.ne(by_pixel.values[1:], by_pixel.values[:-1], out=first[1:])
        self.upix = by_pixel.values[first]
        run = torch.cumsum(first, 0) - 1  # the pixel's slot, in pixel order
        self.slot = torch.empty_like(run).index_copy_(0, by_pixel.indices, run)
        self._shape = shape
        self.perm: Tensor | None = None
        self.bounds: list[int] = [0, count]
        if layers and count:
            index = torch.arange(count, device=device)
            depth = index - index[first].index_select(0, run)  # rank within the pixel's run
            layer = torch.empty_like(depth).index_copy_(0, by_pixel.indices, depth)
            self.perm = torch.sort(layer, stable=True).indices
            self.bounds = [0, *torch.cumsum(torch.bincount(layer), 0).tolist()]

    @property
    def where(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(b, row, col)`` of each touched pixel, ``[U]`` each (for the backward's gathers)."""
        _b, h, w = self._shape
        bi = torch.div(self.upix, h * w, rounding_mode="floor")
        rest = self.upix - bi * (h * w)
        yi = torch.div(rest, w, rounding_mode="floor")
        return bi, yi, rest - yi * w


def _straight(canvas: Tensor, tiny: float) -> Tensor:
    """Straight RGBA ``[U, 4]`` from a premultiplied ``canvas [U, 4]`` (zero colour where ``α = 0``)."""
    a = canvas[:, 3:]
    rgb = torch.where(a > 0, canvas[:, :3] / a.clamp_min(tiny), torch.zeros_like(canvas[:, :3]))
    return torch.cat([rgb, a], dim=1)


def _straight_backward(grad: Tensor, canvas: Tensor, tiny: float) -> Tensor:
    """The gradient of :func:`_straight` with respect to ``canvas``, as autograd computes it (the
    backward formulas of ``cat``, ``where``, ``div`` and ``clamp_min``, in the same arithmetic)."""
    a = canvas[:, 3:]
    a_cl = a.clamp_min(tiny)
    g_rgb = torch.where(a > 0, grad[:, :3], torch.zeros_like(grad[:, :3]))
    out = torch.empty_like(canvas)
    torch.div(g_rgb, a_cl, out=out[:, :3])
    g_cl = (-g_rgb * ((canvas[:, :3] / a_cl) / a_cl)).sum(-1, keepdim=True)
    torch.add(grad[:, 3:], torch.where(a >= tiny, g_cl, torch.zeros_like(g_cl)), out=out[:, 3:])
    return out


class _OverComposite(torch.autograd.Function):
    """Composite sparse per-stroke alphas in order with "over" (premultiplied accumulation), then
    either divide to straight alpha (``background`` None, ``[B, 4, H, W]``) or put the result onto a
    grey (``rgb + (1 − α)·grey``, ``[B, 3, H, W]``).

    Works on the touched pixels only (:class:`_Touched`), layer by layer; the backward walks the
    layers in reverse and gathers the incoming gradient at the touched pixels, so no full-canvas
    tensor is built but the output.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        alpha: Tensor,
        rgb: Tensor,
        pair_stroke: Tensor,
        pair_pixel: Tensor,
        shape: tuple[int, int, int],
        background: float | None,
    ) -> Tensor:
        b, h, w = shape
        touched = _Touched(pair_pixel, shape, layers=True)
        perm = touched.perm
        if perm is None:
            perm = torch.zeros(0, dtype=torch.long, device=alpha.device)
        a_col = alpha.index_select(0, perm).unsqueeze(-1)  # [A, 1], layer order from here on
        slot = touched.slot.index_select(0, perm)
        u = alpha.new_ones(alpha.shape[0], 4)
        u[:, :3] = rgb.index_select(0, pair_stroke.index_select(0, perm))
        canvas = alpha.new_zeros(touched.upix.shape[0], 4)
        below = alpha.new_empty(alpha.shape[0], 4)
        for s, e in itertools.pairwise(touched.bounds):
            idx = slot[s:e]
            xp = canvas.index_select(0, idx)
            below[s:e] = xp
            canvas.index_copy_(0, idx, torch.addcmul(xp, a_col[s:e], u[s:e] - xp))
        ctx.save_for_backward(a_col, u, below, pair_stroke, slot, perm, canvas)
        ctx.touched = touched  # type: ignore[attr-defined]
        ctx.num_strokes = rgb.shape[0]  # type: ignore[attr-defined]
        ctx.background = background  # type: ignore[attr-defined]
        numel = b * h * w
        if background is None:  # straight alpha; the untouched pixels are (0, 0, 0, 0)
            tiny = torch.finfo(alpha.dtype).tiny
            out = alpha.new_zeros(numel, 4).index_copy_(0, touched.upix, _straight(canvas, tiny))
            return out.view(b, h, w, 4).permute(0, 3, 1, 2)
        over = torch.addcmul(canvas[:, :3], 1.0 - canvas[:, 3:], canvas.new_tensor(background))
        out = alpha.new_full((numel, 3), background).index_copy_(0, touched.upix, over)
        return out.view(b, h, w, 3).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a_col, u, below, pair_stroke, slot, perm, canvas = ctx.saved_tensors
        touched: _Touched = ctx.touched
        g_touched = grad.permute(0, 2, 3, 1)[touched.where]  # [U, C]
        if ctx.background is None:
            g_canvas = _straight_backward(g_touched, canvas, torch.finfo(canvas.dtype).tiny)
        else:  # the gradient of rgb + (1 − α)·grey, as autograd would give it to the canvas
            g_canvas = g_touched.new_empty(g_touched.shape[0], 4)
            g_canvas[:, :3] = g_touched
            g_alpha = (g_touched * g_touched.new_tensor(ctx.background)).sum(-1, keepdim=True)
            torch.neg(g_alpha, out=g_canvas[:, 3:])
        count = a_col.shape[0]
        d_alpha = a_col.new_empty(count)
        d_u = a_col.new_empty(count, 3)
        bounds = touched.bounds
        for s, e in zip(reversed(bounds[:-1]), reversed(bounds[1:])):
            idx = slot[s:e]
            gp = g_canvas.index_select(0, idx)
            torch.sum(gp * (u[s:e] - below[s:e]), -1, out=d_alpha[s:e])
            torch.mul(gp[:, :3], a_col[s:e], out=d_u[s:e])
            g_canvas.index_copy_(0, idx, gp * (1.0 - a_col[s:e]))
        # back to drawing order (the colours' gradients are summed in that order)
        d_alpha = torch.empty_like(d_alpha).index_copy_(0, perm, d_alpha)
        d_u = torch.empty_like(d_u).index_copy_(0, perm, d_u)
        d_rgb = a_col.new_zeros(ctx.num_strokes, 3).index_add_(0, pair_stroke, d_u)
        return d_alpha, d_rgb, None, None, None, None


class _OverCompositePrefixes(torch.autograd.Function):
    """The sketches after the first ``k`` strokes, for every ``k`` in ``snaps``, over a grey:
    :class:`_OverComposite`'s pass stroke by stroke (on the touched pixels), each prefix a
    snapshot of it."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        alpha: Tensor,
        rgb: Tensor,
        pair_stroke: Tensor,
        pair_pixel: Tensor,
        bounds: list[int],
        shape: tuple[int, int, int],
        snaps: list[int],
        background: float,
    ) -> Tensor:
        b, h, w = shape
        touched = _Touched(pair_pixel, shape, layers=False)
        slot = touched.slot
        count = alpha.shape[0]
        u = alpha.new_ones(count, 4)
        u[:, :3] = rgb.index_select(0, pair_stroke)
        canvas = alpha.new_zeros(touched.upix.shape[0], 4)
        below = alpha.new_empty(count, 4)
        a_col = alpha.unsqueeze(-1)
        out = alpha.new_zeros(len(snaps), touched.upix.shape[0], 4)
        where: dict[int, list[int]] = {}
        for j, k in enumerate(snaps):
            where.setdefault(k, []).append(j)
        for i, (s, e) in enumerate(itertools.pairwise(bounds)):
            if s != e:
                idx = slot[s:e]
                xp = canvas.index_select(0, idx)
                below[s:e] = xp
                canvas.index_copy_(0, idx, torch.addcmul(xp, a_col[s:e], u[s:e] - xp))
            for j in where.get(i + 1, ()):
                out[j] = canvas
        ctx.save_for_backward(alpha, u, below, pair_stroke, slot)
        ctx.bounds = bounds  # type: ignore[attr-defined]
        ctx.num_strokes = rgb.shape[0]  # type: ignore[attr-defined]
        ctx.where = where  # type: ignore[attr-defined]
        ctx.touched = touched  # type: ignore[attr-defined]
        ctx.background = background  # type: ignore[attr-defined]
        over = torch.addcmul(out[..., :3], 1.0 - out[..., 3:], out.new_tensor(background))  # [K, U, 3]
        full = alpha.new_full((len(snaps), b * h * w, 3), background).index_copy_(1, touched.upix, over)
        return full.view(len(snaps), b, h, w, 3).permute(1, 0, 4, 2, 3)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        alpha, u, below, pair_stroke, slot = ctx.saved_tensors
        bounds: list[int] = ctx.bounds
        where: dict[int, list[int]] = ctx.where
        touched: _Touched = ctx.touched
        bi, yi, xi = touched.where
        g_touched = grad.permute(1, 0, 3, 4, 2)[:, bi, yi, xi]  # [K, U, 3]
        g_out = g_touched.new_empty(*g_touched.shape[:2], 4)  # the gradient of each snapshot's canvas
        g_out[..., :3] = g_touched
        g_alpha = (g_touched * g_touched.new_tensor(ctx.background)).sum(-1, keepdim=True)
        torch.neg(g_alpha, out=g_out[..., 3:])
        g_canvas = grad.new_zeros(touched.upix.shape[0], 4)
        d_alpha = torch.zeros_like(alpha)
        d_u = alpha.new_zeros(alpha.shape[0], 3)
        a_col = alpha.unsqueeze(-1)
        for i in reversed(range(len(bounds) - 1)):
            for j in where.get(i + 1, ()):  # the prefix of the first i + 1 strokes ends here
                g_canvas += g_out[j]
            s, e = bounds[i], bounds[i + 1]
            if s == e:
                continue
            idx = slot[s:e]
            gp = g_canvas.index_select(0, idx)
            d_alpha[s:e] = (gp * (u[s:e] - below[s:e])).sum(-1)
            d_u[s:e] = gp[:, :3] * a_col[s:e]
            g_canvas.index_copy_(0, idx, gp * (1.0 - a_col[s:e]))
        d_rgb = alpha.new_zeros(ctx.num_strokes, 3).index_add_(0, pair_stroke, d_u)
        return d_alpha, d_rgb, None, None, None, None, None, None


def rasterize_torch(
    points: Tensor,
    widths: Tensor,
    colors: Tensor,
    size: tuple[int, int],
    *,
    newton_steps: int | None = None,
    background: float | None = None,
    prefixes: list[int] | None = None,
) -> Tensor:
    """Rasterize validated batched strokes with the pure-PyTorch algorithm.

    Args:
        points: ``[B, N, P, 2]`` control points (pixels, ``P = 3k + 1``).
        widths: ``[B, N]`` half-widths ``r``.
        colors: ``[B, N, 4]`` straight RGBA.
        size: ``(H, W)``.
        newton_steps: Newton iterations for the nearest point (default 3 in float32, 7 in
            float64).
        background: None for straight-alpha RGBA; a grey level for the strokes drawn onto it,
            taken from the premultiplied canvas directly.
        prefixes: Stroke counts ``k``: return the sketches of the first ``k`` strokes over
            ``background`` (required then), ``[B, len(prefixes), 3, H, W]``, from the one pass.

    Returns:
        ``[B, 4, H, W]`` straight-alpha RGBA, or ``[B, 3, H, W]`` over ``background``, in the dtype
        of ``points``.
    """
    out_dtype = points.dtype
    if points.dtype in (torch.float16, torch.bfloat16):
        points, widths, colors = points.float(), widths.float(), colors.float()
    dtype, device = points.dtype, points.device
    b, n, p, _ = points.shape
    k = (p - 1) // 3
    h, w = size
    steps = newton_steps if newton_steps is not None else (7 if dtype == torch.float64 else 3)
    tiny = torch.finfo(dtype).tiny
    if prefixes is not None and (background is None or n * b == 0):
        if background is None:
            raise ValueError("prefixes need a background")
        zero = points.sum() * 0 + widths.sum() * 0 + colors.sum() * 0
        return (points.new_full((b, len(prefixes), 3, h, w), float(background)) + zero).to(out_dtype)
    if n * b == 0:
        zero = points.sum() * 0 + widths.sum() * 0 + colors.sum() * 0  # keeps the graph connected
        if background is not None:
            return (points.new_full((b, 3, h, w), float(background)) + zero).to(out_dtype)
        return (points.new_zeros(b, 4, h, w) + zero).to(out_dtype)

    # Strokes enumerated stroke-major (g = i·B + b) so pairs come out grouped by drawing order.
    pts = points.transpose(0, 1).reshape(n * b, p, 2)
    rad = widths.transpose(0, 1).reshape(n * b)
    col = colors.transpose(0, 1).reshape(n * b, 4)
    coef = _power_coefficients(pts)  # [G, k, 8], differentiable

    with torch.no_grad():
        pd, rd, cd = pts.detach(), rad.detach(), coef.detach()
        lo = torch.floor(pd.amin(dim=1) - rd.unsqueeze(-1) - 1.0)
        hi = torch.ceil(pd.amax(dim=1) + rd.unsqueeze(-1) + 1.0)
        extent = (hi - lo).to(torch.long)  # [G, 2] (x, y)
        lo = lo.to(torch.long)
        legs = (pd[:, 1:] - pd[:, :-1]).norm(dim=-1).view(n * b, k, 3).sum(-1)  # control polygon
        second = (pd[:, 2:] - 2.0 * pd[:, 1:-1] + pd[:, :-2]).norm(dim=-1)  # [G, P-2]
        d2max = second.amax(dim=-1) if second.shape[1] else torch.zeros_like(rd)
        ext_list = extent.tolist()
        leg_list = legs.amax(dim=-1).tolist()

    # A class is (patch size class, chords per segment), both functions of the stroke alone: the
    # chords set the search's initial t (and so Newton's result to rounding), so a stroke renders
    # bit for bit the same whatever else is in the batch. The common patch only adds pixels that
    # the distance test rejects.
    classes: dict[tuple[int, int], list[int]] = {}
    for g_idx, ((ex, ey), leg) in enumerate(zip(ext_list, leg_list)):
        side = max(ex, ey)
        key = 0 if side <= _SMALL_CLASS else 1 << math.ceil(math.log2(side))
        classes.setdefault((key, _chords(leg)), []).append(g_idx)

    info = []  # per class: (strokes, chords, patch height, patch width)
    members_of = list(classes.values())
    for (_key, chords), members in classes.items():
        sw = min(w, max(ext_list[i][0] for i in members))
        sh = min(h, max(ext_list[i][1] for i in members))
        info.append((len(members), chords, sh, sw))
    parts = []
    for together in _groups(info, k):
        members = sorted(itertools.chain.from_iterable(members_of[i] for i in together))
        chords_of, patch_of = [0] * (n * b), [(0, 0)] * (n * b)
        for i in together:
            for g_idx in members_of[i]:
                chords_of[g_idx], patch_of[g_idx] = info[i][1], (info[i][2], info[i][3])
        chord_list = [chords_of[i] for i in members]
        patch_list = [patch_of[i] for i in members]
        if len(members) == n * b:  # every stroke, in order
            m, row, colm, seg, t = _search(cd, rd, d2max, lo, (h, w), chord_list, patch_list)
            parts.append((m, row, colm, seg, t))
            continue
        sel = torch.tensor(members, dtype=torch.long, device=device)
        m, row, colm, seg, t = _search(cd[sel], rd[sel], d2max[sel], lo[sel], (h, w), chord_list, patch_list)
        parts.append((sel[m], row, colm, seg, t))
    if len(parts) == 1:
        g_pair, row, colm, seg, t0 = parts[0]
    else:  # strokes in drawing order, each one's triples in the order found
        g_pair, row, colm, seg, t0 = (torch.cat(x) for x in zip(*parts))
        order = torch.sort(g_pair, stable=True).indices
        g_pair, row, colm, seg, t0 = g_pair[order], row[order], colm[order], seg[order], t0[order]

    with torch.no_grad():
        centre = torch.stack([colm.to(dtype) + 0.5, row.to(dtype) + 0.5])  # [2, A]
        coef_flat = cd.reshape(n * b * k, 8)
        seg_id = g_pair * k + seg
        t0, d2_near, hess = _newton(coef_flat.index_select(0, seg_id), centre, t0, steps)
        interior = (t0 > 0.0) & (t0 < 1.0)
        kappa = torch.where(interior & (hess > tiny), 1.0 / hess.clamp_min(tiny), torch.zeros_like(hess))
        strokes_ord = torch.div(g_pair, b, rounding_mode="floor")
        pixel = (g_pair - strokes_ord * b) * (h * w) + row * w + colm
        group: Tensor | None = None
        if k > 1:  # one (stroke, pixel) pair per run of consecutive triples (one per segment in reach)
            pair_key = g_pair * (h * w) + row * w + colm
            _, group, run = torch.unique_consecutive(pair_key, return_inverse=True, return_counts=True)
            first = torch.cumsum(run, 0) - run
            pair_g, strokes_ord, pixel = g_pair[first], strokes_ord[first], pixel[first]
        else:
            pair_g = g_pair
        bounds = [0]
        if prefixes is not None:  # the prefixes' pass goes stroke by stroke
            bounds += torch.cumsum(torch.bincount(strokes_ord, minlength=n), 0).tolist()

    # Differentiable coverage at the (detached) nearest parameter.
    cf = coef.reshape(n * b * k, 8).index_select(0, seg_id)
    r = rad.index_select(0, g_pair)
    cap_any = bool((kappa == 0).any())
    thin = bool((rd < _HALF_DIAG).any())
    cov = _Coverage.apply(cf, r, t0, centre, kappa, cap_any, thin)
    if group is not None:
        # Several segments in reach of a pixel: the nearest one counts; among segments equally near
        # (to rounding: a kinked join, where the nearest point can be the join on both sides or a
        # point on each) the largest coverage. Neither depends on the segment order, so a reversed
        # stroke renders the same.
        with torch.no_grad():
            pairs = pair_g.shape[0]
            near = d2_near.new_full((pairs,), math.inf).scatter_reduce(0, group, d2_near, "amin")
            near = near.index_select(0, group)
            tied = d2_near <= near + 1e-5 * (1.0 + near)
        cov = torch.where(tied, cov, torch.full_like(cov, -1.0))
        cov = cov.new_zeros(pairs).scatter_reduce(0, group, cov, "amax", include_self=False)
    alpha = cov * col[:, 3].index_select(0, pair_g)

    if prefixes is not None:
        assert background is not None
        snaps = _OverCompositePrefixes.apply(
            alpha, col[:, :3], pair_g, pixel, bounds, (b, h, w), prefixes, float(background)
        )
        return snaps.to(out_dtype)
    # premultiplied over a grey (no round trip through straight alpha), or straight alpha
    out = _OverComposite.apply(alpha, col[:, :3], pair_g, pixel, (b, h, w), background)
    return out.to(out_dtype)


@register_rasterizer("torch")
class TorchRasterizer(Rasterizer):
    """Analytic box-filtered coverage in pure PyTorch (CPU, CUDA, MPS; no compilation).

    Args:
        newton_steps: Newton iterations for the nearest point on each cubic (default: 3 for
            float32, 7 for float64).

    Example:
        >>> import torch
        >>> r = TorchRasterizer()
        >>> r(torch.full((1, 4, 2), 5.0), 1.0, (0, 0, 0, 1), (10, 10)).shape
        torch.Size([1, 4, 10, 10])
    """

    name: ClassVar[str] = "torch"
    differentiable: ClassVar[bool] = True
    exact: ClassVar[bool] = True

    def __init__(self, *, newton_steps: int | None = None) -> None:
        self.newton_steps = newton_steps

    def render(self, points: Tensor, widths: Tensor, colors: Tensor, size: tuple[int, int]) -> Tensor:
        """See :meth:`Rasterizer.render`."""
        return rasterize_torch(points, widths, colors, size, newton_steps=self.newton_steps)

    def render_over(
        self,
        points: Tensor,
        widths: Tensor,
        colors: Tensor,
        size: tuple[int, int],
        background: float | Sequence[float] | Tensor = 1.0,
    ) -> Tensor:
        """See :meth:`Rasterizer.render_over`: over a grey level straight from the premultiplied
        canvas (``rgb_premultiplied + (1 − α)·grey``); other backgrounds by :func:`composite`."""
        if isinstance(background, (int, float)) and not isinstance(background, bool):
            return rasterize_torch(
                points, widths, colors, size, newton_steps=self.newton_steps, background=float(background)
            )
        return super().render_over(points, widths, colors, size, background)

    def render_prefixes(
        self,
        points: Tensor,
        widths: Tensor,
        colors: Tensor,
        size: tuple[int, int],
        prefixes: Sequence[int],
        background: float = 1.0,
    ) -> Tensor:
        """See :meth:`Rasterizer.render_prefixes`: one pass, each prefix a snapshot of the canvas."""
        ks = check_prefixes(prefixes, points.shape[1])
        return rasterize_torch(
            points,
            widths,
            colors,
            size,
            newton_steps=self.newton_steps,
            background=float(background),
            prefixes=ks,
        )
