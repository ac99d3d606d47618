"""Learning-rate schedules of a run.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.Adam([p], lr=1.0)
    >>> sched = cosine_schedule(opt, iterations=10, decay_fraction=0.5)
    >>> [round(cosine_lr_factor(t, 10, 5), 3) for t in (0, 5, 7, 10)]
    [1.0, 1.0, 0.655, 0.0]
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_lr_factor", "cosine_schedule"]


def cosine_lr_factor(step: int, iterations: int, decay: int) -> float:
    """The factor on ``lr`` at ``step`` (0-based) of a run that is constant and then decays by a cosine.

    The factor is 1 up to step ``iterations - decay`` and then ``(1 + cos(pi * k / decay)) / 2`` at
    ``k`` steps past it, reaching 0 at ``iterations``; ``decay == iterations`` is a cosine over the
    whole run.

    Example:
        >>> cosine_lr_factor(700, 1000, 300), cosine_lr_factor(850, 1000, 300)
        (1.0, 0.5)
    """
    k = min(max(step - (iterations - decay), 0), decay)
    return 0.5 * (1.0 + math.cos(math.pi * k / decay))


def cosine_schedule(
    optimizer: torch.optim.Optimizer, iterations: int, decay_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr_schedule="cosine"``: step ``t`` uses ``lr * cosine_lr_factor(t, iterations, D)`` with
    ``D = max(round(decay_fraction * iterations), 1)``: constant up to step ``iterations - D``, then a
    cosine that reaches 0 at ``iterations``."""
    decay = max(round(decay_fraction * iterations), 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: cosine_lr_factor(t, iterations, decay))
