"""Plain pixel L2 between the sketch and the target (a simple, weights-free baseline term).

.. math:: L_b = \\frac{\\sum_{c,y,x} m_{y,x} (s_{b,c,y,x} - t_{b,c,y,x})^2}{C \\sum_{y,x} m_{y,x}}

with ``m`` the optional mask (all ones without one).

Example:
    >>> import torch
    >>> from clipasso.losses import PixelL2Loss
    >>> PixelL2Loss()(torch.zeros(2, 3, 4, 4), torch.ones(1, 3, 4, 4))
    {'pixel_l2': tensor([1., 1.])}
"""

from __future__ import annotations

from torch import Tensor

from ..errors import InputError
from .base import LossContext, SketchLoss, register_loss

__all__ = ["PixelL2Loss", "masked_mean"]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sample mean of ``values [B, C, H, W]`` weighted by ``mask [1 or B, 1, H, W]`` → ``[B]``.

    Without a mask this is the plain mean over ``C, H, W``. A mask with no weight at all gives 0.

    Raises:
        InputError: If the mask shape does not fit.
    """
    if mask is None:
        return values.mean(dim=(1, 2, 3))
    b, c, h, w = values.shape
    if (
        mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[0] not in (1, b)
        or tuple(mask.shape[-2:]) != (h, w)
    ):
        raise InputError(f"mask must have shape [1 or {b}, 1, {h}, {w}], got {tuple(mask.shape)}")
    mask = mask.to(device=values.device, dtype=values.dtype)
    num = (values * mask).sum(dim=(1, 2, 3))
    den = (mask.sum(dim=(1, 2, 3)) * c).clamp_min(1e-12)
    return num / den


@register_loss("pixel_l2")
class PixelL2Loss(SketchLoss):
    """Mean squared difference of the RGB pixels (mask-weighted when ``LossContext.mask`` is set).

    Args:
        weight: Factor on the term.

    Term: ``"pixel_l2"``, shape ``[B]``.
    """

    name = "pixel_l2"
    mode_independent = True

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor:
        return masked_mean((sketch - target) ** 2, context.mask)
