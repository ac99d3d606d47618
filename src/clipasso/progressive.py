"""Progressive (sequential) drawing: strokes are added one by one, each where the sketch so far
explains the target least, while every stroke drawn so far keeps optimising.

``SketchConfig.schedule="progressive"`` (``--schedule progressive``) adds a
:class:`ProgressiveDrawing` callback to each run. At step 0 only the first ``start`` strokes are
drawn; the others are hidden (opacity 0, their gradients zeroed, so the optimiser leaves them
alone). Every ``every`` steps the next hidden stroke is placed and shown: on the target's edge
pixels that no drawn stroke covers yet (the :class:`~clipasso.reseed.Reseed` residual), at the
densest place of that residual weighted by the initializer's sampling distribution (the saliency
map with the CLIP objective, the silhouette relevance with the edge objective), fitted by a cubic
Bézier, with fresh optimiser moments. When no uncovered edges are left, the stroke is shown where it
is (at its initial place). By default all strokes are drawn by half of the run, so the last one
still gets the other half to settle. This is "draw a stroke, then decide where the next one goes";
the order of the strokes is the order they were drawn in. A deviation from the paper, which draws
all strokes at once.

The callback keeps no state that changes results: a stroke is hidden exactly when its opacity is
0, and its decisions depend only on the strokes, the target and the step, so a run resumed from a
checkpoint draws exactly as an uninterrupted one.

Example:
    >>> import torch
    >>> from clipasso import Sketcher
    >>> from clipasso.data import sample_tensor
    >>> sk = Sketcher(loss="edges", initializer="random", num_strokes=4, iterations=12, image_size=96,
    ...               num_sketches=1, device="cpu", schedule="progressive")
    >>> result = sk.sketch(sample_tensor("house", size=96)[0])
    >>> float(result.strokes.colors[0, :, 3].min())  # every stroke drawn by the end
    1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .callbacks import Callback, SketchState
from .errors import InputError
from .metrics import binary_dilate
from .reseed import Reseed, _reset_moments_of, stroke_footprints

if TYPE_CHECKING:
    from .sketcher import Sketcher

__all__ = ["ProgressiveDrawing"]


class ProgressiveDrawing(Callback):
    """Adds the strokes one by one during the run (see the module notes).

    Args:
        start: Strokes drawn from step 0 (at least 1).
        every: Steps between two added strokes; None: all strokes drawn by ``until``.
        until: Fraction of the run by which every stroke is drawn (when ``every`` is None).
        tol, reach, min_residual: Placement options, as :class:`~clipasso.reseed.Reseed`'s.
    """

    def __init__(
        self,
        start: int = 1,
        every: int | None = None,
        until: float = 0.5,
        *,
        tol: float = 2.0,
        reach: float = 12.0,
        min_residual: int = 12,
    ) -> None:
        if isinstance(start, bool) or not isinstance(start, int) or start < 1:
            raise InputError(f"start must be a positive integer, got {start!r}")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise InputError(f"every must be None or a positive integer, got {every!r}")
        if not 0.0 < until <= 1.0:
            raise InputError(f"until must be in (0, 1], got {until!r}")
        self.start = start
        self.every = every
        self.until = float(until)
        self._placer = Reseed(1, tol=tol, reach=reach, min_residual=min_residual)

    def __repr__(self) -> str:
        return f"ProgressiveDrawing(start={self.start}, every={self.every}, until={self.until})"

    def interval(self, iterations: int, num_strokes: int) -> int:
        """Steps between two added strokes in a run of ``iterations`` steps and ``num_strokes``."""
        if self.every is not None:
            return self.every
        hidden = max(num_strokes - self.start, 1)
        return max(1, int(self.until * iterations) // hidden)

    @staticmethod
    def hidden(state: SketchState) -> Tensor:
        """Bool ``[B, N]``: the strokes not drawn yet (opacity exactly 0)."""
        return state.strokes.colors.detach()[..., 3] == 0

    # ------------------------------------------------------------------ hooks

    def on_start(self, sketcher: Sketcher, state: SketchState) -> None:
        self._placer.on_start(sketcher, state)
        if state.iteration != 0:  # a resumed run: which strokes are drawn is in its strokes
            return
        with torch.no_grad():
            state.strokes.colors[:, self.start :, 3] = 0.0

    def after_backward(self, sketcher: Sketcher, state: SketchState) -> None:
        hidden = self.hidden(state)  # [B, N]; masked in place, with no host sync in the loop
        for param in (state.strokes.points, state.strokes.colors):
            if param.grad is not None:
                mask = hidden.reshape(*hidden.shape, *([1] * (param.grad.dim() - 2)))
                param.grad.masked_fill_(mask, 0.0)

    def on_step(self, sketcher: Sketcher, state: SketchState) -> None:
        step = state.iteration + 1
        every = self.interval(sketcher.config.iterations, state.strokes.num_strokes)
        if step % every == 0 and state.target is not None:
            self.add(sketcher, state)

    # ------------------------------------------------------------------ the rule

    def add(self, sketcher: Sketcher, state: SketchState) -> list[tuple[int, int]]:
        """Draw the next hidden stroke of every running candidate; returns ``(candidate, stroke)``."""
        strokes = state.strokes
        h, w = strokes.canvas_size
        hidden = self.hidden(state)
        dev = strokes.points.device
        added: list[tuple[int, int]] = []
        for b in state.active:
            edges, weight = self._placer.edge_map(sketcher, state, b)
            edges, weight = edges.to(dev), weight.to(dev)
            todo = [n for n in range(strokes.num_strokes) if bool(hidden[b, n])]
            if not todo:
                continue
            n = todo[0]
            drawn = [m for m in range(strokes.num_strokes) if not bool(hidden[b, m])]
            points = strokes.points.detach()[b]
            foot = stroke_footprints(
                sketcher.rasterizer, points[drawn], strokes.widths.detach()[b, drawn], (h, w)
            )
            inked = foot.any(dim=0) if drawn else torch.zeros_like(edges)
            residual = edges & ~binary_dilate(inked, self._placer.tol)
            place_weight = _distribution(state, b, weight)
            placed = self._placer._place(residual, place_weight, points.shape[1], (h, w))
            with torch.no_grad():
                if placed is not None:
                    strokes.points[b, n] = placed[0].to(strokes.points)
                strokes.colors[b, n, 3] = 1.0
            _reset_moments_of(state, b, [n], drawn)
            added.append((b, n))
        return added


def _distribution(state: SketchState, b: int, fallback: Tensor) -> Tensor:
    """The initializer's sampling distribution of candidate ``b`` (``state.extra["inits"]``), scaled
    to a maximum of 1, or ``fallback``."""
    inits: Any = state.extra.get("inits")
    if inits is None or b >= len(inits) or getattr(inits[b], "distribution", None) is None:
        return fallback
    d = inits[b].distribution.to(fallback.device, torch.float32).reshape(fallback.shape)
    top = float(d.max())
    return d / top if top > 0 else fallback
