"""The :class:`Sketcher`: a thin, extensible class that runs the whole CLIPasso method.

Every stage is a method research code can override: :meth:`Sketcher.build_loss`,
:meth:`Sketcher.build_initializer`, :meth:`Sketcher.build_optimizer`, :meth:`Sketcher.step`
(one optimisation step), :meth:`Sketcher.update_best` (the evaluation/early-stop rule) and
:meth:`Sketcher.select` (best-of-N). Callbacks (:class:`clipasso.callbacks.Callback`) observe runs.

Best-of-N runs as ONE batched optimisation: the N candidates are a batch of B = N sketches with
independent seeds, per-sketch losses and per-element Adam, so the batch gives the same sketches as N
separate runs (to float tolerance) at a fraction of the cost.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, cast

import torch
from torch import Tensor, nn

from ._io import atomic_open
from .callbacks import Callback, SketchState
from .config import SketchConfig
from .errors import CheckpointError, InputError, NonFiniteLossError
from .image import ImageLike, Matting, Target
from .init.base import Initializer, InitResult, create_initializer
from .losses.base import LossContext, SketchLoss, create_loss
from .render import Rasterizer, get_rasterizer
from .result import Candidate, LossHistory, SketchResult
from .strokes import StrokeSet
from .threads import intra_op_threads

__all__ = [
    "FIDELITY_FC_WEIGHT",
    "Sketcher",
    "cosine_lr_factor",
    "race_round",
    "race_survivors",
    "read_checkpoint",
    "resolve_device",
    "write_checkpoint",
]

#: Weight of the embedding term beside the layer term of ``SketchConfig.fidelity``: CLIPasso's ``fc``
#: weight, the semantic partner of the geometric term in CLIPasso and CLIPascene alike.
FIDELITY_FC_WEIGHT = 0.1

OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]

_CHECKPOINT_VERSION = 2

#: ``SketchConfig.reseed_every=None`` with the weights-free ``edges`` objective (docs/initializers.md).
DEFAULT_RESEED_EVERY = 50


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else MPS if available, else CPU; anything else as given."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(spec, str):
        raise InputError(f"device must be a string or torch.device, got {type(spec).__name__}")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"invalid device {spec!r}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {spec!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {spec!r}: this machine has {count} CUDA device(s) (0 to {count - 1})")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device {spec!r}: MPS is not available on this machine (use 'cpu' or 'auto')")
    return device


def cosine_lr_factor(step: int, iterations: int, decay: int) -> float:
    """The factor on ``lr`` at ``step`` (0-based) of a run that is constant and then decays by a cosine.

    The factor is 1 up to step ``iterations - decay`` and then ``(1 + cos(pi * k / decay)) / 2`` at
    ``k`` steps past it, reaching 0 at ``iterations``; ``decay == iterations`` is a cosine over the
    whole run. ``Sketcher.build_scheduler`` uses it for ``lr_schedule="cosine"``.

    Example:
        >>> cosine_lr_factor(700, 1000, 300), cosine_lr_factor(850, 1000, 300)
        (1.0, 0.5)
    """
    k = min(max(step - (iterations - decay), 0), decay)
    return 0.5 * (1.0 + math.cos(math.pi * k / decay))


def race_round(
    before: int, now: int, prune_after: int | None, prune_until: int | None, tolerance: float
) -> float | None:
    """Whether the evaluation at step ``now`` is a round of the race, and the round's tolerance.

    The race has at most two rounds: the first evaluation at or after ``prune_after``, with
    ``tolerance``, and the first at or after ``prune_until``, with none (the final round). ``before``
    is the step of the previous evaluation (-1 if none), so the rounds follow from the evaluation
    history alone (a resumed run needs no extra state). :meth:`Sketcher.prune` applies
    :func:`race_survivors` with the tolerance returned.

    Returns:
        The tolerance of the round, or None when ``now`` is not a round (or there is no race).

    Example:
        >>> race_round(40, 50, 50, 300, 0.005), race_round(50, 60, 50, 300, 0.005)
        (0.005, None)
        >>> race_round(290, 300, 50, 300, 0.005)
        0.0
    """
    if prune_after is None:
        return None
    if prune_until is not None and before < prune_until <= now:
        return 0.0
    if before < prune_after <= now:
        return tolerance
    return None


def race_survivors(best: Mapping[int, float], keep: int, tolerance: float = 0.0) -> list[int]:
    """The racing rule: which of the running candidates go on, given their best evaluation losses.

    The ``keep`` candidates with the lowest loss go on (ties: the lower index), and so does any other
    candidate whose loss is less than ``tolerance`` (relative) above the leader's, i.e. below
    ``leader + tolerance * |leader|``: a gap that small is not taken as evidence. ``tolerance=0``
    keeps exactly ``keep``. :meth:`Sketcher.prune` applies it (``SketchConfig.prune_after``,
    ``prune_keep``, ``prune_tolerance``, ``prune_until``).

    Args:
        best: ``{candidate index: best evaluation loss so far}`` of the running candidates.
        keep: How many go on whatever the gaps (at least 1).
        tolerance: The relative gap to the leader under which a candidate also goes on (>= 0).

    Returns:
        The indices that go on, sorted.

    Example:
        >>> race_survivors({0: 2.33, 1: 2.311, 2: 2.309}, keep=1)
        [2]
        >>> race_survivors({0: 2.33, 1: 2.311, 2: 2.309}, keep=1, tolerance=0.005)
        [1, 2]
    """
    ranked = sorted(best, key=lambda b: (best[b], b))
    if not ranked:
        return []
    lead = best[ranked[0]]
    bound = lead + tolerance * abs(lead)
    return sorted(b for i, b in enumerate(ranked) if i < keep or best[b] < bound)


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@dataclass
class _Run:
    """Mutable state of one optimisation (everything a checkpoint holds)."""

    strokes: StrokeSet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generators: list[torch.Generator]
    seeds: list[int]
    iteration: int = 0
    best_loss: list[float] = field(default_factory=list)
    best_iteration: list[int] = field(default_factory=list)
    best_points: Tensor | None = None
    best_colors: Tensor | None = None
    patience: list[int] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    stop_iteration: list[int] = field(default_factory=list)
    frozen_points: Tensor | None = None
    frozen_colors: Tensor | None = None
    train_history: list[dict[str, Tensor]] = field(
        default_factory=list
    )  # per step, {term: [B]} (NaN = inactive)
    eval_history: list[tuple[int, dict[str, Tensor]]] = field(default_factory=list)
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)
    last_eval: list[float] = field(default_factory=list)
    step_index: Tensor | None = None  # candidates in the last step (None: all)
    _indices: dict[tuple[int, ...], Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return len(self.seeds)

    @property
    def active(self) -> list[int]:
        return [b for b in range(self.batch) if not self.stopped[b]]

    def index_of(self, ids: Sequence[int], device: torch.device) -> Tensor:
        """A cached index tensor of candidates ``ids``: built once per set, so the loop makes no
        host-to-device copy per step."""
        key = tuple(ids)
        if key not in self._indices:
            self._indices[key] = torch.tensor(key, dtype=torch.long, device=device)
        return self._indices[key]

    def active_index(self, device: torch.device) -> Tensor | None:
        """Index tensor of the active candidates (None when all are active)."""
        active = self.active
        return None if len(active) == self.batch else self.index_of(active, device)


class Sketcher:
    """Turns images into stroke sketches (CLIPasso).

    Args:
        config: A :class:`SketchConfig` (the defaults when omitted), or the name of a preset
            (:data:`~clipasso.config.PRESETS`; ``"reference"`` is the paper's exact recipe).
        loss: A :class:`~clipasso.losses.SketchLoss` object or a registry name (default
            ``config.loss``). Built lazily, once, and reused by every :meth:`sketch` call.
        initializer: An :class:`~clipasso.init.Initializer` or a registry name.
        rasterizer: A :class:`~clipasso.render.Rasterizer` or a registry name.
        optimizer: Factory ``param_groups -> torch.optim.Optimizer`` (default Adam).
        callbacks: :class:`~clipasso.callbacks.Callback` objects.
        matting: Optional background-removal model (see :class:`clipasso.image.Matting`).
        clip_model: CLIP weights for the loss: a loaded model to share, or a name/path (then the same
            as ``config.clip_model``).
        saliency_model: CLIP ViT for the saliency initializer: a loaded model to share, or a
            name/path (then the same as ``config.saliency_model``).
        text_model: Full CLIP model for the text term (``config.text``): a loaded model to share, or a
            name/path (then the same as ``config.text_model``).
        **settings: Overrides of :class:`SketchConfig` fields, e.g. ``num_strokes=8``.

    Example:
        >>> from clipasso import Sketcher
        >>> from clipasso.testing import tiny_clip
        >>> sk = Sketcher(clip_model=tiny_clip("resnet"), saliency_model=tiny_clip("vit"),
        ...               num_strokes=4, iterations=2, num_sketches=1, device="cpu")
        >>> result = sk.sketch(torch.rand(3, 64, 64))
        >>> result.strokes.num_strokes
        4

        Subclassing one stage::

            class MySketcher(Sketcher):
                def build_optimizer(self, strokes):
                    return torch.optim.SGD(strokes.parameters(), lr=0.5)
    """

    def __init__(
        self,
        config: SketchConfig | str | None = None,
        *,
        loss: SketchLoss | str | None = None,
        initializer: Initializer | str | None = None,
        rasterizer: Rasterizer | str | None = None,
        optimizer: OptimizerFactory | None = None,
        callbacks: Iterable[Callback] = (),
        matting: Matting | None = None,
        clip_model: nn.Module | str | os.PathLike[str] | None = None,
        saliency_model: nn.Module | str | os.PathLike[str] | None = None,
        text_model: nn.Module | str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(config, str):
            config = SketchConfig.preset(config)
        config = config if config is not None else SketchConfig()
        if not isinstance(config, SketchConfig):
            raise InputError(f"config must be a SketchConfig, got {type(config).__name__}")
        if isinstance(loss, str):
            settings["loss"] = loss
        if isinstance(initializer, str):
            settings["initializer"] = initializer
        if isinstance(rasterizer, str):
            settings["rasterizer"] = rasterizer
        # a name or path goes into the settings; a loaded module is shared as it is
        if isinstance(clip_model, (str, os.PathLike)):
            settings["clip_model"], clip_model = os.fspath(clip_model), None
        if isinstance(saliency_model, (str, os.PathLike)):
            settings["saliency_model"], saliency_model = os.fspath(saliency_model), None
        if isinstance(text_model, (str, os.PathLike)):
            settings["text_model"], text_model = os.fspath(text_model), None
        self.config = config.replace(**settings) if settings else config
        self._given_loss = loss if isinstance(loss, SketchLoss) else None
        self._loss: SketchLoss | None = None
        self._initializer = initializer if isinstance(initializer, Initializer) else None
        # runs without an image (text only) have their own objective and initializer, built lazily
        self._blank = False
        self._blank_loss: SketchLoss | None = None
        self._blank_initializer = self._initializer
        self._text_term: SketchLoss | None = None
        self._rasterizer = rasterizer if isinstance(rasterizer, Rasterizer) else None
        for name, value, kind in (
            ("loss", loss, SketchLoss),
            ("initializer", initializer, Initializer),
            ("rasterizer", rasterizer, Rasterizer),
        ):
            if value is not None and not isinstance(value, (str, kind)):
                raise InputError(
                    f"{name} must be a {kind.__name__} or a registry name, got {type(value).__name__}"
                )
        # unknown component names fail here, before any image is read or model loaded
        from .init.base import INITIALIZERS
        from .losses.base import LOSSES
        from .render.base import resolve_backend

        if self._given_loss is None:
            LOSSES.get(self.config.loss)
        if self._initializer is None:
            INITIALIZERS.get(self.config.initializer)
        if self._rasterizer is None:
            resolve_backend(self.config.rasterizer)
        self.build_callbacks()  # bad re-seeding options fail here too
        self.optimizer_factory = optimizer
        self.callbacks: list[Callback] = list(callbacks)
        self.matting = matting
        self.clip_model = clip_model
        self.saliency_model = saliency_model
        self.text_model = text_model
        self._device: torch.device | None = None

    # ------------------------------------------------------------------ components (lazy, once)

    @property
    def device(self) -> torch.device:
        """The device runs use (resolved from ``config.device`` on first access)."""
        if self._device is None:
            self._device = resolve_device(self.config.device)
        return self._device

    @property
    def loss(self) -> SketchLoss:
        """The objective (built on first access by :meth:`build_loss`; a loss object given to the
        Sketcher is used, with the text term added when ``config.text`` is set). During a run without
        an image, the objective of such runs (:meth:`build_blank_loss`)."""
        if self._blank:
            if self._blank_loss is None:
                self._blank_loss = self.build_blank_loss()
            return self._blank_loss
        if self._loss is None:
            if self._given_loss is None:
                self._loss = self.build_loss()
            else:
                text = self.build_text_loss()
                self._loss = self._given_loss if text is None else self._given_loss + text
        return self._loss

    @property
    def initializer(self) -> Initializer:
        """The initializer (built on first access by :meth:`build_initializer`). During a run without
        an image, the initializer of such runs (:meth:`build_blank_initializer`)."""
        if self._blank:
            if self._blank_initializer is None:
                self._blank_initializer = self.build_blank_initializer()
            return self._blank_initializer
        if self._initializer is None:
            self._initializer = self.build_initializer()
        return self._initializer

    @property
    def rasterizer(self) -> Rasterizer:
        """The rasterizer (built on first access by :meth:`build_rasterizer`)."""
        if self._rasterizer is None:
            self._rasterizer = self.build_rasterizer()
        return self._rasterizer

    def load(self, *, with_image: bool = True) -> None:
        """Build the loss, initializer and rasterizer and load every model they read lazily, now.

        Without it, weights load on the first :meth:`sketch` call; the command line calls it first
        so that a missing weights file is reported before any work or output.

        Args:
            with_image: Load what runs with an image need (default), or what runs without one need
                (``sketch(None)``: the text term and the blank-canvas initializer).

        Raises:
            WeightsError: A weights file is missing, corrupt or cannot be downloaded.
            InputError: ``with_image=False`` without ``config.text``, or a model that does not fit.
        """
        _ = self.rasterizer
        saved, self._blank = self._blank, not with_image
        try:
            self.loss.load(self.device)
            self.initializer.load(self.device)
        finally:
            self._blank = saved

    def build_loss(self) -> SketchLoss:
        """Create the objective of runs with an image from ``config.loss`` / ``config.loss_options``
        (override to customise).

        ``config.fidelity`` replaces ``clip_conv`` by ``clip_vit_layer`` on that ViT block (with
        its embedding term at :data:`FIDELITY_FC_WEIGHT`). ``config.text`` adds the text term
        (:meth:`build_text_loss`) and takes the image's place as the semantic target: a loss that
        takes ``fc_weight`` gets 0 (unless ``loss_options`` set it), and ``loss="clip_semantic"``
        becomes the text term alone. Without either, the objective is ``config.loss`` as configured.
        """
        from .losses.base import LOSSES

        cfg = self.config
        text = self.build_text_loss()
        if text is not None and cfg.loss == "clip_semantic" and cfg.fidelity is None:
            return text  # the prompt is the semantic term's target; there is no geometric term
        name = "clip_vit_layer" if cfg.fidelity is not None else cfg.loss
        factory = LOSSES.get(name)
        options = self._with_model(factory, cfg.loss_options, self.clip_model, cfg.clip_model)
        if cfg.fidelity is not None:
            options["layers"] = cfg.fidelity
            options.setdefault("fc_weight", FIDELITY_FC_WEIGHT)
        if text is not None and "fc_weight" not in cfg.loss_options and _accepts(factory, "fc_weight"):
            options["fc_weight"] = 0.0  # the prompt replaces the image as the semantic target
        speed = (
            ("precision", cfg.precision),
            ("channels_last", cfg.channels_last),
            ("target_pool", cfg.target_pool),
            ("num_views", cfg.num_views),
            ("identity_weight", cfg.identity_weight),
        )
        for key, value in speed:
            if key not in options and _accepts(factory, key):  # speed settings (docs/performance.md)
                options[key] = value
        if (
            cfg.background == "weight"
            and "mask_weighting" not in options
            and _accepts(factory, "mask_weighting")
        ):
            options["mask_weighting"] = cfg.mask_weighting  # the weight map inside the loss (issue 21)
        base = create_loss(name, **options)
        return base if text is None else base + text

    def build_text_term(self) -> SketchLoss:
        """The text term's loss: a :class:`~clipasso.losses.CLIPSemanticLoss` whose target is
        ``config.text`` (``num_views`` from the config; with ``loss="clip_semantic"``, its
        ``loss_options`` too). Its model: ``text_model``; if unset and ``loss="clip_semantic"``,
        ``clip_model``; else ViT-B/32."""
        from .losses.clip_semantic import CLIPSemanticLoss

        cfg = self.config
        own = cfg.loss == "clip_semantic" and cfg.fidelity is None
        options = dict(cfg.loss_options) if own else {}
        shared, configured = self.text_model, cfg.text_model
        if own and shared is None and configured is None:
            shared, configured = self.clip_model, cfg.clip_model
        options = self._with_model(CLIPSemanticLoss, options, shared, configured)
        options.setdefault("num_views", cfg.num_views)
        options["text"] = cfg.text
        return CLIPSemanticLoss(**options)

    def build_text_loss(self, start: int | None = None) -> SketchLoss | None:
        """The text term, weighted by ``config.text_weight`` and on from ``config.text_start`` (or
        ``start``); None without ``config.text``. The term's loss is built once
        (:meth:`build_text_term`), so the prompts are tokenised and embedded once per Sketcher."""
        from .losses.compose import ComposedLoss, Term

        cfg = self.config
        if not cfg.text:
            return None
        if self._text_term is None:
            self._text_term = self.build_text_term()
        first = cfg.text_start if start is None else start
        return ComposedLoss([Term(self._text_term, weight=cfg.text_weight, start=first)])

    def build_blank_loss(self) -> SketchLoss:
        """The objective of a run without an image: the text term alone, on from step 0 (there is
        nothing else to optimise before it); a loss object given to the Sketcher is added to it.

        Raises:
            InputError: Without ``config.text``.
        """
        text = self.build_text_loss(start=0)
        if text is None:
            raise InputError("a sketch without an image needs a text prompt (text=...)")
        return text if self._given_loss is None else self._given_loss + text

    def build_initializer(self) -> Initializer:
        """Create the initializer from ``config.initializer`` (override to customise)."""
        return self._initializer_from(self.config.initializer, self.config.initializer_options)

    def build_blank_initializer(self) -> Initializer:
        """The initializer of runs without an image. A blank canvas has nothing salient, so
        ``saliency`` becomes ``random`` (with the options ``random`` takes) and ``svg`` tops up with
        ``random`` (unless ``initializer_options`` name a ``top_up``); others are as configured."""
        from .init.base import INITIALIZERS

        cfg = self.config
        name, options = cfg.initializer, dict(cfg.initializer_options)
        if name == "saliency":
            name = "random"
            params = inspect.signature(INITIALIZERS.get(name)).parameters
            options = {k: v for k, v in options.items() if k in params}
        elif name == "svg":
            options.setdefault("top_up", "random")
        return self._initializer_from(name, options)

    def _initializer_from(self, name: str, configured: dict[str, Any]) -> Initializer:
        from .init.base import INITIALIZERS

        cfg = self.config
        factory = INITIALIZERS.get(name)
        options = self._with_model(factory, configured, self.saliency_model, cfg.saliency_model)
        for key, value in (("num_segments", cfg.num_segments), ("width", cfg.width)):
            if key not in options and _accepts(factory, key):
                options[key] = value
        return create_initializer(name, **options)

    def _with_model(
        self,
        factory: Callable[..., Any],
        options: dict[str, Any],
        shared: nn.Module | None,
        configured: str | None,
    ) -> dict[str, Any]:
        """``options`` plus ``model=`` (a shared module, else the configured name) if the factory takes it."""
        options = dict(options)
        if "model" not in options and _accepts(factory, "model"):
            if shared is not None:
                options["model"] = shared.to(self.device)
            elif configured is not None:
                options["model"] = configured
        return options

    def build_rasterizer(self) -> Rasterizer:
        """Create the rasterizer from ``config.rasterizer``."""
        return get_rasterizer(self.config.rasterizer)

    def build_optimizer(self, strokes: StrokeSet) -> torch.optim.Optimizer:
        """Adam over the control points (lr ``config.lr``), plus opacity at ``config.opacity_lr``."""
        groups: list[dict[str, Any]] = [{"params": [strokes.points], "lr": self.config.lr}]
        if self.config.optimize_opacity:
            groups.append({"params": [strokes.colors], "lr": self.config.opacity_lr})
        if self.optimizer_factory is not None:
            return self.optimizer_factory(groups)
        return torch.optim.Adam(groups)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, iterations: int) -> Any:
        """The learning-rate schedule (None by default, as the reference).

        ``lr_schedule="cosine"``: step ``t`` (0-based) uses ``lr * cosine_lr_factor(t, iterations, D)``
        with ``D = max(round(lr_decay_fraction * iterations), 1)``: constant up to step
        ``iterations - D``, then a cosine that reaches 0 at ``iterations``.
        """
        if self.config.lr_schedule != "cosine":
            return None
        decay = max(round(self.config.lr_decay_fraction * iterations), 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: cosine_lr_factor(t, iterations, decay))

    def build_callbacks(self) -> list[Callback]:
        """The callbacks the settings ask for, added to ``self.callbacks`` for each run.

        A :class:`~clipasso.reseed.Reseed` every :meth:`reseed_every` steps (when > 0), with
        ``config.reseed_options``. Built afresh for every :meth:`sketch` call (override to add your own).
        """
        every = self.reseed_every()
        if every <= 0:
            return []
        from .reseed import Reseed

        return [Reseed(every, **self.config.reseed_options)]

    def reseed_every(self) -> int:
        """``config.reseed_every``, with None resolved: 50 for the ``edges`` objective, else 0.

        The weights-free objective is named ``"edges"`` in the config or passed as an
        :class:`~clipasso.losses.EdgeLoss` object.
        """
        every = self.config.reseed_every
        if every is not None:
            return every
        from .losses.edge import EdgeLoss

        given = self._given_loss
        edges = self.config.loss == "edges" if given is None else isinstance(given, EdgeLoss)
        return DEFAULT_RESEED_EVERY if edges else 0

    # ------------------------------------------------------------------ stages

    def prepare(self, image: ImageLike | None, mask: ImageLike | None = None) -> Target:
        """Read and preprocess the target (METHOD §1); ``None``: a white canvas of
        ``config.canvas_size`` (else ``image_size``) pixels a side, for a run without an image.
        ``mask``: a file/array, or a mask source name; ``config.background`` says how it is used
        (:func:`clipasso.background.prepare_background`)."""
        cfg = self.config
        if image is None:
            if mask is not None:
                raise InputError("a mask needs an image: a sketch without an image takes no mask")
            side = cfg.canvas_size if cfg.canvas_size is not None else cfg.image_size
            return Target(torch.ones(1, 3, side, side), None, (side, side))
        from .background import prepare_background  # the mask's source and use (issue 21)

        return prepare_background(self, image, mask)

    def initialize(
        self, target: Target, num_strokes: int, seeds: Sequence[int]
    ) -> tuple[StrokeSet, list[InitResult], list[torch.Generator]]:
        """Initial strokes of every candidate, batched ``[B, N, P, 2]``, with their init maps and the
        per-candidate generators (seeded; they go on to drive the augmentations)."""
        image = target.image.to(self.device)
        mask = target.mask.to(self.device) if target.mask is not None else None
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        inits = [self.initializer(image, num_strokes, generator=g, mask=mask) for g in generators]
        strokes = StrokeSet.cat([r.strokes for r in inits])
        trainable = ("points", "colors") if self.config.optimize_opacity else ("points",)
        strokes = StrokeSet(
            strokes.points.detach().to(self.device),
            strokes.widths.detach().to(self.device),
            strokes.colors.detach().to(self.device),
            canvas_size=strokes.canvas_size,
            trainable=trainable,
        )
        return strokes, inits, generators

    def render(self, strokes: StrokeSet, index: Tensor | None = None) -> Tensor:
        """Render (a subset of) the candidates over white: ``[B, 3, H, W]``."""
        points, widths, colors = strokes.points, strokes.widths, strokes.colors
        if self.config.optimize_opacity:
            colors = torch.cat([colors[..., :3], colors[..., 3:].clamp(0, 1)], dim=-1)
        if index is not None:
            points, widths, colors = points[index], widths[index], colors[index]
        return self.rasterizer.render_over(points, widths, colors, strokes.canvas_size, 1.0)

    def compute_loss(self, sketch: Tensor, target: Target, context: LossContext) -> dict[str, Tensor]:
        """The loss terms ``{name: [B]}`` of rendered sketches."""
        image = target.image.to(sketch.device)
        return dict(self.loss(sketch, image, context))

    def step(self, run: _Run, target: Target) -> dict[str, Tensor]:
        """One optimisation step at ``run.iteration``: render, loss, (evaluate), backward, update.

        Returns:
            The training terms ``{name: [B_active]}``.
        """
        cfg = self.config
        active = run.active
        index = run.step_index = run.active_index(self.device)
        sketch = self.render(run.strokes, index)
        mask = target.mask.to(self.device) if target.mask is not None else None
        gens: list[torch.Generator] | torch.Generator = [run.generators[b] for b in active]
        if cfg.shared_views:
            gens = run.generators[0]
        opacity = run.strokes.colors[..., 3].clamp(0, 1)
        ctx = LossContext(
            iteration=run.iteration,
            mode="train",
            generators=gens,
            mask=mask,
            strokes=opacity if index is None else opacity[index],
        )
        terms = self.compute_loss(sketch, target, ctx)
        total = torch.stack(list(terms.values())).sum(0)
        self._check_finite(run, target, terms, total)
        if run.iteration % cfg.eval_every == 0:
            self.evaluate(run, target, sketch.detach(), active, index)
        run.optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        self._restore_stopped(run)
        return {k: v.detach() for k, v in terms.items()} | {"total": total.detach()}

    def evaluate(
        self, run: _Run, target: Target, sketch: Tensor, active: list[int], index: Tensor | None = None
    ) -> list[float]:
        """Score the rendered ``sketch`` (of the ``active`` candidates) on the un-augmented objective
        and apply :meth:`update_best` to each. Returns the losses (len ``B``; NaN for inactive).

        The objective is scored as it stands at the run's last step: every scheduled term at its
        final weight (``loss.after(k)``, a text term's ``text_start``), whatever the step, so that
        the best-strokes choice compares scores of one objective throughout the run."""
        mask = target.mask.to(self.device) if target.mask is not None else None
        with torch.no_grad():
            # every schedule at its last step's weight: a term switched on late (a text term's
            # text_start, loss.after(k)) counts from the first evaluation, so scores stay comparable
            final = max(run.iteration, self.config.iterations - 1)
            ctx = LossContext(iteration=run.iteration, mode="eval", mask=mask, schedule_iteration=final)
            terms = self.compute_loss(sketch, target, ctx)
            total = torch.stack(list(terms.values())).sum(0)
        values = total.tolist()
        full = [math.nan] * run.batch
        for j, b in enumerate(active):
            full[b] = values[j]
        record = {k: self._scatter(v.detach(), index, run.batch) for k, v in terms.items()}
        record["total"] = torch.tensor(full)
        record = {k: v.cpu() for k, v in record.items()}
        run.eval_history.append((run.iteration, record))
        run.snapshots.append((run.iteration, run.strokes.points.detach().to("cpu", copy=True)))
        for j, b in enumerate(active):
            if not math.isfinite(values[j]):
                self._raise_nonfinite(run, target, {k: v[j : j + 1] for k, v in terms.items()}, "eval")
            if self.update_best(run, b, values[j]):
                self._stop(run, b)
        for b in self.prune(run):
            self._stop(run, b)
        run.last_eval = full
        return full

    def prune(self, run: _Run) -> list[int]:
        """The racing rule (``config.prune_after``): which running candidates stop now.

        Called after every evaluation; the race has at most two rounds. At the first evaluation at
        or after ``prune_after``, the ``prune_keep`` running candidates with the lowest best
        evaluation loss go on (ties: the lower index), and so does any other whose best loss is
        less than ``prune_tolerance`` (relative) above the leader's (see :func:`race_survivors`).
        If ``prune_until`` is set, the survivors then run side by side until the first evaluation
        at or after it, where only ``prune_keep`` go on. The others stop at the round, keeping their
        best strokes, and stay in the result as candidates. With ``prune_after=None`` (the
        reference) nothing is pruned.

        Returns:
            The indices of the candidates to stop.
        """
        cfg = self.config
        active = run.active
        before = run.eval_history[-2][0] if len(run.eval_history) >= 2 else -1  # the previous evaluation
        tolerance = race_round(before, run.iteration, cfg.prune_after, cfg.prune_until, cfg.prune_tolerance)
        if tolerance is None or len(active) <= cfg.prune_keep:
            return []
        going_on = race_survivors({b: run.best_loss[b] for b in active}, cfg.prune_keep, tolerance)
        return sorted(set(active) - set(going_on))

    def update_best(self, run: _Run, b: int, loss: float) -> bool:
        """The reference's eval rule for candidate ``b``; returns True when it should stop.

        A loss more than ``early_stop_delta`` below the best is an improvement (its strokes, the ones
        just evaluated, are kept); one within ``early_stop_delta`` of the best is a "no change", and
        ``early_stop_patience`` of those since the last improvement stop the candidate.
        """
        cfg = self.config
        assert run.best_points is not None and run.best_colors is not None
        delta = loss - run.best_loss[b]
        if run.best_loss[b] == math.inf or (abs(delta) > cfg.early_stop_delta and delta < 0):
            run.best_loss[b] = loss
            run.best_iteration[b] = run.iteration
            run.best_points[b] = run.strokes.points.detach()[b]
            run.best_colors[b] = run.strokes.colors.detach()[b]
            run.patience[b] = 0
            return False
        if abs(delta) <= cfg.early_stop_delta and cfg.early_stop_patience > 0:
            run.patience[b] += 1
            return run.patience[b] >= cfg.early_stop_patience
        return False

    def select(self, candidates: Sequence[Candidate]) -> int:
        """Best-of-N: the index of the candidate with the lowest best evaluation loss."""
        scores = [c.score for c in candidates]
        return min(range(len(scores)), key=lambda i: (not math.isfinite(scores[i]), scores[i]))

    # ------------------------------------------------------------------ the run

    def sketch(
        self,
        image: ImageLike | None = None,
        *,
        mask: ImageLike | None = None,
        num_strokes: int | None = None,
        num_sketches: int | None = None,
        seed: int | None = None,
        iterations: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> SketchResult:
        """Sketch one image, or draw ``config.text`` on a blank canvas.

        Args:
            image: A path, PIL image, numpy array ``[H, W, C]`` or tensor ``[C, H, W]`` in [0, 1];
                None: a sketch of the text prompt(s) alone, on a white canvas of
                ``config.canvas_size`` (else ``image_size``) pixels, from random (or SVG) strokes.
            mask: Optional object mask of the image's size (an alpha channel is used otherwise), or
                a mask source: ``"u2net"``, ``"saliency"``, ``"weights-free"``
                (:mod:`clipasso.background`; ``config.background`` says how it is used).
            num_strokes, num_sketches, seed, iterations: Per-call overrides of the config.
            checkpoint: A file to write the full state to every ``config.checkpoint_every`` steps
                (atomically). If it exists, the run resumes from it and ends exactly as an
                uninterrupted run would; a checkpoint from other settings is refused.

        Returns:
            A :class:`~clipasso.result.SketchResult`.

        Raises:
            InputError: Bad image, mask or settings; no image and no ``config.text``;
                ``canvas_size`` or ``fidelity`` set for a run they do not apply to.
            NonFiniteLossError: The loss became NaN/inf (``.result`` holds the best so far).
            CheckpointError: The checkpoint is corrupt or from other settings.
        """
        overrides = {
            k: v
            for k, v in (
                ("num_strokes", num_strokes),
                ("num_sketches", num_sketches),
                ("seed", seed),
                ("iterations", iterations),
            )
            if v is not None
        }
        cfg = self.config.replace(**overrides) if overrides else self.config
        if image is None and not cfg.text:
            raise InputError("nothing to sketch: pass an image, or a text prompt (text=...) to draw")
        if image is None and cfg.fidelity is not None:
            raise InputError("fidelity sets how closely a sketch follows its image: it needs an image")
        if image is not None and cfg.canvas_size is not None:
            raise InputError(
                "canvas_size is the canvas of a run without an image; with an image the canvas is "
                f"image_size ({cfg.image_size})"
            )
        saved, self.config = self.config, cfg
        self._blank = image is None
        try:
            with intra_op_threads(cfg.threads):
                return self._sketch(image, mask, checkpoint)
        finally:
            self.config = saved
            self._blank = False

    def _sketch(self, image: ImageLike | None, mask: ImageLike | None, checkpoint: Any) -> SketchResult:
        cfg = self.config
        t0 = time.perf_counter()
        target = self.prepare(image, mask)
        seeds = [cfg.seed + b * cfg.seed_stride for b in range(cfg.num_sketches)]
        ckpt_path = Path(checkpoint) if checkpoint is not None else None
        fingerprint = self._fingerprint(target, seeds)
        # the loop works on a copy of the target on the run's device, moved once, not every step
        work = Target(
            target.image.to(self.device),
            target.mask.to(self.device) if target.mask is not None else None,
            target.original_size,
        )
        self.loss.to(self.device)
        strokes, inits, generators = self.initialize(work, cfg.num_strokes, seeds)
        t_init = time.perf_counter()
        optimizer = self.build_optimizer(strokes)
        run = _Run(
            strokes=strokes,
            optimizer=optimizer,
            scheduler=self.build_scheduler(optimizer, cfg.iterations),
            generators=generators,
            seeds=seeds,
        )
        b = run.batch
        run.best_loss, run.best_iteration = [math.inf] * b, [0] * b
        run.patience, run.stopped, run.stop_iteration = [0] * b, [False] * b, [cfg.iterations] * b
        run.best_points = strokes.points.detach().clone()
        run.best_colors = strokes.colors.detach().clone()
        run.frozen_points = strokes.points.detach().clone()
        run.frozen_colors = strokes.colors.detach().clone()
        if ckpt_path is not None and ckpt_path.exists():
            self._load_checkpoint(run, ckpt_path, fingerprint)
        state = SketchState(iteration=run.iteration, strokes=run.strokes, target=work, optimizer=optimizer)
        self._sync_state(state, run, {})
        callbacks = [*self.callbacks, *self.build_callbacks()]
        for cb in callbacks:
            cb.on_start(self, state)
        while run.iteration < cfg.iterations and run.active:
            evaluated = run.iteration % cfg.eval_every == 0
            terms = self.step(run, work)
            run.train_history.append({k: self._scatter(v, run.step_index, b) for k, v in terms.items()})
            self._sync_state(state, run, terms)
            for cb in callbacks:
                if evaluated:
                    cb.on_eval(self, state)
                cb.on_step(self, state)
            run.iteration += 1
            if ckpt_path is not None and run.iteration % cfg.checkpoint_every == 0:
                self._save_checkpoint(run, ckpt_path, fingerprint)
            if state.stop:
                break
        if run.active and not state.stop:  # the final strokes get their evaluation too
            active = run.active
            index = run.active_index(self.device)
            with torch.no_grad():
                sketch = self.render(run.strokes, index)
            self.evaluate(run, work, sketch, active, index)
            self._sync_state(state, run, {})
            for cb in callbacks:
                cb.on_eval(self, state)
        for bb in run.active:
            run.stop_iteration[bb] = run.iteration
        if ckpt_path is not None:
            self._save_checkpoint(run, ckpt_path, fingerprint)
        t_end = time.perf_counter()
        steps = max(len(run.train_history), 1)
        timings = {
            "prepare_and_init": t_init - t0,
            "optimize": t_end - t_init,
            "total": t_end - t0,
            "per_step": (t_end - t_init) / steps,
        }
        result = self._result(run, target, inits, timings)
        for cb in callbacks:
            cb.on_end(self, result)
        return result

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _scatter(values: Tensor, index: Tensor | None, batch: int) -> Tensor:
        # stays on the values' device: no host sync inside the loop
        if index is None:
            return values.detach().float()
        out = torch.full((batch,), math.nan, device=values.device)
        out[index] = values.detach().float()
        return out

    def _sync_state(self, state: SketchState, run: _Run, terms: dict[str, Tensor]) -> None:
        state.iteration = run.iteration
        state.strokes = run.strokes
        state.terms = terms
        state.active = run.active
        state.eval_loss = list(run.last_eval)
        state.best_loss = list(run.best_loss)
        state.best_iteration = list(run.best_iteration)

    def _stop(self, run: _Run, b: int) -> None:
        assert run.frozen_points is not None and run.frozen_colors is not None
        run.stopped[b] = True
        run.stop_iteration[b] = run.iteration
        run.frozen_points[b] = run.strokes.points.detach()[b]
        run.frozen_colors[b] = run.strokes.colors.detach()[b]

    @staticmethod
    def _restore_stopped(run: _Run) -> None:
        if all(not s for s in run.stopped):
            return
        assert run.frozen_points is not None and run.frozen_colors is not None
        idx = run.index_of([b for b, s in enumerate(run.stopped) if s], run.strokes.points.device)
        with torch.no_grad():
            run.strokes.points[idx] = run.frozen_points[idx]
            run.strokes.colors[idx] = run.frozen_colors[idx]

    def _check_finite(self, run: _Run, target: Target, terms: dict[str, Tensor], total: Tensor) -> None:
        # On CPU this check is free; on accelerators it would force a sync every step, so there it
        # runs at evaluation steps only (a NaN still surfaces there, naming the term).
        if total.device.type != "cpu" and run.iteration % self.config.eval_every != 0:
            return
        if not bool(torch.isfinite(total).all()):
            self._raise_nonfinite(run, target, terms, "train")

    def _raise_nonfinite(self, run: _Run, target: Target, terms: dict[str, Tensor], mode: str) -> None:
        bad = next((k for k, v in terms.items() if not bool(torch.isfinite(v).all())), "total")
        partial = None
        if any(math.isfinite(x) for x in run.best_loss):
            partial = self._result(run, target, None, {})
        raise NonFiniteLossError(
            f"the {mode} loss term {bad!r} became non-finite at iteration {run.iteration}; "
            "the best result so far is attached as .result",
            iteration=run.iteration,
            term=bad,
            result=partial,
        )

    def _result(
        self, run: _Run, target: Target, inits: list[InitResult] | None, timings: dict[str, float]
    ) -> SketchResult:
        assert run.best_points is not None and run.best_colors is not None
        keys = list(dict.fromkeys(k for h in run.train_history for k in h))  # a scheduled term may start late
        nan = torch.full((run.batch,), math.nan)
        train = {
            k: torch.stack([h[k].cpu() if k in h else nan for h in run.train_history]).tolist() for k in keys
        }
        evals = [(it, {k: v.cpu().tolist() for k, v in rec.items()}) for it, rec in run.eval_history]
        candidates = []
        for b in range(run.batch):
            strokes = StrokeSet(
                run.best_points[b : b + 1].detach().cpu(),
                run.strokes.widths[b : b + 1].detach().cpu(),
                run.best_colors[b : b + 1].detach().cpu().clamp(0, 1),
                canvas_size=run.strokes.canvas_size,
            )
            history = LossHistory()
            last = run.stop_iteration[b]
            for k, rows in train.items():
                history.train[k] = [row[b] for row in rows[:last]]
            for it, rec in evals:
                if math.isnan(rec["total"][b]):
                    continue
                history.eval_iterations.append(it)
                for k, v in rec.items():
                    history.eval.setdefault(k, []).append(v[b])
            snaps = [(it, pts[b]) for it, pts in run.snapshots if it <= last]
            init = inits[b] if inits is not None else None
            candidates.append(
                Candidate(
                    strokes=strokes,
                    score=run.best_loss[b],
                    seed=run.seeds[b],
                    best_iteration=run.best_iteration[b],
                    stop_iteration=last,
                    history=history,
                    snapshots=snaps,
                    init=_init_to_cpu(init),
                )
            )
        best = self.select(candidates)
        return SketchResult(
            candidates=candidates,
            best_index=best,
            target=Target(
                target.image.cpu(),
                target.mask.cpu() if target.mask is not None else None,
                target.original_size,
            ),
            config=self.config,
            timings=timings,
            rasterizer=self.rasterizer,
        )

    # ------------------------------------------------------------------ checkpoints

    def _fingerprint(self, target: Target, seeds: list[int]) -> str:
        settings = self.config.to_dict()
        for volatile in ("iterations", "device", "threads", "checkpoint_every"):
            settings.pop(volatile, None)
        digest = hashlib.sha256()
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        # components by class (their reprs may show load state, which must not matter)
        digest.update(type(self.loss).__qualname__.encode())
        digest.update(type(self.initializer).__qualname__.encode())
        digest.update(type(self.rasterizer).__qualname__.encode())
        digest.update(target.image.detach().cpu().contiguous().numpy().tobytes())
        digest.update(json.dumps(seeds).encode())
        return digest.hexdigest()

    def _precision_modules(self) -> list[Any]:
        """Loss modules that pick their arithmetic at run time (``active_precision``)."""
        return _precision_modules_of(self.loss)

    def _save_checkpoint(self, run: _Run, path: Path, fingerprint: str) -> None:
        payload = {
            "version": _CHECKPOINT_VERSION,
            "fingerprint": fingerprint,
            "iteration": run.iteration,
            "points": run.strokes.points.detach().cpu(),
            "colors": run.strokes.colors.detach().cpu(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "generators": [g.get_state() for g in run.generators],
            "best_loss": run.best_loss,
            "best_iteration": run.best_iteration,
            "best_points": run.best_points,
            "best_colors": run.best_colors,
            "patience": run.patience,
            "stopped": run.stopped,
            "stop_iteration": run.stop_iteration,
            "frozen_points": run.frozen_points,
            "frozen_colors": run.frozen_colors,
            "train_history": [{k: v.cpu() for k, v in h.items()} for h in run.train_history],
            "eval_history": [[it, rec] for it, rec in run.eval_history],
            "snapshots": [[it, pts] for it, pts in run.snapshots],
            "last_eval": run.last_eval,
            # a precision chosen at run time (precision="auto") must stay the same after a resume
            "precisions": [m.active_precision for m in self._precision_modules()],
        }
        write_checkpoint(path, payload)

    def _load_checkpoint(self, run: _Run, path: Path, fingerprint: str) -> None:
        data = read_checkpoint(path)
        if data["fingerprint"] != fingerprint:
            raise CheckpointError(
                f"checkpoint {path} was written for other settings, another image or other components; "
                "delete it or pass another checkpoint path"
            )
        _check_checkpoint_shapes(data, run, path)
        dev = self.device
        try:
            run.optimizer.load_state_dict(data["optimizer"])
            if run.scheduler is not None and data["scheduler"] is not None:
                run.scheduler.load_state_dict(data["scheduler"])
            for g, s in zip(run.generators, data["generators"]):
                g.set_state(s)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"checkpoint {path} has an unusable optimizer or generator state: {exc}"
            ) from None
        with torch.no_grad():
            run.strokes.points.copy_(data["points"].to(dev))
            run.strokes.colors.copy_(data["colors"].to(dev))
        run.iteration = data["iteration"]
        run.best_loss = [float(x) for x in data["best_loss"]]
        run.best_iteration = list(data["best_iteration"])
        run.best_points = data["best_points"].to(dev)
        run.best_colors = data["best_colors"].to(dev)
        run.patience = list(data["patience"])
        run.stopped = list(data["stopped"])
        run.stop_iteration = list(data["stop_iteration"])
        run.frozen_points = data["frozen_points"].to(dev)
        run.frozen_colors = data["frozen_colors"].to(dev)
        run.train_history = [{k: v.to(dev) for k, v in h.items()} for h in data["train_history"]]
        run.eval_history = [(it, rec) for it, rec in data["eval_history"]]
        run.snapshots = [(it, pts) for it, pts in data["snapshots"]]
        run.last_eval = [float(x) for x in data["last_eval"]]
        for module, precision in zip(self._precision_modules(), data["precisions"]):
            module.active_precision = precision


# ---------------------------------------------------------------------------------------------- checkpoints

_CHECKPOINT_FORMAT = "clipasso-checkpoint"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _torch_load(source: Any, what: str) -> Any:
    try:
        with warnings.catch_warnings():  # a damaged pickle makes torch warn before it fails
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {what}: {_first_line(exc)}") from None


def write_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a run's state atomically as a checkpoint that :func:`read_checkpoint` verifies.

    The state is serialised with :func:`torch.save` and stored as bytes beside their SHA-256, so any
    later corruption of the file is detected.

    Args:
        path: The file (parent folders are created).
        state: What :meth:`Sketcher.sketch` saves (tensors, numbers, lists, dicts).

    Returns:
        The path.
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    body = buffer.getvalue()
    envelope = {"format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "sha256": _sha256(body)}
    envelope["payload"] = body
    with atomic_open(path, "wb") as fh:
        torch.save(envelope, fh)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint file written by :meth:`Sketcher.sketch` (``checkpoint=``).

    The file holds the run's state as bytes with their SHA-256; the bytes are checked before they
    are unpickled (with ``weights_only=True``), and the state's layout is checked after.

    Args:
        path: The checkpoint file.

    Returns:
        The saved state, a dict whose ``"fingerprint"`` identifies the settings, image and seeds.

    Raises:
        CheckpointError: A missing, truncated or corrupt file, one of another format or version,
            or one whose state is incomplete; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes)")
    envelope = _torch_load(p, str(p))
    if isinstance(envelope, dict) and "format" not in envelope and "fingerprint" in envelope:
        raise CheckpointError(
            f"checkpoint {p} was written by an older clipasso (version {envelope.get('version')!r}); "
            "delete it and run again"
        )
    if not isinstance(envelope, dict) or envelope.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a clipasso checkpoint")
    if envelope.get("version") != _CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {p} has version {envelope.get('version')!r}; this clipasso reads version "
            f"{_CHECKPOINT_VERSION} (delete it and run again)"
        )
    body = envelope.get("payload")
    if not isinstance(body, bytes) or envelope.get("sha256") != _sha256(body):
        raise CheckpointError(f"checkpoint {p} is corrupt (its checksum does not match); delete it")
    data = _torch_load(io.BytesIO(body), str(p))
    _check_checkpoint_layout(data, p)
    return cast(dict[str, Any], data)


def _is_int_list(value: Any, n: int | None = None) -> bool:
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return ok and (n is None or len(value) == n)


def _is_number_list(value: Any) -> TypeGuard[list[Any]]:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def _check_checkpoint_layout(data: Any, path: Path) -> None:
    """Every entry a resume reads, with its type and the batch size consistent."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is incomplete or damaged: {what}")

    if not isinstance(data, dict):
        raise bad(f"the state is a {type(data).__name__}")
    if data.get("version") != _CHECKPOINT_VERSION or not isinstance(data.get("fingerprint"), str):
        raise bad("no version or fingerprint")
    iteration = data.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise bad(f"iteration is {iteration!r}")
    best_loss = data.get("best_loss")
    if not _is_number_list(best_loss):
        raise bad("best_loss")
    b = len(best_loss)
    for key in ("best_iteration", "patience", "stop_iteration"):
        if not _is_int_list(data.get(key), b):
            raise bad(key)
    if not isinstance(data.get("stopped"), list) or len(data["stopped"]) != b:
        raise bad("stopped")
    if not all(isinstance(x, bool) for x in data["stopped"]):
        raise bad("stopped")
    last_eval = data.get("last_eval")
    if not _is_number_list(last_eval) or len(last_eval) not in (0, b):
        raise bad("last_eval")
    for key in ("points", "colors", "best_points", "best_colors", "frozen_points", "frozen_colors"):
        t = data.get(key)
        if not isinstance(t, Tensor) or not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise bad(f"{key} is not a finite tensor")
    gens = data.get("generators")
    if not isinstance(gens, list) or len(gens) != b or not all(isinstance(g, Tensor) for g in gens):
        raise bad("generators")
    if not isinstance(data.get("optimizer"), dict):
        raise bad("optimizer")
    if data.get("scheduler") is not None and not isinstance(data["scheduler"], dict):
        raise bad("scheduler")
    history = data.get("train_history")
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in h.items())
        for h in history
    ):
        raise bad("train_history")
    for key, kind in (("eval_history", dict), ("snapshots", Tensor)):
        entries = data.get(key)
        if not isinstance(entries, list) or not all(
            isinstance(e, (list, tuple))
            and len(e) == 2
            and isinstance(e[0], int)
            and not isinstance(e[0], bool)
            and isinstance(e[1], kind)
            for e in entries
        ):
            raise bad(key)
    precisions = data.get("precisions")
    if not isinstance(precisions, list) or not all(isinstance(x, str) for x in precisions):
        raise bad("precisions")


