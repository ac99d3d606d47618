"""The settings of a run that every component receives through one ``configure`` call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    """The settings of a run that reach every component through ONE call, ``configure(settings)``,
    whether the component was built by name or passed as an object (:meth:`SketchLoss.configure`,
    :meth:`Initializer.configure`).
    A :class:`~clipasso.Sketcher` builds them from its config (:meth:`~clipasso.Sketcher.run_settings`).

    Attributes:
        device: The run's device.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` for the CLIP passes.
        channels_last: ResNet towers on channels-last inputs.
        target_pool: A fixed pool of random views whose target features are cached (0: off).
        num_views: Random views per step in train mode.
        identity_weight: Share of view 0 in the train-mode mean (None: the plain mean).
        num_segments: Cubic segments per stroke (initializers).
        width: Stroke half-width in pixels (initializers).
        mask_weighting: What losses do with ``LossContext.mask`` (:mod:`clipasso.losses.masking`),
            set by runs with ``background="weight"``; None: each loss's own default.
        fold_batchnorm: CLIP ResNet towers with their BatchNorms folded into the convolutions.
        prepack_weights: CLIP ResNet convolutions with their weights reordered once for oneDNN (CPU).
        fuse_activations: With both of those, the ReLUs and residual additions inside the
            convolutions (oneDNN post-ops, CPU).

    Example:
        >>> RunSettings(precision="auto").num_views
        4
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    channels_last: bool = False
    target_pool: int = 0
    num_views: int = 4
    identity_weight: float | None = None
    num_segments: int = 1
    width: float = 1.5
    mask_weighting: str | None = None
    fold_batchnorm: bool = False
    prepack_weights: bool = False
    fuse_activations: bool = False
