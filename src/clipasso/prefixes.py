"""Stroke prefixes: nested (prefix) training, the loss-vs-strokes curve, importance order and the
automatic stroke count (docs/abstraction.md).

A sketch's prefix ``k`` is the sketch of its first ``k`` strokes. Nested training optimises a
weighted combination of the losses of several prefixes, so the first ``k`` strokes are themselves a
``k``-stroke sketch; the curve is the un-augmented loss of every prefix; the importance order puts
the strokes whose removal raises the loss most first; the automatic count is the smallest prefix
that keeps most of the full sketch's gain over the blank canvas.

Example:
    >>> choose_stroke_count([1.0, 0.5, 0.3, 0.25, 0.24], epsilon=0.05)
    3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .errors import InputError
from .losses.base import LossContext

__all__ = [
    "choose_stroke_count",
    "curve_area",
    "nested_loss",
    "prefix_weights",
    "sample_prefix",
]

#: ``loss(sketches [M, 3, H, W], context) -> {term: [M]}``: the objective of a run.
LossFn = Callable[[Tensor, LossContext], dict[str, Tensor]]


def prefix_weights(prefixes: Sequence[int], weights: Sequence[float] | None = None) -> Tensor:
    """Normalised weights ``[K]`` of the prefixes' losses (sum 1; None: equal weights).

    Example:
        >>> prefix_weights([4, 8, 16]).tolist()
        [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]
    """
    w = torch.ones(len(prefixes)) if weights is None else torch.tensor([float(x) for x in weights])
    if w.shape[0] != len(prefixes) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise InputError(f"prefix weights must be {len(prefixes)} numbers >= 0, not all 0, got {weights}")
    return w / w.sum()


def sample_prefix(count: int, seed: int, iteration: int) -> int:
    """The prefix (an index in ``0 .. count - 2``, the full sketch excluded) a ``"sample"`` step uses
    besides the full sketch: a function of the run's seed and the step alone, so resumes are exact.

    Example:
        >>> sample_prefix(4, 0, 7) == sample_prefix(4, 0, 7)
        True
    """
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(iteration)) % (2**63))
    return int(torch.randint(count - 1, (1,), generator=g))


def _clone(g: torch.Generator) -> torch.Generator:
    twin = torch.Generator(device=g.device)
    twin.set_state(g.get_state())
    return twin


def nested_loss(
    loss: LossFn,
    sketch: Tensor,
    context: LossContext,
    weights: Tensor,
    *,
    mode: str = "all",
    seed: int = 0,
) -> dict[str, Tensor]:
    """The nested objective of prefix renders ``sketch [B, K, 3, H, W]``: per term, the weighted sum
    over the prefixes of that term's loss, ``{term: [B]}``.

    The prefixes of a candidate see the same random views (its generator's state is copied for all
    but the last, which advances it once, as a plain step would). In train mode with
    ``mode="sample"`` only the full sketch (the last prefix) and one prefix drawn by
    :func:`sample_prefix` are scored, the drawn one weighted by ``(K - 1) w_j``, so the expected
    value is the ``"all"`` objective.

    Args:
        loss: The run's objective on a batch of sketches.
        sketch: Prefix renders, prefix ``K - 1`` the full sketch.
        context: The step's context (generators: one per candidate, one shared, or None).
        weights: ``[K]`` prefix weights (:func:`prefix_weights`).
        mode: ``"all"`` or ``"sample"``.
        seed: The run's seed (for ``"sample"``).
    """
    b, k = sketch.shape[:2]
    if weights.shape != (k,):
        raise InputError(f"{k} prefixes but {weights.shape[0]} weights")
    cols = list(range(k))
    w = weights.to(sketch.device, sketch.dtype)
    if context.train and mode == "sample" and k > 1:
        j = sample_prefix(k, seed, context.iteration)
        cols = [j, k - 1]
        w = torch.stack([w[j] * (k - 1), w[k - 1]])
    used = len(cols)
    flat = sketch[:, cols].flatten(0, 1)  # candidate-major: [b0 p0, b0 p1, ..., b1 p0, ...]
    gens = context.generators
    if isinstance(gens, list):
        gens = [g if c == used - 1 else _clone(g) for g in gens for c in range(used)]
    strokes = context.strokes
    if isinstance(strokes, Tensor):
        strokes = strokes.repeat_interleave(used, dim=0)
    terms = loss(flat, context.evolve(generators=gens, strokes=strokes))
    return {name: (v.view(b, used) * w).sum(1) for name, v in terms.items()}


def choose_stroke_count(curve: Sequence[float], epsilon: float) -> int:
    """The smallest ``k`` whose prefix keeps at least ``1 - epsilon`` of the loss reduction that the
    whole sketch achieves over the blank canvas: ``L(0) - L(k) >= (1 - epsilon) (L(0) - L(N))``.

    Args:
        curve: ``[L(0), L(1), ..., L(N)]``, the loss of every prefix (``L(0)``: the blank canvas).
        epsilon: The share of the reduction one may give up, in ``[0, 1]``: 0 asks for the whole
            reduction (the first prefix as good as the full sketch), 1 for none (0 strokes... at
            least 1 is returned).

    Returns:
        The chosen count in ``1 .. N``. Monotone: a larger ``epsilon`` never gives more strokes.
        Where the whole sketch is no better than the blank canvas, ``N``.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise InputError(f"epsilon must be in [0, 1], got {epsilon}")
    if len(curve) < 2 or not all(math.isfinite(x) for x in curve):
        raise InputError("the curve needs finite losses of the blank canvas and at least one prefix")
    n = len(curve) - 1
    gain = curve[0] - curve[n]
    if not gain > 0:
        return n
    need = (1.0 - epsilon) * gain
    for k in range(1, n + 1):
        if curve[0] - curve[k] >= need:
            return k
    return n


def curve_area(curve: Sequence[float]) -> float:
    """The area under the normalised loss-vs-strokes curve: ``mean_k (L(k) - L(N)) / (L(0) - L(N))``
    over ``k = 0 .. N`` (1 at the blank canvas, 0 at the full sketch; lower: the loss falls sooner,
    so the first strokes carry more). NaN where the sketch is no better than the blank canvas.

    Example:
        >>> curve_area([1.0, 0.5, 0.0])
        0.5
    """
    n = len(curve) - 1
    gain = curve[0] - curve[n]
    if n < 1 or not gain > 0:
        return math.nan
    return sum((x - curve[n]) / gain for x in curve) / (n + 1)