def _check_checkpoint_shapes(data: dict[str, Any], run: _Run, path: Path) -> None:
    """The saved tensors and lists fit this run (the fingerprint says they should)."""
    shapes = {
        "points": run.strokes.points.shape,
        "colors": run.strokes.colors.shape,
        "best_points": run.strokes.points.shape,
        "best_colors": run.strokes.colors.shape,
        "frozen_points": run.strokes.points.shape,
        "frozen_colors": run.strokes.colors.shape,
    }
    for key, shape in shapes.items():
        if tuple(data[key].shape) != tuple(shape):
            raise CheckpointError(
                f"checkpoint {path} does not fit this run: {key} has shape {list(data[key].shape)}, "
                f"expected {list(shape)}"
            )
    if len(data["best_loss"]) != run.batch:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run: {len(data['best_loss'])} candidates, "
            f"expected {run.batch}"
        )


def _precision_modules_of(loss: nn.Module) -> list[Any]:
    return [m for m in loss.modules() if hasattr(m, "active_precision")]


def _init_to_cpu(init: InitResult | None) -> InitResult | None:
    if init is None:
        return None

    def cpu(x: Tensor | None) -> Tensor | None:
        return x.detach().cpu() if x is not None else None

    return InitResult(
        strokes=init.strokes,
        relevance=cpu(init.relevance),
        edges=cpu(init.edges),
        distribution=cpu(init.distribution),
        pixels=cpu(init.pixels),
    )
