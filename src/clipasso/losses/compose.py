"""Weighted sums of losses that still report every term by name, with per-term schedules.

``a + 0.5 * b`` builds a :class:`ComposedLoss` whose :meth:`~ComposedLoss.forward` returns the union of
``a``'s and ``b``'s named terms, ``b``'s multiplied by 0.5. A term can be switched on only for some
iterations (``b.after(k)``: from iteration ``k`` on, as the reference's optional ViT term) and its
weight may be a function of the iteration. Inactive terms are reported as zeros (same keys every
iteration) and are not computed.

Example:
    >>> import torch
    >>> from clipasso.losses import ComposedLoss, EdgeLoss, LossContext, PixelL2Loss, Term
    >>> a = PixelL2Loss()
    >>> b = PixelL2Loss()
    >>> loss = ComposedLoss([a, Term(b, weight=0.5, start=10, prefix="late_")])
    >>> sorted(loss(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), LossContext(iteration=3)).items())
    [('late_pixel_l2', tensor([0.])), ('pixel_l2', tensor([1.]))]
    >>> total = PixelL2Loss() + 0.5 * EdgeLoss().after(10)  # operator form
    >>> total.term_names()
    ['pixel_l2', 'edge']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from torch import Tensor, nn

from ..errors import InputError
from .base import LossContext, SketchLoss

__all__ = ["ComposedLoss", "Term", "Weight"]

#: A term weight: a constant or a function of the iteration.
Weight = float | Callable[[int], float]


class _Product:
    """Product of two weights (picklable, unlike a lambda)."""

    def __init__(self, a: Weight, b: Weight) -> None:
        self.a, self.b = a, b

    def __call__(self, iteration: int) -> float:
        return _value(self.a, iteration) * _value(self.b, iteration)

    def __repr__(self) -> str:
        return f"{self.a!r}*{self.b!r}"


def _value(weight: Weight, iteration: int) -> float:
    return float(weight(iteration)) if callable(weight) else float(weight)


def _multiply(a: Weight, b: Weight) -> Weight:
    if not callable(a) and not callable(b):
        return float(a) * float(b)
    return _Product(a, b)


@dataclass(frozen=True)
class Term:
    """One entry of a :class:`ComposedLoss`.

    Attributes:
        loss: The loss (its own ``weight`` is applied first).
        weight: Factor, or a function ``iteration -> factor``.
        start: First iteration at which the term is active.
        stop: First iteration at which it is no longer active (None: never stops).
        prefix: Prepended to every term name of ``loss`` (to compose two losses with the same names).
    """

    loss: SketchLoss
    weight: Weight = 1.0
    start: int = 0
    stop: int | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.loss, SketchLoss):
            raise InputError(f"Term.loss must be a SketchLoss, got {type(self.loss).__name__}")
        if isinstance(self.loss, ComposedLoss):
            raise InputError("Term.loss must not be a ComposedLoss; flatten it with ComposedLoss.of(...)")
        if self.start < 0 or (self.stop is not None and self.stop < self.start):
            raise InputError(
                f"Term schedule needs 0 <= start <= stop, got start={self.start}, stop={self.stop}"
            )
        if isinstance(self.weight, nn.Module) or not (
            callable(self.weight) or isinstance(self.weight, (int, float))
        ):
            raise InputError(
                f"Term.weight must be a number or a function of the iteration, got {self.weight!r}"
            )

    def active(self, iteration: int) -> bool:
        """Whether the term is switched on at ``iteration``."""
        return iteration >= self.start and (self.stop is None or iteration < self.stop)

    def factor(self, iteration: int) -> float:
        """The weight at ``iteration`` (0 when inactive)."""
        return _value(self.weight, iteration) if self.active(iteration) else 0.0

    def names(self) -> list[str]:
        """The prefixed names of the loss's terms."""
        return [self.prefix + n for n in self.loss.term_names()]

    def with_(self, **changes: object) -> Term:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


