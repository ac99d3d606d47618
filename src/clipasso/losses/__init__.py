"""Pluggable sketch losses: the contract, the registry, composition and the provided terms.

Every loss maps sketches ``[B, 3, H, W]`` and a target ``[1 or B, 3, H, W]`` (both in [0, 1]) plus an
optional :class:`LossContext` to ``{term name: Tensor [B]}`` (already weighted; the objective is the
sum). Losses combine as ``a + 0.5 * b.after(100)``. See ``docs/losses.md``.

Registered names (:func:`list_losses`): ``clip_conv``, ``clip_semantic``, ``clip_vit_layer``, ``edges``,
``pixel_l2``, ``sparsity``.
"""

from .base import (
    LOSSES,
    CLIPModelRef,
    LossContext,
    SketchLoss,
    create_loss,
    list_losses,
    register_loss,
    stroke_opacities,
    total_loss,
)
from .clip_conv import RESNET_CONV_LAYERS, CLIPConvLoss, feature_distance
from .clip_semantic import CLIPSemanticLoss
from .clip_vit_layer import CLIPViTLayerLoss, parse_vit_layers
from .compose import ComposedLoss, Term
from .edge import EdgeLoss
from .pixel import PixelL2Loss, masked_mean
from .sparsity import OpacitySparsityLoss

__all__ = [
    "LOSSES",
    "RESNET_CONV_LAYERS",
    "CLIPConvLoss",
    "CLIPModelRef",
    "CLIPSemanticLoss",
    "CLIPViTLayerLoss",
    "ComposedLoss",
    "EdgeLoss",
    "LossContext",
    "OpacitySparsityLoss",
    "PixelL2Loss",
    "SketchLoss",
    "Term",
    "create_loss",
    "feature_distance",
    "list_losses",
    "masked_mean",
    "parse_vit_layers",
    "register_loss",
    "stroke_opacities",
    "total_loss",
]
