"""Pure-PyTorch differentiable rasterizer for cubic Bézier strokes (the default backend).

Each pixel gets the box-filtered coverage of the inked set ``{x : dist(x, curve) ≤ r}`` (what
diffvg's supersampling estimates), computed analytically:

1. **Sparse candidate pairs (no grad).** For every stroke a bounding-box patch (control-point box
   grown by ``r + 1``; one common patch size per size class so all strokes of a class are handled
   by one vectorised computation) is tested against a polyline of the curve. Only (stroke, pixel)
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
4. **Compositing.** Strokes are drawn in order with "over" by a custom autograd function that
   walks the strokes once forward and once backward, saving only the canvas values under each
   stroke's pixels (``[pairs, 4]``), never a per-stroke canvas.

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
_CHORD_STEPS = (4, 8, 16, 32, 64)


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
    """Position, first and second derivative of cubics ``coef [A, 8]`` at ``t [A]`` (each ``[A, 2]``)."""
    a3, a2, a1, a0 = coef[:, 0:2], coef[:, 2:4], coef[:, 4:6], coef[:, 6:8]
    tt = t.unsqueeze(-1)
    q = ((a3 * tt + a2) * tt + a1) * tt + a0
    dq = (3.0 * a3 * tt + 2.0 * a2) * tt + a1
    ddq = 6.0 * a3 * tt + 2.0 * a2
    return q, dq, ddq


@torch.no_grad()
def _newton(coef: Tensor, centre: Tensor, t: Tensor, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Refine ``t`` towards the nearest point of each cubic to ``centre``.

    The first iterations are guarded (the best iterate by distance is kept, so a bad step never
    makes things worse); the last one or two are plain Newton steps from that best iterate, taken
    only when they are small: near the optimum ``d²`` is flat to rounding and cannot rank iterates,
    while ``t`` still converges quadratically (the gradient needs ``t*`` to full precision).

    Args:
        coef: ``[A, 8]`` power-basis coefficients; ``centre``: ``[A, 2]``; ``t``: ``[A]`` start.
        steps: Total Newton iterations.

    Returns:
        ``(t [A], squared distance [A], ∂g/∂t [A])`` at the final parameter.
    """
    local = coef.clone()
    local[:, 6:8] -= centre  # evaluate B(t) − c directly, without cancellation
    tiny = torch.finfo(t.dtype).tiny
    polish = min(steps, 2 if t.dtype == torch.float64 else 1)

    def step(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w, dq, ddq = _eval(local, t)
        speed2 = (dq * dq).sum(-1)
        h = speed2 + (ddq * w).sum(-1)
        denom = torch.where(h > 1e-3 * speed2, h, speed2) + tiny
        return (w * w).sum(-1), h, (dq * w).sum(-1) / denom

    best_t = t
    best_d2 = torch.full_like(t, math.inf)
    for _ in range(steps - polish + 1):
        d2, _h, delta = step(t)
        better = d2 < best_d2
        best_t = torch.where(better, t, best_t)
        best_d2 = torch.where(better, d2, best_d2)
        t = (t - delta).clamp(0.0, 1.0)
    t = best_t
    for _ in range(polish):
        _d2, _h, delta = step(t)
        t = torch.where(delta.abs() < 0.05, (t - delta).clamp(0.0, 1.0), t)
    d2, h, _delta = step(t)
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
def _search(
    coef: Tensor,
    radius: Tensor,
    margin: Tensor,
    ox: Tensor,
    oy: Tensor,
    sh: int,
    sw: int,
    chords: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Candidate (stroke, pixel, segment) triples of one size class, with a chord-based initial ``t``.

    Every segment whose polyline comes within reach of a pixel gives its own triple (the nearest
    chord of that segment), so a pixel near a join between segments is tested against each of
    them; the triples of one (stroke, pixel) come out consecutively, segments in order.

    Args:
        coef: ``[M, k, 8]`` detached power-basis coefficients.
        radius: ``[M]`` half-widths; ``margin``: ``[M]`` chord/curve deviation bound.
        ox, oy: ``[M]`` integer patch origins (column, row); ``sh, sw``: patch size.
        chords: chords per segment of the search polyline.

    Returns:
        ``(m [A], row [A], col [A], seg [A], t [A])`` of the triples, ``m`` indexing the class.
    """
    m_count, k, _ = coef.shape
    dtype, device = coef.dtype, coef.device
    s = torch.linspace(0.0, 1.0, chords + 1, dtype=dtype, device=device)
    # Horner's rule, elementwise (a matmul's blocking would depend on M, i.e. on the batch)
    c3, c2, c1, c0 = (coef[..., i : i + 2].unsqueeze(-1) for i in (0, 2, 4, 6))  # [M, k, 2, 1]
    cxy = ((c3 * s + c2) * s + c1) * s + c0  # [M, k, 2, c+1]
    cx, cy = cxy[:, :, 0], cxy[:, :, 1]  # [M, k, c+1]
    ax, ay = cx[..., :-1].reshape(m_count, 1, -1), cy[..., :-1].reshape(m_count, 1, -1)  # [M, 1, C]
    dx = (cx[..., 1:] - cx[..., :-1]).reshape(m_count, 1, -1)
    dy = (cy[..., 1:] - cy[..., :-1]).reshape(m_count, 1, -1)
    inv_len2 = 1.0 / (dx * dx + dy * dy).clamp_min(torch.finfo(dtype).tiny)
    n_chords = k * chords
    cut2 = (radius + _HALF_DIAG + margin + 1e-3).square().unsqueeze(-1)  # [M, 1]

    cols = torch.arange(sw, device=device)
    rows = torch.arange(sh, device=device)
    gx = (ox.unsqueeze(-1) + cols).to(dtype) + 0.5  # [M, sw]
    gy = (oy.unsqueeze(-1) + rows).to(dtype) + 0.5  # [M, sh]
    px = gx.unsqueeze(1).expand(m_count, sh, sw).reshape(m_count, -1, 1)  # [M, Q, 1]
    py = gy.unsqueeze(2).expand(m_count, sh, sw).reshape(m_count, -1, 1)
    q_count = sh * sw

    out_m, out_q, out_j, out_l = [], [], [], []
    per_stroke = q_count * n_chords
    m_step = max(1, _SEARCH_BUDGET // max(per_stroke, 1))
    q_step = q_count if per_stroke <= _SEARCH_BUDGET else max(1, _SEARCH_BUDGET // n_chords)
    for m0 in range(0, m_count, m_step):
        m1 = min(m_count, m0 + m_step)
        for q0 in range(0, q_count, q_step):
            q1 = min(q_count, q0 + q_step)
            wx = px[m0:m1, q0:q1] - ax[m0:m1]  # [m, q, C]
            wy = py[m0:m1, q0:q1] - ay[m0:m1]
            lam = ((wx * dx[m0:m1] + wy * dy[m0:m1]) * inv_len2[m0:m1]).clamp_(0.0, 1.0)
            ex = wx.sub_(lam * dx[m0:m1])
            ey = wy.sub_(lam * dy[m0:m1])
            d2 = ex.square_().add_(ey.square_())
            d2min, jc = d2.view(m1 - m0, q1 - q0, k, chords).min(dim=-1)  # [m, q, k]: per segment
            hit = (d2min <= cut2[m0:m1].unsqueeze(-1)).nonzero()
            if hit.shape[0] == 0:
                continue
            hm, hq, hs = hit[:, 0], hit[:, 1], hit[:, 2]
            jj = hs * chords + jc[hm, hq, hs]
            out_m.append(hm + m0)
            out_q.append(hq + q0)
            out_j.append(jj)
            out_l.append(lam[hm, hq, jj])
    if not out_m:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty, empty, torch.zeros(0, dtype=dtype, device=device)
    m = torch.cat(out_m)
    q = torch.cat(out_q)
    j = torch.cat(out_j)
    lam_sel = torch.cat(out_l)
    seg = torch.div(j, chords, rounding_mode="floor")
    t = ((j - seg * chords).to(dtype) + lam_sel) / chords
    row = oy[m] + torch.div(q, sw, rounding_mode="floor")
    col = ox[m] + q % sw
    return m, row, col, seg, t


class _OverComposite(torch.autograd.Function):
    """Composite sparse per-stroke alphas in order with "over" (premultiplied accumulation)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        alpha: Tensor,
        rgb: Tensor,
        pair_stroke: Tensor,
        pair_pixel: Tensor,
        bounds: list[int],
        numel: int,
    ) -> Tensor:
        count = alpha.shape[0]
        u = alpha.new_ones(count, 4)
        u[:, :3] = rgb.index_select(0, pair_stroke)
        canvas = alpha.new_zeros(numel, 4)
        below = alpha.new_empty(count, 4)
        a_col = alpha.unsqueeze(-1)
        for s, e in itertools.pairwise(bounds):
            if s == e:
                continue
            idx = pair_pixel[s:e]
            xp = canvas.index_select(0, idx)
            below[s:e] = xp
            canvas.index_copy_(0, idx, torch.addcmul(xp, a_col[s:e], u[s:e] - xp))
        ctx.save_for_backward(alpha, u, below, pair_stroke, pair_pixel)
        ctx.bounds = bounds  # type: ignore[attr-defined]
        ctx.num_strokes = rgb.shape[0]  # type: ignore[attr-defined]
        return canvas

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        alpha, u, below, pair_stroke, pair_pixel = ctx.saved_tensors
        bounds: list[int] = ctx.bounds
        g_canvas = grad.contiguous().clone()
        d_alpha = torch.zeros_like(alpha)
        d_u = alpha.new_zeros(alpha.shape[0], 3)
        a_col = alpha.unsqueeze(-1)
        for s, e in zip(reversed(bounds[:-1]), reversed(bounds[1:])):
            if s == e:
                continue
            idx = pair_pixel[s:e]
            gp = g_canvas.index_select(0, idx)
            d_alpha[s:e] = (gp * (u[s:e] - below[s:e])).sum(-1)
            d_u[s:e] = gp[:, :3] * a_col[s:e]
            g_canvas.index_copy_(0, idx, gp * (1.0 - a_col[s:e]))
        d_rgb = alpha.new_zeros(ctx.num_strokes, 3).index_add_(0, pair_stroke, d_u)
        return d_alpha, d_rgb, None, None, None, None


class _OverCompositePrefixes(torch.autograd.Function):
    """:class:`_OverComposite` that also returns the canvas after the first ``k`` strokes, for every
    ``k`` in ``snaps`` (strokes are drawn in order, so each prefix is a snapshot of the one pass)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        alpha: Tensor,
        rgb: Tensor,
        pair_stroke: Tensor,
        pair_pixel: Tensor,
        bounds: list[int],
        numel: int,
        snaps: list[int],
    ) -> Tensor:
        count = alpha.shape[0]
        u = alpha.new_ones(count, 4)
        u[:, :3] = rgb.index_select(0, pair_stroke)
        canvas = alpha.new_zeros(numel, 4)
        below = alpha.new_empty(count, 4)
        a_col = alpha.unsqueeze(-1)
        out = alpha.new_zeros(len(snaps), numel, 4)
        where: dict[int, list[int]] = {}
        for j, k in enumerate(snaps):
            where.setdefault(k, []).append(j)
        for i, (s, e) in enumerate(itertools.pairwise(bounds)):
            if s != e:
                idx = pair_pixel[s:e]
                xp = canvas.index_select(0, idx)
                below[s:e] = xp
                canvas.index_copy_(0, idx, torch.addcmul(xp, a_col[s:e], u[s:e] - xp))
            for j in where.get(i + 1, ()):
                out[j] = canvas
        ctx.save_for_backward(alpha, u, below, pair_stroke, pair_pixel)
        ctx.bounds = bounds  # type: ignore[attr-defined]
        ctx.num_strokes = rgb.shape[0]  # type: ignore[attr-defined]
        ctx.where = where  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        alpha, u, below, pair_stroke, pair_pixel = ctx.saved_tensors
        bounds: list[int] = ctx.bounds
        where: dict[int, list[int]] = ctx.where
        g_canvas = grad.new_zeros(grad.shape[1:])
        d_alpha = torch.zeros_like(alpha)
        d_u = alpha.new_zeros(alpha.shape[0], 3)
        a_col = alpha.unsqueeze(-1)
        for i in reversed(range(len(bounds) - 1)):
            for j in where.get(i + 1, ()):  # the prefix of the first i + 1 strokes ends here
                g_canvas += grad[j]
            s, e = bounds[i], bounds[i + 1]
            if s == e:
                continue
            idx = pair_pixel[s:e]
            gp = g_canvas.index_select(0, idx)
            d_alpha[s:e] = (gp * (u[s:e] - below[s:e])).sum(-1)
            d_u[s:e] = gp[:, :3] * a_col[s:e]
            g_canvas.index_copy_(0, idx, gp * (1.0 - a_col[s:e]))
        d_rgb = alpha.new_zeros(ctx.num_strokes, 3).index_add_(0, pair_stroke, d_u)
        return d_alpha, d_rgb, None, None, None, None, None


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

    parts = []
    for (_key, chords), members in classes.items():
        sel = torch.tensor(members, dtype=torch.long, device=device)
        sw = min(w, max(ext_list[i][0] for i in members))
        sh = min(h, max(ext_list[i][1] for i in members))
        margin = 0.75 * d2max[sel] / chords**2
        ox = _patch_origin(lo[sel, 0], sw, w)
        oy = _patch_origin(lo[sel, 1], sh, h)
        m, row, colm, seg, t = _search(cd[sel], rd[sel], margin, ox, oy, sh, sw, chords)
        parts.append((sel[m], row, colm, seg, t))
    if len(parts) == 1:
        g_pair, row, colm, seg, t0 = parts[0]
    else:
        g_pair, row, colm, seg, t0 = (torch.cat(x) for x in zip(*parts))
        order = torch.sort(g_pair, stable=True).indices
        g_pair, row, colm, seg, t0 = g_pair[order], row[order], colm[order], seg[order], t0[order]

    with torch.no_grad():
        centre = torch.stack([colm.to(dtype) + 0.5, row.to(dtype) + 0.5], dim=-1)  # [A, 2]
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
        counts = torch.bincount(strokes_ord, minlength=n)
        bounds = [0, *torch.cumsum(counts, 0).tolist()]

    # Differentiable coverage at the (detached) nearest parameter.
    cf = coef.reshape(n * b * k, 8).index_select(0, seg_id)
    q, dq, _ = _eval(cf, t0)
    diff = centre - q
    g = -(dq * diff).sum(-1)
    delta = (g - g.detach()) * -kappa  # value 0, derivative −(∂g/∂θ)/(∂g/∂t) at interior optima
    diff = diff - dq.detach() * delta.unsqueeze(-1)
    dist2 = (diff * diff).sum(-1)
    dist = dist2.clamp_min(tiny).sqrt()
    nrm = diff.abs() / dist.unsqueeze(-1)
    on_curve = dist2.detach() <= 1e-12
    na = torch.where(on_curve, torch.ones_like(dist), nrm.amax(dim=-1))
    nb = torch.where(on_curve, torch.zeros_like(dist), nrm.amin(dim=-1))
    r = rad.index_select(0, g_pair)
    offset = r - dist
    cov = box_coverage(offset, na, nb)
    cap = kappa == 0  # nearest point at an end or corner: the boundary is a circle of radius r
    if bool(cap.any()):
        cov = cov - torch.where(cap, _cap_correction(offset, na, nb, r), torch.zeros_like(cov))
    if bool((rd < _HALF_DIAG).any()):  # thin strokes: subtract the far side of the band
        cov = cov - box_coverage(-r - dist, na, nb)
    cov = cov.clamp(0.0, 1.0)
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
        snaps = _OverCompositePrefixes.apply(alpha, col[:, :3], pair_g, pixel, bounds, b * h * w, prefixes)
        grey = snaps.new_tensor(float(background))
        over = torch.addcmul(snaps[..., :3], 1.0 - snaps[..., 3:], grey)  # [K, B*H*W, 3]
        return over.view(len(prefixes), b, h, w, 3).permute(1, 0, 4, 2, 3).to(out_dtype)
    canvas = _OverComposite.apply(alpha, col[:, :3], pair_g, pixel, bounds, b * h * w)
    if background is not None:  # premultiplied over a grey: no round trip through straight alpha
        over = torch.addcmul(canvas[:, :3], 1.0 - canvas[:, 3:], canvas.new_tensor(float(background)))
        return over.view(b, h, w, 3).permute(0, 3, 1, 2).to(out_dtype)
    canvas = canvas.view(b, h, w, 4).permute(0, 3, 1, 2)
    a_out = canvas[:, 3:]
    rgb = torch.where(a_out > 0, canvas[:, :3] / a_out.clamp_min(tiny), torch.zeros_like(canvas[:, :3]))
    return torch.cat([rgb, a_out], dim=1).to(out_dtype)


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
