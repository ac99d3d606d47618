"""Opacity sparsity: pushes stroke opacities to 0 so that opacity-optimised runs drop strokes.

The term reads the strokes, not the image: pass them as ``LossContext(strokes=...)``, either a
:class:`clipasso.strokes.StrokeSet` (or any object with ``colors [B, N, 4]``; opacity is channel 3)
or an opacity tensor ``[B, N]``. Opacities are clamped to [0, 1] (as before rendering).

.. math:: L_b = \\frac{1}{N} \\sum_n \\mathrm{clamp}(\\alpha_{b,n}, 0, 1)^p \\quad (\\text{reduction="mean"})

``reduction="sum"`` gives the soft stroke count :math:`\\sum_n \\alpha_{b,n}^p`.

Example:
    >>> import torch
    >>> from clipasso.losses import OpacitySparsityLoss, LossContext
    >>> alpha = torch.tensor([[1.0, 0.5, 0.0, 0.5]])
    >>> OpacitySparsityLoss()(torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4), LossContext(strokes=alpha))
    {'sparsity': tensor([0.5000])}
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ..errors import InputError
from .base import LossContext, SketchLoss, register_loss, stroke_opacities

__all__ = ["OpacitySparsityLoss"]

_EPS = 1e-6


@register_loss("sparsity")
class OpacitySparsityLoss(SketchLoss):
    """Mean (or sum) of the stroke opacities raised to ``power``.

    Args:
        power: Exponent ``p`` (1 = L1; values below 1 push harder towards exact zeros and are computed
            as ``(α + 1e-6)^p − 1e-6^p`` so the gradient at 0 stays finite).
        reduction: ``"mean"`` over strokes or ``"sum"`` (soft stroke count).
        weight: Factor on the term.

    Term: ``"sparsity"``, shape ``[B]``. Not a distance: it does not compare sketch and target.
    """

    name = "sparsity"
    is_distance = False
    needs_strokes = True

    def __init__(
        self, *, power: float = 1.0, reduction: Literal["mean", "sum"] = "mean", weight: float = 1.0
    ) -> None:
        super().__init__(weight=weight)
        if not power > 0:
            raise InputError(f"power must be > 0, got {power}")
        if reduction not in ("mean", "sum"):
            raise InputError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.power = float(power)
        self.reduction = reduction

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
        alpha = stroke_opacities(context.strokes).to(device=sketch.device, dtype=sketch.dtype)
        batch = sketch.shape[0]
        if alpha.shape[0] not in (1, batch):
            raise InputError(f"stroke opacities have batch {alpha.shape[0]}, the sketches {batch}")
        values = alpha.clamp(0.0, 1.0)
        if self.power > 1.0:
            values = values.pow(self.power)
        elif self.power < 1.0:  # shifted so the gradient at 0 stays finite; still exactly 0 at 0
            values = (values + _EPS).pow(self.power) - _EPS**self.power
        out = values.mean(dim=1) if self.reduction == "mean" else values.sum(dim=1)
        return out.expand(batch) if out.shape[0] != batch else out

    def extra_repr(self) -> str:
        return f"power={self.power}, reduction={self.reduction!r}, weight={self.weight}"
