"""Stroke prefixes: nested (prefix) training, the loss-vs-strokes curve, importance order and the
automatic stroke count (docs/abstraction.md).

A sketch's prefix ``k`` is the sketch of its first ``k`` strokes. Nested training optimises a
weighted combination of the losses of several prefixes, so the first ``k`` strokes are themselves a
``k``-stroke sketch; the curve is the un-augmented loss of every prefix; the importance order puts
the strokes whose removal raises the loss most first; the automatic count is the smallest prefix
that keeps most of the full sketch's gain over the blank canvas.

Example:
    >>> choose_stroke_count([1.0, 0.5, 0.3, 0.25, 0.24], epsilon=0.1)  # 0.7 of the gain 0.76 by k = 2
    2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .errors import InputError
from .image import Target
from .losses.base import LossContext
from .strokes import StrokeSet
from .threads import intra_op_threads

if TYPE_CHECKING:
    from .result import SketchResult

__all__ = [
    "choose_stroke_count",
    "curve_area",
    "default_prefix_weights",
    "loss_curve",
    "nested_loss",
    "order_strokes",
    "prefix_weights",
    "sample_prefix",
    "spread_assignment",
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


def default_prefix_weights(count: int, mode: str) -> list[float]:
    """The prefix weights a nested run uses when none are given (``nested_weights=None``), for
    ``count`` prefixes (the full sketch last) trained with ``mode``: equal weights for ``"all"``
    and ``"spread"``; for ``"sample"`` half of the weight on the full sketch and the rest shared
    equally by the others, so that each step's objective is half the full sketch's loss and half
    the drawn prefix's (with equal weights the drawn prefix would carry ``(K - 1) / K`` of it).
    Measured in docs/abstraction.md: on ``edges``, ``"sample"`` with these weights is the one
    setting that met the cost, prefix-quality and order targets together.

    Example:
        >>> default_prefix_weights(4, "sample")
        [1.0, 1.0, 1.0, 3.0]
        >>> default_prefix_weights(4, "all")
        [1.0, 1.0, 1.0, 1.0]
    """
    if count < 1:
        raise InputError(f"a nested run has at least one prefix, got {count}")
    if mode == "sample" and count > 1:
        return [1.0] * (count - 1) + [float(count - 1)]
    return [1.0] * count


def sample_prefix(count: int, seed: int, iteration: int) -> int:
    """The prefix (an index in ``0 .. count - 2``, the full sketch excluded) a ``"sample"`` step uses
    besides the full sketch: a function of the run's seed and the step alone, so resumes are exact.

    Example:
        >>> sample_prefix(4, 0, 7) == sample_prefix(4, 0, 7)
        True
    """
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(iteration)) % (2**63))
    return int(torch.randint(count - 1, (1,), generator=g))


def spread_assignment(views: int, weights: Tensor, seed: int, iteration: int) -> list[int]:
    """The prefix (an index in ``0 .. K - 1``) each of a ``"spread"`` step's ``views`` train views is
    made from: view 0 (the un-augmented one) from the full sketch (``K - 1``); the random views by
    systematic sampling of the prefix weights ``[K]`` with one offset drawn from the seed and the
    step, so each prefix gets ``w_k (views - 1)`` views, rounded up or down, and a resumed run
    draws the same.

    Example:
        >>> spread_assignment(5, torch.full((4,), 0.25), 0, 3)[0]  # view 0: the full sketch
        3
        >>> sorted(spread_assignment(5, torch.full((4,), 0.25), 0, 3)[1:])  # one random view each
        [0, 1, 2, 3]
    """
    k = int(weights.shape[0])
    out = [k - 1]
    rest = views - 1
    if rest <= 0:
        return out[:views]
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(iteration) + 7_777) % (2**63))
    offset = float(torch.rand((), generator=g))
    cdf = torch.cumsum(weights.double().cpu() / float(weights.sum()), 0)
    points = (torch.arange(rest, dtype=torch.float64) + offset) / rest
    picks = torch.searchsorted(cdf, points, right=True).clamp_max(k - 1).tolist()
    perm = torch.randperm(rest, generator=g).tolist()  # which random view gets which prefix
    return out + [int(picks[i]) for i in perm]


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
    value is the ``"all"`` objective. With ``mode="spread"`` the loss is called once, on the full
    sketches, as in a plain step, and its train views are spread over the prefixes
    (``LossContext.view_sources``, :func:`spread_assignment`): view 0 of the full sketch, each
    random view of a prefix drawn by its weight; the cost of one plain step. It needs a loss whose
    terms are all computed on views (:meth:`~clipasso.losses.SketchLoss.spreads_views`); its step
    gives no free evaluation (view 0 is the full sketch's, not the weighted objective's).

    Args:
        loss: The run's objective on a batch of sketches.
        sketch: Prefix renders, prefix ``K - 1`` the full sketch.
        context: The step's context (generators: one per candidate, one shared, or None).
        weights: ``[K]`` prefix weights (:func:`prefix_weights`).
        mode: ``"all"``, ``"sample"`` or ``"spread"``.
        seed: The run's seed (for ``"sample"`` and ``"spread"``).
    """
    b, k = sketch.shape[:2]
    if weights.shape != (k,):
        raise InputError(f"{k} prefixes but {weights.shape[0]} weights")
    if context.train and mode == "spread" and k > 1:
        renders = sketch

        def sources(views: int) -> Tensor:
            return renders[:, spread_assignment(views, weights, seed, context.iteration)]

        return loss(sketch[:, k - 1], context.evolve(view_sources=sources, view0=None))
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
    terms = loss(flat, context.evolve(generators=gens, strokes=strokes, view0=None))
    return {name: (v.view(b, used) * w).sum(1) for name, v in terms.items()}