class ComposedLoss(SketchLoss):
    """A weighted, scheduled sum of losses reporting each term by name.

    Args:
        terms: Losses (weight 1, always on) or :class:`Term` entries. Nested compositions are flattened.

    Raises:
        InputError: If two terms would report the same name (use ``Term(..., prefix=...)``).

    The composed loss's own ``weight`` (constructor keyword of :class:`SketchLoss`) is 1; scale with
    ``factor * composed``. With a shared generator in the context, the random views of the parts are
    drawn one after the other, in the order of ``terms``.
    """

    name = "composed"

    def __init__(self, terms: Sequence[SketchLoss | Term] = ()) -> None:
        super().__init__()
        flat: list[Term] = []
        for item in terms:
            if isinstance(item, ComposedLoss):
                flat.extend(item.terms)
            elif isinstance(item, Term):
                flat.append(item)
            elif isinstance(item, SketchLoss):
                flat.append(Term(item))
            else:
                raise InputError(
                    f"ComposedLoss entries must be SketchLoss or Term, got {type(item).__name__}"
                )
        if not flat:
            raise InputError("ComposedLoss needs at least one term")
        seen: set[str] = set()
        for term in flat:
            for key in term.names():
                if key in seen:
                    raise InputError(
                        f"loss term name {key!r} appears twice in a composition; give one of them a "
                        "prefix (Term(loss, prefix='...'))"
                    )
                seen.add(key)
        self.terms: tuple[Term, ...] = tuple(flat)
        # Registered so .to()/.parameters()/.train() reach the parts (each part once).
        unique: list[SketchLoss] = []
        for term in flat:
            if not any(term.loss is u for u in unique):
                unique.append(term.loss)
        self.parts = nn.ModuleList(unique)

    @classmethod
    def of(cls, loss: SketchLoss) -> ComposedLoss:
        """``loss`` as a composition (itself when it already is one)."""
        return loss if isinstance(loss, ComposedLoss) else cls([loss])

    def __add__(self, other: object) -> ComposedLoss:
        if not isinstance(other, SketchLoss):
            return NotImplemented
        return ComposedLoss([*self.terms, *ComposedLoss.of(other).terms])

    def __radd__(self, other: object) -> ComposedLoss:
        if isinstance(other, int) and other == 0:  # so that sum([a, b, c]) works
            return self
        if not isinstance(other, SketchLoss):
            return NotImplemented
        return ComposedLoss.of(other) + self

    def scaled(self, factor: Weight) -> ComposedLoss:
        """Every term's weight multiplied by ``factor`` (a number or a function of the iteration)."""
        return ComposedLoss([t.with_(weight=_multiply(t.weight, factor)) for t in self.terms])

    def scheduled(self, start: int = 0, stop: int | None = None) -> ComposedLoss:
        """Every term restricted to ``start <= iteration < stop`` (intersected with its own window)."""
        out = []
        for t in self.terms:
            new_stop = stop if t.stop is None else (t.stop if stop is None else min(t.stop, stop))
            new_start = max(t.start, start)
            if new_stop is not None and new_stop < new_start:
                new_stop = new_start  # empty window: never active
            out.append(t.with_(start=new_start, stop=new_stop))
        return ComposedLoss(out)

    def prefixed(self, prefix: str) -> ComposedLoss:
        """Every term name prefixed with ``prefix``."""
        return ComposedLoss([t.with_(prefix=prefix + t.prefix) for t in self.terms])

    def term_names(self) -> list[str]:
        return [key for t in self.terms for key in t.names()]

    def spreads_views(self) -> bool:
        return bool(self.terms) and all(t.loss.spreads_views() for t in self.terms)

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        batch = sketch.shape[0]
        for term in self.terms:
            factor = term.factor(context.scheduled_at)
            if factor == 0.0:
                zeros = sketch.new_zeros(batch)
                for key in term.names():
                    out[key] = zeros
                continue
            sub: dict[str, Tensor] | None = {} if context.view0 is not None else None
            values = term.loss(sketch, target, context if sub is None else context.evolve(view0=sub))
            for key, value in values.items():
                out[term.prefix + key] = value * factor if factor != 1.0 else value
            if sub is not None and context.view0 is not None:  # the evaluation's weight of the term
                at = context.view0_schedule if context.view0_schedule is not None else context.scheduled_at
                final = term.factor(at)
                for key, value in sub.items():
                    context.view0[term.prefix + key] = value * final if final != 1.0 else value
        return out

    def extra_repr(self) -> str:
        parts = []
        for i, t in enumerate(self.terms):
            window = f"[{t.start}, {'∞' if t.stop is None else t.stop})"
            parts.append(f"({i}): weight={t.weight!r} iterations={window} prefix={t.prefix!r}")
        return "\n".join(parts)
