"""The loss contract: :class:`SketchLoss`, :class:`LossContext` and the ``LOSSES`` registry.

A loss maps rendered sketches ``[B, 3, H, W]`` in [0, 1] and their target ``[1 or B, 3, H, W]`` to a
dict of named, already weighted terms, each a tensor ``[B]`` (one value per sketch, so best-of-N
selection can compare the sketches of one batch). The objective is the sum of the values.

To add a term, subclass :class:`SketchLoss`, implement :meth:`SketchLoss.compute` and register it:

Example:
    >>> import torch
    >>> from clipasso.losses import LOSSES, SketchLoss, register_loss, create_loss
    >>> @register_loss("doc_mean_ink")
    ... class MeanInk(SketchLoss):
    ...     name = "ink"
    ...     def compute(self, sketch, target, context):
    ...         return (1 - sketch).mean(dim=(1, 2, 3))  # [B]
    >>> loss = create_loss("doc_mean_ink", weight=0.5)
    >>> loss(torch.ones(2, 3, 8, 8), torch.ones(1, 3, 8, 8))
    {'ink': tensor([0., 0.])}
    >>> LOSSES.remove("doc_mean_ink")  # (only to keep the doctest from leaving it registered)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..errors import ClipassoError, InputError
from ..registry import Registry
from ..settings import RunSettings

if TYPE_CHECKING:
    from .compose import ComposedLoss

__all__ = [
    "LOSSES",
    "CLIPModelRef",
    "LossContext",
    "SketchLoss",
    "create_loss",
    "list_losses",
    "register_loss",
    "stroke_opacities",
    "total_loss",
]

Mode = Literal["train", "eval"]


@dataclass
class LossContext:
    """Everything a loss may need besides the images.

    Attributes:
        iteration: Optimisation step (drives per-term schedules, see :mod:`clipasso.losses.compose`).
        mode: ``"train"`` (random views) or ``"eval"`` (view 0 only, no randomness).
        generators: Randomness for augmentations: a list of ``B`` generators (sketch ``b`` draws from
            generator ``b`` only, so a batched run equals separate runs), one generator (views shared
            by all sketches) or None (each loss's own seeded generator, shared).
        mask: Optional object mask ``[1 or B, 1, H, W]`` in [0, 1] (1 = object). Pixel-space terms
            (pixel L2, edge) weight their per-pixel errors by it; CLIP terms ignore it.
        strokes: Optional stroke parameters, for terms on the strokes themselves (e.g. the opacity
            sparsity term). Either a :class:`clipasso.strokes.StrokeSet`-like object with a
            ``colors [B, N, 4]`` attribute (RGBA; opacity = channel 3) or an opacity tensor ``[B, N]``.
        schedule_iteration: The iteration at which term schedules (``loss.after(k)``, weights that
            are functions of the iteration) are read; None: ``iteration``. The Sketcher's evaluations
            pass the run's last step, so that a term switched on late counts in every score.
        view0: A sink for free evaluations (train mode only): a loss that can tell, from this step's
            own forward pass, what an evaluation of the same sketches would return for its terms
            (``mode="eval"``, schedules read at ``view0_schedule``) writes those values here,
            ``{term: [B]}``, weighted as the evaluation would weigh them. The engine uses them
            instead of a second forward when every term is there (``SketchConfig.free_evaluations``).
        view0_schedule: The iteration the evaluation reads schedules at (the run's last step).
        view_sources: Train mode only, nested ``"spread"`` training
            (:func:`clipasso.prefixes.nested_loss`): ``view_sources(V)`` gives ``[B, V, 3, H, W]``,
            the image each of a sketch's ``V`` train views is made from (a prefix render per view);
            losses whose terms are computed on views (:meth:`SketchLoss.spreads_views`) pass it to
            their augmentation. None: every view is made from the sketch.
    """

    iteration: int = 0
    mode: Mode = "train"
    generators: list[torch.Generator] | torch.Generator | None = None
    mask: Tensor | None = None
    strokes: Any = None
    schedule_iteration: int | None = None
    view0: dict[str, Tensor] | None = None
    view0_schedule: int | None = None
    view_sources: Callable[[int], Tensor] | None = None

    def sources_for(self, views: int) -> Tensor | None:
        """The per-view sources ``[B, views, 3, H, W]`` of a train step (``view_sources``), else None."""
        if self.view_sources is None or not self.train:
            return None
        return self.view_sources(views)

    def __post_init__(self) -> None:
        if self.mode not in ("train", "eval"):
            raise InputError(f"LossContext.mode must be 'train' or 'eval', got {self.mode!r}")
        if self.iteration < 0:
            raise InputError(f"LossContext.iteration must be >= 0, got {self.iteration}")
        if self.schedule_iteration is not None and self.schedule_iteration < 0:
            raise InputError(f"LossContext.schedule_iteration must be >= 0, got {self.schedule_iteration}")

    @property
    def scheduled_at(self) -> int:
        """The iteration term schedules are read at: ``schedule_iteration``, else ``iteration``."""
        return self.iteration if self.schedule_iteration is None else self.schedule_iteration

    @property
    def train(self) -> bool:
        """True in ``"train"`` mode."""
        return self.mode == "train"

    def evolve(self, **changes: Any) -> LossContext:
        """A copy with some fields changed, e.g. ``ctx.evolve(mode="eval")``."""
        return replace(self, **changes)


def stroke_opacities(strokes: Any) -> Tensor:
    """Stroke opacities ``[B, N]`` from ``LossContext.strokes`` (a StrokeSet-like object or a tensor).

    Raises:
        InputError: If ``strokes`` is None or has neither form.
    """
    if strokes is None:
        raise InputError("this loss needs the strokes: pass LossContext(strokes=stroke_set)")
    if isinstance(strokes, Tensor):
        alpha = strokes
    else:
        colors = getattr(strokes, "colors", None)
        if not isinstance(colors, Tensor) or colors.shape[-1] != 4:
            raise InputError(
                "LossContext.strokes must be a StrokeSet-like object with colors [B, N, 4] "
                f"or an opacity tensor [B, N], got {type(strokes).__name__}"
            )
        alpha = colors[..., 3]
    if alpha.dim() == 1:
        alpha = alpha.unsqueeze(0)
    if alpha.dim() != 2:
        raise InputError(f"stroke opacities must be [B, N], got shape {tuple(alpha.shape)}")
    return alpha


def total_loss(terms: Mapping[str, Tensor]) -> Tensor:
    """The objective per sketch: the sum of the (already weighted) terms, ``[B]``."""
    if not terms:
        raise InputError("no loss terms to sum")
    values = list(terms.values())
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


def _check_images(sketch: Tensor, target: Tensor) -> None:
    if not isinstance(sketch, Tensor) or sketch.dim() != 4 or sketch.shape[1] != 3:
        got = tuple(sketch.shape) if isinstance(sketch, Tensor) else type(sketch).__name__
        raise InputError(f"sketch must be a [B, 3, H, W] tensor in [0, 1], got {got}")
    if not isinstance(target, Tensor) or target.dim() != 4 or target.shape[1] != 3:
        got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise InputError(f"target must be a [1 or B, 3, H, W] tensor in [0, 1], got {got}")
    if target.shape[0] not in (1, sketch.shape[0]):
        raise InputError(
            f"target batch must be 1 or {sketch.shape[0]} (the sketch batch), got {target.shape[0]}"
        )
    if target.shape[-2:] != sketch.shape[-2:]:
        raise InputError(
            f"target size {tuple(target.shape[-2:])} differs from sketch size {tuple(sketch.shape[-2:])}"
        )
    if not sketch.dtype.is_floating_point:
        raise InputError(f"sketch must be floating point, got {sketch.dtype}")


def configure_views(loss: Any, settings: RunSettings) -> None:
    """Give a loss with ``augment`` (:class:`~clipasso.augment.ReferenceViews`) the run's
    ``num_views`` and, if it has one, ``identity_weight``, except those in ``loss.fixed``.

    The views are rebuilt (seeded with ``loss.view_seed``) only when their number changes, so a
    loss reused by several runs with the same settings keeps its views' own generator as it is.
    """
    from ..augment import ReferenceViews

    fixed: frozenset[str] = getattr(loss, "fixed", frozenset())
    augment = loss.augment
    if "num_views" not in fixed and settings.num_views != augment.num_views:
        n = settings.num_views
        # aligned losses always include view 0; the semantic term only when it has no random views
        identity = True if getattr(loss, "aligned_views", True) else n == 0
        loss.augment = ReferenceViews(n, identity_view=identity, seed=getattr(loss, "view_seed", 0))
    if hasattr(loss, "identity_weight") and "identity_weight" not in fixed:
        from .clip_conv import check_identity_weight

        loss.identity_weight = check_identity_weight(settings.identity_weight, loss.augment)


def _sub_losses(module: nn.Module) -> list[SketchLoss]:
    """The losses directly inside ``module`` (through plain containers such as ModuleList)."""
    out: list[SketchLoss] = []
    for child in module.children():
        if isinstance(child, SketchLoss):
            out.append(child)
        else:
            out.extend(_sub_losses(child))
    return out


class SketchLoss(nn.Module):
    """Base class of every loss term.

    Subclasses implement :meth:`compute`, returning either a tensor ``[B]`` (reported under the class
    attribute ``name``) or a dict of such tensors (then also override :meth:`term_names`). The base
    :meth:`forward` validates the inputs, builds a default context, multiplies every term by
    ``weight`` and checks the result. Losses own no optimiser and no renderer.

    Losses combine with ``+`` and scalar ``*`` into a :class:`~clipasso.losses.compose.ComposedLoss`
    that still reports each term by name (``a + 0.5 * b``); ``loss.after(k)`` switches a term on from
    iteration ``k``.

    Class attributes:
        name: Key of the single term a tensor-returning :meth:`compute` produces.
        is_distance: True when the term is a distance between sketch and target that is 0 for a sketch
            equal to its target. False for regularisers (opacity sparsity) and for terms that compare
            the sketch with something derived from the target (the edge term's XDoG map).
        needs_strokes: True when the term reads ``LossContext.strokes``.
        aligned_views: True when sketch and target are compared under the same views, so a sketch equal
            to its target scores 0 in train mode too (False for terms that compare augmented sketches
            with an un-augmented target, as the semantic term does).

    Args:
        weight: Factor applied to every term this loss returns.
    """

    name: ClassVar[str] = "loss"
    #: True when :meth:`compute` does not depend on the mode (no views, no randomness): an
    #: evaluation equals the training value bit for bit, so free evaluations take it as it is.
    mode_independent: ClassVar[bool] = False
    is_distance: ClassVar[bool] = True
    needs_strokes: ClassVar[bool] = False
    aligned_views: ClassVar[bool] = True

    def __init__(self, *, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def term_names(self) -> list[str]:
        """Names of the terms :meth:`forward` returns (known without computing them)."""
        return [self.name]

    def spreads_views(self) -> bool:
        """True when every term is computed on augmented views made from
        ``LossContext.sources_for(V)`` when it is set (nested ``"spread"`` training spreads the train
        views over the prefixes) and there is at least one random view; False for terms on the image
        itself (pixel, edges), and for a CLIP loss with ``num_views=0``. Composed losses: all of
        their parts. Asked after :meth:`configure` (a run's ``num_views`` may change it)."""
        return False

    def compute(self, sketch: Tensor, target: Tensor, context: LossContext) -> Tensor | dict[str, Tensor]:
        """Unweighted term(s) per sketch.

        Args:
            sketch: ``[B, 3, H, W]`` in [0, 1] (differentiable).
            target: ``[1 or B, 3, H, W]`` in [0, 1], same ``H, W``, same dtype/device as ``sketch``.
            context: Iteration, mode, generators, mask, strokes.

        Returns:
            A tensor ``[B]`` or a dict ``{name: [B]}`` matching :meth:`term_names`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")

    def forward(
        self, sketch: Tensor, target: Tensor, context: LossContext | None = None
    ) -> dict[str, Tensor]:
        """Named, weighted terms per sketch.

        Args:
            sketch: ``[B, 3, H, W]`` in [0, 1].
            target: ``[1 or B, 3, H, W]`` in [0, 1].
            context: Defaults to ``LossContext()`` (iteration 0, train mode).

        Returns:
            ``{name: Tensor [B]}``; the objective is the sum of the values (:func:`total_loss`).
        """
        _check_images(sketch, target)
        ctx = LossContext() if context is None else context
        if not isinstance(ctx, LossContext):
            raise InputError(f"context must be a LossContext, got {type(ctx).__name__}")
        target = target.to(device=sketch.device, dtype=sketch.dtype)
        sink = ctx.view0 if ctx.train else None
        local: dict[str, Tensor] | None = {} if sink is not None else None
        raw = self.compute(sketch, target, ctx if local is None else ctx.evolve(view0=local))
        terms = {self.name: raw} if isinstance(raw, Tensor) else dict(raw)
        batch = sketch.shape[0]
        expected = self.term_names()
        if sorted(terms) != sorted(expected):
            raise ClipassoError(
                f"{type(self).__name__}.compute returned terms {sorted(terms)} but term_names() says "
                f"{sorted(expected)}"
            )
        out: dict[str, Tensor] = {}
        for key in expected:
            value = terms[key]
            if not isinstance(value, Tensor) or value.shape != (batch,):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ClipassoError(
                    f"{type(self).__name__} term {key!r} must have shape [{batch}], got {got}"
                )
            out[key] = value * self.weight if self.weight != 1.0 else value
        if sink is not None and local is not None:
            if self.mode_independent:
                local = {k: v.detach() for k, v in terms.items()}
            for key in expected:
                if key in local:
                    v0 = local[key].detach()
                    sink[key] = v0 * self.weight if self.weight != 1.0 else v0
        return out

    def configure(self, settings: RunSettings) -> None:
        """Adopt a run's settings (:class:`RunSettings`); :class:`~clipasso.Sketcher` calls it before
        every run, for losses built by name and loss objects alike. The base passes them on to the
        losses this one is composed of; override to adopt what applies (call ``super()``), leaving
        what was given to the constructor as given.
        """
        for loss in _sub_losses(self):
            loss.configure(settings)

    def load(self, device: torch.device) -> None:
        """Load every CLIP model this loss (and any loss it is composed of) references by name, now,
        on ``device``; a missing or corrupt weights file raises here. :meth:`clipasso.Sketcher.load`
        calls it; without it models load on the first step."""
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, CLIPModelRef):
                    value.get(device)

    def total(self, sketch: Tensor, target: Tensor, context: LossContext | None = None) -> Tensor:
        """The objective per sketch ``[B]`` (sum of :meth:`forward`'s terms)."""
        return total_loss(self(sketch, target, context))

    # --- composition -------------------------------------------------------------------------
    def __add__(self, other: object) -> ComposedLoss:
        from .compose import ComposedLoss

        if not isinstance(other, SketchLoss):
            return NotImplemented
        return ComposedLoss.of(self) + ComposedLoss.of(other)

    def __radd__(self, other: object) -> ComposedLoss:
        from .compose import ComposedLoss

        if isinstance(other, int) and other == 0:  # so that sum([a, b, c]) works
            return ComposedLoss.of(self)
        if not isinstance(other, SketchLoss):
            return NotImplemented
        return ComposedLoss.of(other) + ComposedLoss.of(self)

    def __mul__(self, factor: object) -> ComposedLoss:
        from .compose import ComposedLoss

        is_number = isinstance(factor, (int, float)) and not isinstance(factor, bool)
        is_schedule = callable(factor) and not isinstance(factor, nn.Module)
        if not (is_number or is_schedule):
            return NotImplemented
        return ComposedLoss.of(self).scaled(factor)  # type: ignore[arg-type]

    __rmul__ = __mul__

    def after(self, iteration: int) -> ComposedLoss:
        """This loss switched on from ``iteration`` on (reported as 0 before)."""
        from .compose import ComposedLoss

        return ComposedLoss.of(self).scheduled(start=iteration)

    def between(self, start: int, stop: int | None) -> ComposedLoss:
        """This loss active for ``start <= iteration < stop`` (reported as 0 outside)."""
        from .compose import ComposedLoss

        return ComposedLoss.of(self).scheduled(start=start, stop=stop)

    def extra_repr(self) -> str:
        return f"weight={self.weight}" if self.weight != 1.0 else ""


#: All registered losses: ``name → class or factory`` returning a :class:`SketchLoss`.
LOSSES: Registry[SketchLoss] = Registry("loss")


def register_loss(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., SketchLoss]], Callable[..., SketchLoss]]:
    """Decorator registering a :class:`SketchLoss` subclass (or factory) under ``name``."""
    return LOSSES.register(name, overwrite=overwrite)


def create_loss(name: str, **kwargs: Any) -> SketchLoss:
    """Instantiate the registered loss ``name`` with keyword arguments.

    Raises:
        InputError: For an unknown name (the message lists the known ones).
    """
    loss = LOSSES.create(name, **kwargs)
    if not isinstance(loss, SketchLoss):
        raise InputError(f"loss factory {name!r} returned {type(loss).__name__}, not a SketchLoss")
    return loss


def list_losses(pattern: str = "*") -> list[str]:
    """Sorted names of the registered losses matching a glob ``pattern``."""
    return LOSSES.names(pattern)


class CLIPModelRef:
    """A CLIP model (or its image tower) handed to a loss, or a name/path loaded lazily once.

    Several losses can share one already loaded model: pass the same module to each. A name or path
    (anything :func:`clipasso.models.load_clip` accepts) is loaded on first use, on the device of the
    first sketch, and kept. The model is frozen on adoption (``requires_grad_(False)`` and
    ``eval()``): losses never let it accumulate weight gradients nor update BatchNorm statistics.

    The reference is held as a plain attribute, not a sub-module, so a loss's ``state_dict`` does not
    contain CLIP's weights and ``loss.to(device)`` does not move a shared model (move it yourself).

    Args:
        model: A CLIP model, its ``.visual`` tower, or a name/path.
        cache_dir: Where :func:`~clipasso.models.load_clip` keeps downloaded weights.
    """

    def __init__(self, model: nn.Module | str | Any, *, cache_dir: Any = None) -> None:
        self._module: nn.Module | None = None
        self.source: str | None = None
        self.cache_dir = cache_dir
        if isinstance(model, nn.Module):
            self._module = self._freeze(model)
        elif isinstance(model, str) or hasattr(model, "__fspath__"):
            self.source = str(model)
        else:
            raise InputError(f"model must be a CLIP nn.Module or a name/path, got {type(model).__name__}")

    @staticmethod
    def _freeze(module: nn.Module) -> nn.Module:
        module.requires_grad_(False)
        module.eval()
        return module

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._module is not None

    def get(self, device: torch.device) -> nn.Module:
        """The model, loading it on ``device`` the first time when given by name.

        Raises:
            InputError: If a given model lives on another device than the images.
        """
        if self._module is None:
            from ..models import load_clip

            assert self.source is not None
            module = load_clip(self.source, device=device, cache_dir=self.cache_dir, role="loss")
            self._module = self._freeze(module)
        param = next(self._module.parameters(), None)
        if param is not None and param.device != device:
            raise InputError(
                f"the CLIP model is on {param.device} but the images are on {device}; move one of them"
            )
        if self._module.training:  # someone called .train() on a shared model
            self._module.eval()
        return self._module

    def __repr__(self) -> str:
        what = self.source if self.source is not None else type(self._module).__name__
        return f"CLIPModelRef({what!r}, loaded={self.loaded})"