def choose_stroke_count(curve: Sequence[float], epsilon: float) -> int:
    """The smallest ``k`` whose prefix keeps at least ``1 - epsilon`` of the loss reduction that the
    whole sketch achieves over the blank canvas: ``L(0) - L(k) >= (1 - epsilon) (L(0) - L(N))``.

    Args:
        curve: ``[L(0), L(1), ..., L(N)]``, the loss of every prefix (``L(0)``: the blank canvas).
        epsilon: The share of the reduction one may give up, in ``[0, 1]``: 0 asks for the whole
            reduction (the first prefix as good as the full sketch), 1 for none (then 1 stroke).

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


# ---------------------------------------------------------------------------- a Sketcher's sketches


def loss_curve(sketcher: Any, strokes: StrokeSet, target: Target, batch: int = 8) -> list[float]:
    """The un-augmented loss (the objective as at the run's last step) of every prefix
    ``k = 0 .. N`` of a sketch ``strokes [1, N, P, 2]`` on ``target``, without gradients, in
    batches of ``batch`` prefix renders (one pass of the rasterizer each).

    Returns:
        ``[L(0), ..., L(N)]`` (``L(0)``: the blank canvas).
    """
    points, widths, colors = (
        t.detach().to(sketcher.device) for t in (strokes.points, strokes.widths, strokes.colors)
    )
    ks = list(range(strokes.num_strokes + 1))
    return _eval_batches(
        sketcher,
        [(points, widths, colors, ks[i : i + batch]) for i in range(0, len(ks), batch)],
        strokes,
        target,
    )


def order_strokes(
    sketcher: Any, result: SketchResult, batch: int = 8, rungs: Sequence[int] | None = None
) -> SketchResult:
    """The winner's strokes in importance order, by greedy removal: each round removes the stroke
    whose removal raises the un-augmented loss least (it goes last), scoring the round's
    leave-one-out sketches in batches. Returns the result reordered (most important first),
    with :attr:`~clipasso.result.SketchResult.stroke_order` and its curve in that order.

    With ``rungs`` (stroke counts, e.g. a nested run's ladder ``[4, 8, 16]``), the first ``k``
    strokes stay the first ``k`` for every ``k`` in it: strokes are reordered only within the
    blocks between consecutive rungs (the last block first, each removal chosen among the
    remaining strokes of the last block that has any), so a trained ladder keeps its rungs while
    the strokes between them come in importance order. It also costs fewer evaluations (about
    ``Σ (b (b + 1) / 2 − 1)`` over the blocks' sizes ``b`` instead of ``N (N + 1) / 2 − 1``).
    """
    n_strokes = result.strokes.num_strokes
    if rungs is not None and any(not 0 <= int(k) <= n_strokes for k in rungs):
        raise InputError(f"rungs must be stroke counts in [0, {n_strokes}], got {list(rungs)}")
    cuts = sorted({int(k) for k in rungs or () if 0 < int(k) < n_strokes})
    block_of = [sum(i >= c for c in cuts) for i in range(n_strokes)]
    with intra_op_threads(sketcher.config.threads):
        strokes = result.strokes
        work = Target(
            result.target.image.to(sketcher.device),
            result.target.mask.to(sketcher.device) if result.target.mask is not None else None,
            result.target.original_size,
        )
        p, w, c = (t.detach().to(sketcher.device) for t in (strokes.points, strokes.widths, strokes.colors))
        remaining, dropped = list(range(strokes.num_strokes)), []
        while len(remaining) > 1:
            last = max(block_of[i] for i in remaining)
            candidates = [j for j, r in enumerate(remaining) if block_of[r] == last]
            if len(candidates) == 1:  # the block's first stroke: nothing to choose
                dropped.append(remaining.pop(candidates[0]))
                continue
            subsets = [[i for i in remaining if i != remaining[j]] for j in candidates]
            chunks = []
            for i in range(0, len(subsets), batch):
                sel = torch.tensor(subsets[i : i + batch], device=sketcher.device)  # [M, m - 1]
                chunks.append((p[0][sel], w[0][sel], c[0][sel], None))
            losses = _eval_batches(sketcher, chunks, strokes, work)
            out = min(range(len(candidates)), key=lambda j: (losses[j], j))
            dropped.append(remaining.pop(candidates[out]))
        order = remaining + dropped[::-1]
        ordered = result.reordered(order)
        ordered.curve = loss_curve(sketcher, ordered.strokes, work)
        return ordered


def _eval_batches(
    sketcher: Any,
    chunks: Sequence[tuple[Tensor, Tensor, Tensor, list[int] | None]],
    strokes: StrokeSet,
    target: Target,
) -> list[float]:
    """Total un-augmented losses of rendered chunks: ``(points, widths, colors, prefixes)``, the
    prefixes of one sketch (``prefixes`` a list) or a batch of sketches (None)."""
    image = target.image.to(sketcher.device)
    final = max(sketcher.config.iterations - 1, 0)
    out: list[float] = []
    with torch.no_grad():
        for pts, wid, col, ks in chunks:
            if ks is not None:
                sketch = sketcher.rasterizer.render_prefixes(pts, wid, col, strokes.canvas_size, ks, 1.0)[0]
            else:
                sketch = sketcher.rasterizer.render_over(pts, wid, col, strokes.canvas_size, 1.0)
            ctx = LossContext(iteration=final, mode="eval", mask=target.mask, schedule_iteration=final)
            terms = sketcher.loss(sketch, image, ctx)
            out += torch.stack(list(terms.values())).sum(0).tolist()
    return out
