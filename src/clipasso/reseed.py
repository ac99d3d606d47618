"""Re-seeding dead strokes: a callback that moves wasted strokes to the edges no stroke covers yet.

A stroke that finds no useful gradient is wasted: under the ``edges`` objective a stroke far from
every edge shrinks into a dot (its ink only adds error) and stays there; under any objective a
stroke can park on a spot that no edge supports. :class:`Reseed` looks at the strokes every
``every`` steps and moves the dead ones (under ``torch.no_grad()``, editing the points in place)
onto the target's edges that the live strokes leave uncovered.

Definitions (per candidate, canvas ``H × W``, pixels):

* **footprint** of a stroke: the pixels it inks alone, rendered opaque (alpha > 0.5), whatever its
  colour or opacity;
* **edges** ``E``: the target's edge ink (by default the objective's own map when it has one,
  :meth:`EdgeLoss.edge_ink <clipasso.losses.EdgeLoss.edge_ink>`, else
  :func:`clipasso.xdog.edge_ink`), inside the mask dilated by ``tol`` when the target has a mask;
* a stroke is **dead** when it is *collapsed*, its curve (sampled at 16 points per segment) shorter
  than ``min_length``, or *off the edges*, less than ``min_on_edges`` of its footprint within
  ``tol`` of ``E``. The gradient is not a criterion: its scale is the objective's and changes over
  the run, while both tests are in pixels;
* **residual**: the edge pixels farther than ``tol`` from every live stroke's footprint.

Each dead stroke in turn (in stroke order) goes to the residual's densest place: the argmax of the
residual, weighted by the target's :func:`~clipasso.init.edges.silhouette_relevance` (1 along the
outline of what differs from the background colour, 0.25 elsewhere, as the ``edges`` initializer
weights its starts; ``relevance="uniform"``: unweighted), blurred by a Gaussian of ``reach / 2``
(ties: the first in row-major order). The residual
pixels within ``reach`` of it are fitted by a cubic Bézier (least squares over the parameter of
their projection on the principal axis, pulled slightly towards the straight segment along it),
split into the stroke's ``k`` segments; those pixels then count as covered, so the next dead stroke
goes elsewhere. When fewer than ``min_residual`` residual pixels are within ``reach`` of the best
place, the edges are covered and the remaining dead strokes stay where they are.

Nothing is random, so a run stays deterministic given its seed, and the callback keeps no state
that changes results: its decisions depend only on the strokes, the target and the step, so a run
resumed from a checkpoint re-seeds exactly as the uninterrupted run. The optimiser's moments of a
re-seeded stroke are reset (they are part of the optimiser's state, which the checkpoint holds):
its first moment (Adam's ``exp_avg``, or any other per-point state) is set to 0, because the old
direction means nothing at the new place; its second moments (``exp_avg_sq``, ``max_exp_avg_sq``)
are set to the mean of the candidate's live strokes, so its first steps are scaled like its
neighbours'. A dead stroke's own second moment is near 0 (as is a zeroed one): Adam's first steps
would then be ``m / sqrt(v) ≈ (1 − β1^k) / sqrt(1 − β2^k)`` times ``lr``, 3 to 6.5 ``lr`` over the
first tens of steps (a fresh start without the bias correction, which is spent at step ``k``
of the stroke but not of the tensor), where a settled stroke moves by at most ``lr``.

``SketchConfig.reseed_every = K`` (``clipasso sketch --reseed-every K``) adds the callback to a run,
with ``SketchConfig.reseed_options`` as its keyword options.

Example:
    >>> import torch
    >>> from clipasso import Sketcher
    >>> from clipasso.data import sample_tensor
    >>> sk = Sketcher(loss="edges", initializer="random", num_strokes=4, iterations=20, image_size=96,
    ...               num_sketches=1, device="cpu", reseed_every=10)
    >>> result = sk.sketch(sample_tensor("house", size=96)[0])
    >>> result.strokes.num_strokes
    4
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from .callbacks import Callback, SketchState
from .errors import InputError
from .init.edges import silhouette_relevance
from .metrics import binary_dilate
from .xdog import edge_ink, gaussian_blur

if TYPE_CHECKING:
    from .render import Rasterizer
    from .sketcher import Sketcher

__all__ = [
    "Reseed",
    "ReseedEvent",
    "curve_length",
    "fit_stroke",
    "stroke_footprints",
]

_SAMPLES_PER_SEGMENT = 16


def _bernstein(t: Tensor) -> Tensor:
    """``[M] -> [M, 4]`` cubic Bernstein weights."""
    s = 1.0 - t
    return torch.stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=-1)


def curve_length(points: Tensor, samples_per_segment: int = _SAMPLES_PER_SEGMENT) -> Tensor:
    """Length of cubic Bézier strokes, as the polyline through points sampled along each segment.

    Args:
        points: ``[..., 3k + 1, 2]`` control points.
        samples_per_segment: Sample intervals per segment.

    Returns:
        ``[...]`` lengths (in the points' units).

    Example:
        >>> curve_length(torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])).item()
        3.0
    """
    p = points.shape[-2]
    if p < 4 or (p - 1) % 3:
        raise InputError(f"strokes need 3k + 1 control points, got {p}")
    k = (p - 1) // 3
    t = torch.linspace(0.0, 1.0, samples_per_segment + 1, device=points.device, dtype=points.dtype)
    basis = _bernstein(t)  # [S, 4]
    segments = torch.stack([points[..., 3 * j : 3 * j + 4, :] for j in range(k)], dim=-3)  # [..., k, 4, 2]
    curve = basis @ segments  # [..., k, S, 2]
    return (curve.diff(dim=-2).norm(dim=-1)).sum(dim=(-2, -1))


def stroke_footprints(
    rasterizer: Rasterizer, points: Tensor, widths: Tensor, size: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """The pixels each stroke inks on its own, drawn opaque: bool ``[N, H, W]``.

    Args:
        rasterizer: Any :class:`~clipasso.render.Rasterizer`.
        points: ``[N, P, 2]`` one sketch's control points (pixels).
        widths: ``[N]`` half-widths.
        size: ``(H, W)``.
        threshold: Alpha above which a pixel is inked.
    """
    n = points.shape[0]
    black = torch.tensor([0.0, 0.0, 0.0, 1.0], device=points.device, dtype=points.dtype).expand(n, 1, 4)
    with torch.no_grad():
        rgba = rasterizer(points[:, None].detach(), widths[:, None].detach(), black, size)
    return rgba[:, 3] > threshold


def fit_stroke(pixels: Tensor, num_segments: int = 1, straightness: float = 1e-3) -> Tensor:
    """A stroke through a cloud of pixels: a least-squares cubic Bézier along its principal axis.

    The pixels are projected on their principal axis; their normalised projections ``t`` in
    ``[0, 1]`` are the curve parameters, and the control points minimise
    ``Σ |B(t_i) − q_i|² + λ M Σ_j |P_j − S_j|²``, with ``S`` the straight segment between the extreme
    projections (points at 0, 1/3, 2/3, 1), ``M`` the number of pixels and ``λ = straightness`` (it
    keeps the fit stable when the pixels bunch up). The cubic is then split by de Casteljau into
    ``num_segments`` equal-parameter segments.

    Args:
        pixels: ``[M, 2]`` points (x, y), M >= 1.
        num_segments: k, the segments of the result.
        straightness: λ >= 0.

    Returns:
        ``[3k + 1, 2]`` control points.

    Example:
        >>> q = torch.stack([torch.arange(11.0), torch.full((11,), 5.0)], dim=1)  # a horizontal line
        >>> fit_stroke(q).round().tolist()
        [[0.0, 5.0], [3.0, 5.0], [7.0, 5.0], [10.0, 5.0]]
    """
    if pixels.dim() != 2 or pixels.shape[1] != 2 or pixels.shape[0] < 1:
        raise InputError(f"pixels must be [M, 2] with M >= 1, got {tuple(pixels.shape)}")
    q = pixels.to(torch.float64)
    centre = q.mean(dim=0)
    if q.shape[0] >= 2:
        cov = (q - centre).T @ (q - centre)
        axis = torch.linalg.eigh(cov).eigenvectors[:, -1]
    else:
        axis = torch.tensor([1.0, 0.0], dtype=torch.float64)
    proj = (q - centre) @ axis
    lo, hi = proj.min(), proj.max()
    ends = torch.stack([centre + lo * axis, centre + hi * axis])
    frac = torch.tensor([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0], dtype=torch.float64)[:, None]
    straight = ends[0] + frac * (ends[1] - ends[0])  # [4, 2]
    if float(hi - lo) > 0:
        t = (proj - lo) / (hi - lo)
        basis = _bernstein(t)  # [M, 4]
        lam = float(straightness) * q.shape[0]
        eye = torch.eye(4, dtype=torch.float64)
        ctrl = torch.linalg.solve(basis.T @ basis + lam * eye, basis.T @ q + lam * straight)
    else:
        ctrl = straight
    return _split(ctrl, num_segments).to(pixels.dtype)


def _split(ctrl: Tensor, k: int) -> Tensor:
    """A cubic ``[4, 2]`` as ``k`` cubics of equal parameter span, ``[3k + 1, 2]`` (de Casteljau)."""
    out = [ctrl[0]]
    rest = ctrl
    for j in range(k, 1, -1):  # cut off 1/j of what is left, k - 1 times
        u = 1.0 / j
        a, b, c, d = rest
        ab, bc, cd = a + u * (b - a), b + u * (c - b), c + u * (d - c)
        abc, bcd = ab + u * (bc - ab), bc + u * (cd - bc)
        mid = abc + u * (bcd - abc)
        out += [ab, abc, mid]
        rest = torch.stack([mid, bcd, cd, d])
    out += [rest[1], rest[2], rest[3]]
    return torch.stack(out)


@dataclass(frozen=True)
class ReseedEvent:
    """One re-seeded stroke (for inspection; see :attr:`Reseed.events`).

    Attributes:
        iteration: The step after which it was moved (the next step draws it at its new place).
        candidate: Its candidate's index in the batch.
        stroke: Its index.
        reason: ``"collapsed"`` or ``"off-edges"``.
        site: ``(x, y)`` of the place it went to (pixels).
    """

    iteration: int
    candidate: int
    stroke: int
    reason: str
    site: tuple[float, float]


class Reseed(Callback):
    """Every ``every`` steps, move dead strokes onto the target's uncovered edges (module docstring).

    Args:
        every: Steps between re-seeding rounds (>= 1). A round runs after step ``i`` when
            ``(i + 1) % every == 0``, so step ``i + 1`` (an evaluation step whenever ``every`` is a
            multiple of ``eval_every``) draws the moved strokes.
        until: The last step (``i + 1``) a round may take place; None: ``iterations - every``, so a
            moved stroke gets at least ``every`` steps to settle.
        min_length: A stroke shorter than this (pixels) is collapsed.
        min_on_edges: A stroke with a smaller share of its footprint near the edges is off them.
        tol: "Near" in pixels: an edge pixel within ``tol`` of a footprint is covered.
        reach: Radius (pixels) of the place a dead stroke goes to, and so its largest length is
            ``2 · reach``.
        min_residual: Fewer residual pixels than this within ``reach`` of the best place: stop.
        edges: A function ``target [1, 3, H, W] -> [1, 1, H, W]`` (1 on edges); None: the loss's
            ``edge_ink`` if it has one, else :func:`clipasso.xdog.edge_ink`.
        relevance: ``"silhouette"`` (default): weight the residual by
            :func:`~clipasso.init.edges.silhouette_relevance` when choosing a place, so the object's
            outline is drawn before its inner edges; ``"uniform"``: every edge pixel alike.

    Attributes:
        events: The :class:`ReseedEvent` s of the current run (cleared at ``on_start``; after a
            resume only those since the resume: they are a log, not state).
    """

    def __init__(
        self,
        every: int = 50,
        *,
        until: int | None = None,
        min_length: float = 4.0,
        min_on_edges: float = 0.25,
        tol: float = 2.0,
        reach: float = 12.0,
        min_residual: int = 12,
        edges: Callable[[Tensor], Tensor] | None = None,
        relevance: Literal["silhouette", "uniform"] = "silhouette",
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InputError(f"every must be a positive integer, got {every!r}")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 0):
            raise InputError(f"until must be None or a non-negative integer, got {until!r}")
        for name, value in (("min_length", min_length), ("tol", tol)):
            if not value >= 0:
                raise InputError(f"{name} must be >= 0, got {value}")
        if not reach > 0:
            raise InputError(f"reach must be > 0, got {reach}")
        if not 0 <= min_on_edges <= 1:
            raise InputError(f"min_on_edges must be in [0, 1], got {min_on_edges}")
        if isinstance(min_residual, bool) or not isinstance(min_residual, int) or min_residual < 1:
            raise InputError(f"min_residual must be a positive integer, got {min_residual!r}")
        if relevance not in ("silhouette", "uniform"):
            raise InputError(f"relevance must be 'silhouette' or 'uniform', got {relevance!r}")
        self.every = every
        self.until = until
        self.min_length = float(min_length)
        self.min_on_edges = float(min_on_edges)
        self.tol = float(tol)
        self.reach = float(reach)
        self.min_residual = min_residual
        self.edges = edges
        self.relevance = relevance
        self.events: list[ReseedEvent] = []
        self._edge_maps: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"Reseed(every={self.every}, until={self.until}, min_length={self.min_length}, "
            f"min_on_edges={self.min_on_edges}, tol={self.tol}, reach={self.reach}, "
            f"min_residual={self.min_residual}, relevance={self.relevance!r})"
        )

    # ------------------------------------------------------------------ hooks

    def on_start(self, sketcher: Sketcher, state: SketchState) -> None:
        self.events = []
        self._edge_maps = {}

    def on_step(self, sketcher: Sketcher, state: SketchState) -> None:
        step = state.iteration + 1
        until = self.until if self.until is not None else sketcher.config.iterations - self.every
        if step % self.every or step > until or state.target is None:
            return
        self.reseed(sketcher, state, step - 1)

    # ------------------------------------------------------------------ the rule

    def edge_map(self, sketcher: Sketcher, state: SketchState, b: int = 0) -> tuple[Tensor, Tensor]:
        """The target's edges ``E``, bool ``[H, W]``, and the weights of places, ``[H, W]`` (cached
        for the run's target); in a batch of images (one target per candidate), candidate ``b``'s."""
        target = state.target
        assert target is not None
        image, mask = target.image, target.mask
        row = 0
        if image.shape[0] > 1:
            row = b
            image = image[b : b + 1]
            if mask is not None and mask.shape[0] > 1:
                mask = mask[b : b + 1]
        cached = self._edge_maps.get(row)
        if cached is not None and cached[0] is target.image:
            return cached[1], cached[2]
        fn = self.edges if self.edges is not None else getattr(sketcher.loss, "edge_ink", None)
        if fn is None:
            fn = edge_ink
        with torch.no_grad():
            e = fn(image)[0, 0] > 0.5
        if mask is not None:
            e = e & binary_dilate(mask[0, 0].to(e.device), self.tol)
        if self.relevance == "silhouette":
            weight = silhouette_relevance(image).to(e.device)
        else:
            weight = torch.ones(e.shape, device=e.device)
        self._edge_maps[row] = (target.image, e, weight)
        return e, weight

    def dead(self, footprints: Tensor, lengths: Tensor, near_edges: Tensor) -> list[str | None]:
        """Which of N strokes are dead and why: ``"collapsed"``, ``"off-edges"`` or None (live).

        Args:
            footprints: Bool ``[N, H, W]``.
            lengths: ``[N]`` curve lengths.
            near_edges: Bool ``[H, W]``: the edges dilated by ``tol``.
        """
        area = footprints.flatten(1).sum(dim=1).to(torch.float32)
        on = (footprints & near_edges).flatten(1).sum(dim=1).to(torch.float32)
        share = torch.where(area > 0, on / area.clamp_min(1.0), torch.zeros_like(area))
        reasons: list[str | None] = []
        for length, s in zip(lengths.tolist(), share.tolist()):
            if length < self.min_length:
                reasons.append("collapsed")
            elif s < self.min_on_edges:
                reasons.append("off-edges")
            else:
                reasons.append(None)
        return reasons

    def reseed(self, sketcher: Sketcher, state: SketchState, iteration: int) -> list[ReseedEvent]:
        """One round over the active candidates; returns (and logs) the moved strokes."""
        strokes = state.strokes
        h, w = strokes.canvas_size
        moved: list[ReseedEvent] = []
        for b in state.active:
            edges, weight = self.edge_map(sketcher, state, b)
            edges, weight = edges.to(strokes.points.device), weight.to(strokes.points.device)
            near_edges = binary_dilate(edges, self.tol)
            points = strokes.points.detach()[b]  # [N, P, 2]
            foot = stroke_footprints(sketcher.rasterizer, points, strokes.widths.detach()[b], (h, w))
            reasons = self.dead(foot, curve_length(points), near_edges)
            dead = [n for n, r in enumerate(reasons) if r is not None]
            if not dead:
                continue
            live = [n for n, r in enumerate(reasons) if r is None]
            inked = foot[live].any(dim=0) if live else torch.zeros_like(edges)
            residual = edges & ~binary_dilate(inked, self.tol)
            new_points = points.clone()
            done: list[int] = []
            for n in dead:
                placed = self._place(residual, weight, points.shape[1], (h, w))
                if placed is None:
                    break
                ctrl, used, site = placed
                residual = residual & ~used
                new_points[n] = ctrl.to(new_points)
                done.append(n)
                moved.append(ReseedEvent(iteration, b, n, str(reasons[n]), site))
            if done:
                with torch.no_grad():
                    strokes.points[b, done] = new_points[done]
                self._reset_moments(state, b, done, live)
        self.events.extend(moved)
        return moved

    def _place(
        self, residual: Tensor, weight: Tensor, num_points: int, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, tuple[float, float]] | None:
        """The next stroke on ``residual``: (control points, the pixels it covers, its site)."""
        if not bool(residual.any()):
            return None
        h, w = size
        density = gaussian_blur((residual.to(torch.float32) * weight)[None, None], self.reach / 2.0)[0, 0]
        flat = int(torch.argmax(density.flatten()))
        r, c = divmod(flat, w)
        rows = torch.arange(h, device=residual.device, dtype=torch.float32)[:, None]
        cols = torch.arange(w, device=residual.device, dtype=torch.float32)[None, :]
        disc = (rows - r) ** 2 + (cols - c) ** 2 <= self.reach**2
        used = residual & disc
        if int(used.sum()) < self.min_residual:
            return None
        yx = used.nonzero().to(torch.float32)  # [M, 2] (row, col), row-major order
        ctrl = fit_stroke(yx.flip(1) + 0.5, (num_points - 1) // 3)  # pixel centres, (x, y)
        return ctrl, used, (c + 0.5, r + 0.5)

    @staticmethod
    def _reset_moments(state: SketchState, b: int, moved: list[int], live: list[int]) -> None:
        _reset_moments_of(state, b, moved, live)


def _reset_moments_of(state: SketchState, b: int, moved: list[int], live: list[int]) -> None:
    """Fresh optimiser moments for strokes ``moved`` of candidate ``b``: first moments 0, second
    moments the mean of the ``live`` strokes' (see the module notes)."""
    optimizer = state.optimizer
    if optimizer is None:
        return
    param = state.strokes.points
    slots: dict[str, Any] = optimizer.state.get(param, {})
    with torch.no_grad():
        for key, value in slots.items():
            if not isinstance(value, Tensor) or value.shape != param.shape:
                continue
            if key.endswith("exp_avg_sq"):  # exp_avg_sq, max_exp_avg_sq: the live strokes' mean
                fill = value[b, live].mean() if live else value.new_zeros(())
                value[b, moved] = fill
            else:  # exp_avg, momentum buffers: no direction at the new place
                value[b, moved] = 0.0
