"""What :meth:`clipasso.Sketcher.sketch` returns."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ._io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from .config import SketchConfig
    from .image import Target
    from .init.base import InitResult
    from .strokes import StrokeSet

__all__ = ["Candidate", "LossHistory", "SketchResult"]


@dataclass
class LossHistory:
    """Per-term loss values of one candidate.

    Attributes:
        train: ``{term: [value per step]}`` of the augmented training objective (plus ``"total"``).
        eval_iterations: The steps at which evaluations happened.
        eval: ``{term: [value per evaluation]}`` of the un-augmented objective (plus ``"total"``).
    """

    train: dict[str, list[float]] = field(default_factory=dict)
    eval_iterations: list[int] = field(default_factory=list)
    eval: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Candidate:
    """One sketch of a best-of-N run.

    Attributes:
        strokes: Its best strokes (the ones that were evaluated), ``B = 1``, on the CPU.
        best_loss: Its best un-augmented evaluation loss (lower is better).
        seed: The seed it was initialised and augmented with.
        best_iteration: The step whose strokes scored ``best_loss``.
        stop_iteration: The step at which it stopped (early stop or the last step).
        history: Its loss history.
        snapshots: ``[(iteration, points [N, P, 2])]`` at every evaluation.
        init: The initializer's output (maps for figures), on the CPU.
    """

    strokes: StrokeSet
    best_loss: float
    seed: int
    best_iteration: int
    stop_iteration: int
    history: LossHistory
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)
    init: InitResult | None = None

    @property
    def score(self) -> float:
        """Deprecated name of :attr:`best_loss`."""
        warnings.warn(
            "Candidate.score is deprecated; use Candidate.best_loss", DeprecationWarning, stacklevel=2
        )
        return self.best_loss


@dataclass
class SketchResult:
    """The outcome of a sketch run: the winner, every candidate, the target and timings.

    Example:
        >>> # result = Sketcher().sketch("cat.png")
        >>> # result.save_svg("cat.svg"); result.save_png("cat.png", scale=2)
    """

    candidates: list[Candidate]
    best_index: int
    target: Target
    config: SketchConfig
    timings: dict[str, float] = field(default_factory=dict)
    rasterizer: Any = "torch"
    #: The winner's un-augmented evaluation loss of every prefix ``k = 0 .. N`` (``k = 0``: the blank
    #: canvas), where computed (nested or automatic runs; :meth:`clipasso.Sketcher.loss_curve`).
    curve: list[float] | None = None
    #: The importance order of the winner's strokes (indices into the strokes as optimised, most
    #: important first), where computed (:meth:`clipasso.Sketcher.order_strokes`); the strokes of
    #: this result are already in that order.
    stroke_order: list[int] | None = None
    #: The stroke count chosen by ``num_strokes="auto"`` (this result holds that prefix; the whole
    #: ``auto_max_strokes`` run is :attr:`full`).
    auto_strokes: int | None = None
    #: For a prefix or an automatic count: the result it was taken from.
    full: SketchResult | None = None

    @property
    def best(self) -> Candidate:
        """The winning candidate."""
        return self.candidates[self.best_index]

    @property
    def strokes(self) -> StrokeSet:
        """The winning strokes (``B = 1``)."""
        return self.best.strokes

    @property
    def best_loss(self) -> float:
        """The winner's best un-augmented evaluation loss."""
        return self.best.best_loss

    @property
    def best_iteration(self) -> int:
        return self.best.best_iteration

    @property
    def history(self) -> LossHistory:
        """The loss history of the winner."""
        return self.best.history

    @property
    def init(self) -> InitResult | None:
        """The winner's initialisation (relevance map, edges, distribution, chosen pixels)."""
        return self.best.init

    def prefix(self, k: int) -> SketchResult:
        """The same run with every candidate cut to its first ``k`` strokes (render, save_svg,
        save_png work on it); :attr:`full` is this result, the curve is kept.

        Raises:
            InputError: ``k`` is not in ``1 .. N``.
        """
        from dataclasses import replace

        from .errors import InputError

        n = self.strokes.num_strokes
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise InputError(f"a prefix has 1 to {n} strokes, got {k!r}")
        cut = [
            replace(c, strokes=c.strokes.subset(range(k)), snapshots=[(it, p[:k]) for it, p in c.snapshots])
            for c in self.candidates
        ]
        return replace(self, candidates=cut, full=self, auto_strokes=None)

    def reordered(self, order: list[int]) -> SketchResult:
        """The same run with the winner's strokes in ``order`` (a permutation of ``0 .. N-1``)."""
        from dataclasses import replace

        from .errors import InputError

        n = self.strokes.num_strokes
        if sorted(order) != list(range(n)):
            raise InputError(f"a stroke order must be a permutation of 0..{n - 1}, got {order}")
        cands = list(self.candidates)
        best = cands[self.best_index]
        cands[self.best_index] = replace(
            best,
            strokes=best.strokes.subset(order),
            snapshots=[(it, p[order]) for it, p in best.snapshots],
        )
        return replace(self, candidates=cands, stroke_order=list(order))

    def svg(self, scale: float = 1.0) -> str:
        """The winning sketch as SVG text (canvas scaled by ``scale``)."""
        strokes = self.strokes if scale == 1.0 else self.strokes.scaled(scale)
        return strokes.to_svg()

    def render(
        self, scale: float = 1.0, background: float = 1.0, *, size: int | tuple[int, int] | None = None
    ) -> Tensor:
        """The winning sketch rendered at ``scale`` × the canvas (or at ``size``), ``[1, 3, H, W]``.

        Widths scale with the canvas, as in the reference's 2× export.
        """
        strokes = self.strokes if scale == 1.0 else self.strokes.scaled(scale)
        with torch.no_grad():
            return strokes.render(size=size, background=background, backend=self.rasterizer)

    def save_svg(self, path: str | os.PathLike[str], scale: float = 1.0) -> Path:
        """Write the winning SVG atomically."""
        return atomic_write_text(path, self.svg(scale))

    def save_png(self, path: str | os.PathLike[str], scale: float = 2.0) -> Path:
        """Write the winning sketch as a PNG rendered at ``scale`` × (default 2×, as the reference)."""
        return save_png(self.render(scale)[0], path)

    def summary(self) -> dict[str, Any]:
        """Scores and timings as plain data (for JSON)."""
        return {
            "best_index": self.best_index,
            "best_loss": self.best_loss,
            "best_iteration": self.best_iteration,
            "candidates": [
                {
                    "seed": c.seed,
                    "best_loss": c.best_loss,
                    "best_iteration": c.best_iteration,
                    "stop_iteration": c.stop_iteration,
                }
                for c in self.candidates
            ],
            "timings": dict(self.timings),
            **({"curve": list(self.curve)} if self.curve is not None else {}),
            **({"stroke_order": list(self.stroke_order)} if self.stroke_order is not None else {}),
            **({"auto_strokes": self.auto_strokes} if self.auto_strokes is not None else {}),
        }


def to_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` (or ``[1, H, W]``) in [0, 1] → ``[H, W, 3]`` uint8."""
    arr = image.detach().to("cpu", torch.float32).clamp(0, 1)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return (arr.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(image: Tensor, path: str | os.PathLike[str]) -> Path:
    """Write ``[3, H, W]`` in [0, 1] as a PNG, atomically."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
