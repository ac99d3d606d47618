"""The :class:`Sketcher`: the thin class that wires the CLIPasso method's parts and hands a run to
the engine (:mod:`clipasso.engine`).

Every decision is a method research code can override: ``build_*`` (loss, initializer, rasterizer,
optimizer, scheduler, callbacks), :meth:`Sketcher.prepare` (the target), :meth:`Sketcher.initialize`,
:meth:`Sketcher.render`, :meth:`Sketcher.compute_loss`, :meth:`Sketcher.update_best` (the
evaluation/early-stop rule), :meth:`Sketcher.prune` (the race) and :meth:`Sketcher.select`
(best-of-N). The loop itself, with its hooks, is :class:`clipasso.engine.Engine`; callbacks
(:class:`clipasso.callbacks.Callback`) plug into it. docs/sketcher.md, "Where to change what".

Best-of-N runs as ONE batched optimisation: the N candidates are a batch of B = N sketches with
independent seeds, per-sketch losses and per-element Adam, so the batch gives the same sketches as N
separate runs (to float tolerance) at a fraction of the cost.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import batched, prefixes
from .callbacks import Callback
from .config import SketchConfig
from .device import resolve_device
from .engine import (
    Checkpointer,
    Engine,
    LoopSettings,
    RunState,
    candidates_from_state,
    cosine_lr_factor,
    cosine_schedule,
    early_stop_update,
    fingerprint,
    race_round,
    race_stops,
    race_survivors,
    read_checkpoint,
    select_best,
    write_checkpoint,
)
from .errors import InputError, NonFiniteLossError
from .image import ImageLike, Matting, Target
from .init.base import Initializer, InitResult, create_initializer
from .losses.base import LossContext, RunSettings, SketchLoss, create_loss
from .prefixes import choose_stroke_count, default_prefix_weights, nested_loss, prefix_weights
from .render import Rasterizer, create_rasterizer
from .result import Candidate, SketchResult
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

#: ``SketchConfig.reseed_every=None`` with the weights-free ``edges`` objective (docs/initializers.md).
DEFAULT_RESEED_EVERY = 50


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


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
        if settings.get("num_strokes") == "auto":  # the stroke count chosen after the run
            settings["auto_strokes"] = True
            settings["num_strokes"] = settings.get("auto_max_strokes", config.auto_max_strokes)
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
    def nested_mode(self) -> str:
        """The nested mode a run uses: ``config.nested_mode``, with ``"auto"`` resolved against the
        objective: ``"spread"`` when every term can spread its random views over the prefixes
        (:meth:`~clipasso.losses.SketchLoss.spreads_views`: the CLIP losses with random views, a
        plain step's cost), else ``"sample"`` (the full sketch and one drawn prefix each step, with
        half of the weight on the full sketch unless ``nested_weights`` are given; until
        2026-12-03 ``"all"``). Asked after the loss is configured for a run (its ``num_views`` may
        decide)."""
        mode = self.config.nested_mode
        if mode != "auto":
            return mode
        return "spread" if self.loss.spreads_views() else "sample"

    @property
    def nested_weights(self) -> list[float] | None:
        """The prefix weights a nested run uses, one per prefix in increasing order
        (``config.nested_weights``, or :func:`~clipasso.prefixes.default_prefix_weights` of
        :attr:`nested_mode`: equal, or half on the full sketch for ``"sample"``), unnormalised;
        None for a plain run. Asked, like :attr:`nested_mode`, after the loss is configured."""
        ks = self.config.prefix_set()
        if ks is None:
            return None
        if self.config.nested_weights is not None:
            return [float(w) for w in self.config.nested_weights]
        return default_prefix_weights(len(ks), self.nested_mode)

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
        base = create_loss(name, **options)
        loss = base if text is None else base + text
        loss.configure(self.run_settings())  # the run settings, as every run gives them (run_settings)
        return loss

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
        init = create_initializer(name, **options)
        init.configure(self.run_settings())  # num_segments and width, as every run gives them
        return init

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
        return create_rasterizer(self.config.rasterizer)

    def build_optimizer(self, strokes: StrokeSet) -> torch.optim.Optimizer:
        """Adam over the control points (lr ``config.lr``), plus opacity at ``config.opacity_lr``."""
        groups: list[dict[str, Any]] = [{"params": [strokes.points], "lr": self.config.lr}]
        if self.config.optimize_opacity:
            groups.append({"params": [strokes.colors], "lr": self.config.opacity_lr})
        if self.optimizer_factory is not None:
            return self.optimizer_factory(groups)
        return torch.optim.Adam(groups)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, iterations: int) -> Any:
        """The learning-rate schedule: None by default, as the reference; ``lr_schedule="cosine"``:
        :func:`~clipasso.engine.cosine_schedule` with ``config.lr_decay_fraction``."""
        if self.config.lr_schedule != "cosine":
            return None
        return cosine_schedule(optimizer, iterations, self.config.lr_decay_fraction)

    def build_callbacks(self) -> list[Callback]:
        """The callbacks the settings ask for, added to ``self.callbacks`` for each run.

        A :class:`~clipasso.progressive.ProgressiveDrawing` for ``schedule="progressive"`` (with
        ``config.schedule_options``), then a :class:`~clipasso.reseed.Reseed` every
        :meth:`reseed_every` steps (when > 0), with ``config.reseed_options``. Built afresh for
        every :meth:`sketch` call (override to add your own).
        """
        out: list[Callback] = []
        if self.config.schedule == "progressive":
            from .progressive import ProgressiveDrawing

            try:
                out.append(ProgressiveDrawing(**self.config.schedule_options))
            except TypeError as exc:
                raise InputError(f"schedule_options: {exc}") from None
        every = self.reseed_every()
        if every > 0:
            from .reseed import Reseed

            out.append(Reseed(every, **self.config.reseed_options))
        return out

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
        """Render (a subset of) the candidates over white: ``[B, 3, H, W]``; with nested training
        (``config.nested``), the prefixes of each, ``[B, K, 3, H, W]``, from one pass."""
        points, widths, colors = strokes.points, strokes.widths, strokes.colors
        if self.config.optimize_opacity:
            colors = torch.cat([colors[..., :3], colors[..., 3:].clamp(0, 1)], dim=-1)
        if index is not None:
            points, widths, colors = points[index], widths[index], colors[index]
        ks = self.config.prefix_set()
        if ks is not None:
            return self.rasterizer.render_prefixes(points, widths, colors, strokes.canvas_size, ks, 1.0)
        return self.rasterizer.render_over(points, widths, colors, strokes.canvas_size, 1.0)

    def compute_loss(self, sketch: Tensor, target: Target, context: LossContext) -> dict[str, Tensor]:
        """The loss terms ``{name: [B]}`` of rendered sketches; of prefix renders ``[B, K, 3, H, W]``,
        the nested objective (:func:`clipasso.prefixes.nested_loss`)."""
        image = target.image.to(sketch.device)
        if sketch.dim() == 5:
            cfg = self.config
            ks = cfg.prefix_set() or [sketch.shape[1]]
            weights = prefix_weights(ks, self.nested_weights)
            return nested_loss(
                lambda x, ctx: dict(self.loss(x, image, ctx)),
                sketch,
                context,
                weights,
                mode=self.nested_mode,
                seed=cfg.seed,
            )
        return dict(self.loss(sketch, image, context))

    def update_best(self, state: RunState, b: int, loss: float) -> bool:
        """The evaluation rule for candidate ``b`` (the reference's, with ``config.early_stop_delta``
        and ``early_stop_patience``: :func:`~clipasso.engine.early_stop_update`); True: stop it."""
        cfg = self.config
        return early_stop_update(state, b, loss, cfg.early_stop_delta, cfg.early_stop_patience)

    def prune(self, state: RunState) -> list[int]:
        """The race after an evaluation (``config.prune_*``; :func:`~clipasso.engine.race_stops`):
        the candidates to stop now. With ``prune_after=None`` (the reference) nothing is pruned."""
        cfg = self.config
        race = (cfg.prune_after, cfg.prune_keep, cfg.prune_tolerance, cfg.prune_until)
        if state.groups is None:
            return race_stops(state, *race)
        return sorted(b for group in state.groups for b in race_stops(state, *race, among=group))

    def select(self, candidates: Sequence[Candidate]) -> int:
        """Best-of-N: the index of the candidate with the lowest best evaluation loss."""
        return select_best([c.best_loss for c in candidates])

    # ------------------------------------------------------------------ the run

    def sketch(
        self,
        image: ImageLike | None = None,
        *,
        mask: ImageLike | None = None,
        num_strokes: int | str | None = None,
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
        if overrides.get("num_strokes") == "auto":
            overrides.update(num_strokes=self.config.auto_max_strokes, auto_strokes=True)
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

    def sketch_many(
        self,
        images: Sequence[ImageLike],
        *,
        masks: Sequence[ImageLike | None] | None = None,
        seed: int | None = None,
        iterations: int | None = None,
    ) -> list[SketchResult]:
        """Sketch several images in ONE optimisation: their ``K × num_sketches`` candidates are one
        batch (``B = K × N``), each candidate against its own image, so each image's result equals
        its own :meth:`sketch` (the same seeds; to the float rounding of batched kernels).
        Early stops, races and best-of-N apply per image.

        Args:
            images: The images (paths, PIL images, arrays or tensors), all prepared to the same
                ``image_size`` canvas.
            masks: Optional object masks, one per image (None entries: none).
            seed, iterations: Per-call overrides of the config.

        Returns:
            One :class:`~clipasso.result.SketchResult` per image, in order.

        Raises:
            InputError: No images, masks that do not match, or settings a batch of images does not
                support (text-only runs, nested or automatic stroke counts).

        Example:
            >>> from clipasso.data import sample_tensor
            >>> sk = Sketcher(loss="edges", initializer="random", num_strokes=3, iterations=2,
            ...               num_sketches=1, image_size=64, device="cpu")
            >>> [r.strokes.num_strokes for r in sk.sketch_many([sample_tensor("house", size=64)[0],
            ...                                                 sample_tensor("mug", size=64)[0]])]
            [3, 3]
        """
        images = list(images)
        if not images:
            raise InputError("sketch_many needs at least one image")
        masks = list(masks) if masks is not None else [None] * len(images)
        if len(masks) != len(images):
            raise InputError(f"got {len(masks)} masks for {len(images)} images; give one per image (or None)")
        overrides = {k: v for k, v in (("seed", seed), ("iterations", iterations)) if v is not None}
        cfg = self.config.replace(**overrides) if overrides else self.config
        if cfg.prefix_set() is not None or cfg.auto_strokes:
            raise InputError("a batch of images does not support nested or automatic stroke counts yet")
        saved, self.config = self.config, cfg
        try:
            with intra_op_threads(cfg.threads):
                return batched.run_many(self, images, masks)
        finally:
            self.config = saved

    def run_settings(self) -> RunSettings:
        """The settings every loss and initializer receives through ``configure`` before a run
        (device, precision, channels_last, target_pool, num_views, identity_weight, num_segments,
        width, mask_weighting, fold_batchnorm, prepack_weights, fuse_activations), from the config."""
        cfg = self.config
        return RunSettings(
            device=self.device,
            precision=cfg.precision,  # type: ignore[arg-type]
            channels_last=cfg.channels_last,
            target_pool=cfg.target_pool,
            num_views=cfg.num_views,
            identity_weight=cfg.identity_weight,
            num_segments=cfg.num_segments,
            width=cfg.width,
            # the weight map inside the losses (issue 21) only with background="weight"
            mask_weighting=cfg.mask_weighting if cfg.background == "weight" else None,
            fold_batchnorm=cfg.fold_batchnorm,
            prepack_weights=cfg.prepack_weights,
            fuse_activations=cfg.fuse_activations,
        )

    def start(self, target: Target, seeds: Sequence[int]) -> tuple[RunState, list[InitResult]]:
        """The state of a new run on ``target`` (already on the run's device): initial strokes of
        every candidate, the optimiser, the schedule and the candidates' generators."""
        cfg = self.config
        strokes, inits, generators = self.initialize(target, cfg.num_strokes, seeds)
        optimizer = self.build_optimizer(strokes)
        state = RunState.start(
            strokes,
            optimizer,
            seeds=seeds,
            iterations=cfg.iterations,
            scheduler=self.build_scheduler(optimizer, cfg.iterations),
            generators=generators,
            target=target,
        )
        state.extra["inits"] = inits  # read by callbacks that place strokes (progressive drawing)
        return state, inits

    def build_engine(self, checkpoint: str | os.PathLike[str] | None, fingerprint: str) -> Engine:
        """The engine of a run: this Sketcher as its program, the callbacks, the checkpointer."""
        cfg = self.config
        checkpointer = None
        if checkpoint is not None:
            checkpointer = Checkpointer(
                checkpoint,
                cfg.checkpoint_every,
                fingerprint,
                self._checkpoint_extra,
                self._load_checkpoint_extra,
            )
        settings = LoopSettings(
            iterations=cfg.iterations,
            eval_every=cfg.eval_every,
            shared_views=cfg.shared_views,
            free_evaluations=cfg.free_evaluations,
        )
        return Engine(self, settings, [*self.callbacks, *self.build_callbacks()], checkpointer)

    def _sketch(self, image: ImageLike | None, mask: ImageLike | None, checkpoint: Any) -> SketchResult:
        cfg = self.config
        t0 = time.perf_counter()
        target = self.prepare(image, mask)
        seeds = [cfg.seed + b * cfg.seed_stride for b in range(cfg.num_sketches)]
        key = self.fingerprint(target, seeds)
        # the loop works on a copy of the target on the run's device, moved once, not every step
        work = Target(
            target.image.to(self.device),
            target.mask.to(self.device) if target.mask is not None else None,
            target.original_size,
        )
        self.loss.to(self.device)
        settings = self.run_settings()
        self.loss.configure(settings)
        self.initializer.configure(settings)
        if cfg.nested_mode == "spread" and cfg.prefix_set() is not None and not self.loss.spreads_views():
            raise InputError(
                f"nested_mode='spread' spreads a loss's random views over the prefixes, but "
                f"{type(self.loss).__name__} ({cfg.loss!r}) has terms without random views: use "
                "nested_mode='auto', 'sample' or 'all' with it (the CLIP losses with num_views >= 1 "
                "spread)"
            )
        state, inits = self.start(work, seeds)
        t_init = time.perf_counter()
        engine = self.build_engine(checkpoint, key)
        try:
            engine.run(state)
        except NonFiniteLossError as exc:
            if any(math.isfinite(x) for x in state.best_loss):
                exc.result = self.build_result(state, target, None, {})
            raise
        t_end = time.perf_counter()
        steps = max(len(state.train_history), 1)
        timings = {
            "prepare_and_init": t_init - t0,
            "optimize": t_end - t_init,
            "total": t_end - t0,
            "per_step": (t_end - t_init) / steps,
        }
        result = self.build_result(state, target, inits, timings)
        if cfg.prefix_set() is not None:  # nested or automatic: the winner's loss-vs-strokes curve
            result.curve = self.loss_curve(result.strokes, work)
        if cfg.auto_strokes:
            assert result.curve is not None
            chosen = choose_stroke_count(result.curve, cfg.abstraction)
            result = result.prefix(chosen)
            result.auto_strokes = chosen
        for cb in engine.callbacks:
            cb.on_end(self, result)
        return result

    def build_result(
        self, state: RunState, target: Target, inits: list[InitResult] | None, timings: dict[str, float]
    ) -> SketchResult:
        """The :class:`~clipasso.result.SketchResult` of a run: its candidates and :meth:`select`'s pick."""
        candidates = candidates_from_state(state, inits)
        return SketchResult(
            candidates=candidates,
            best_index=self.select(candidates),
            target=Target(
                target.image.cpu(),
                target.mask.cpu() if target.mask is not None else None,
                target.original_size,
            ),
            config=self.config,
            timings=timings,
            rasterizer=self.rasterizer,
        )

    # ------------------------------------------------------------------ prefixes and order

    def loss_curve(self, strokes: StrokeSet, target: Target, batch: int = 8) -> list[float]:
        """The un-augmented loss of every prefix ``k = 0 .. N`` of ``strokes [1, N, P, 2]``
        (:func:`clipasso.prefixes.loss_curve`)."""
        return prefixes.loss_curve(self, strokes, target, batch)

    def order_strokes(
        self, result: SketchResult, batch: int = 8, rungs: Sequence[int] | None = None
    ) -> SketchResult:
        """The winner's strokes in importance order by greedy removal, most important first
        (:func:`clipasso.prefixes.order_strokes`).

        Args:
            result: A result of this Sketcher.
            batch: Leave-one-out sketches scored per batch.
            rungs: Stroke counts whose prefixes keep their strokes (reordering only within the
                blocks between them). None: the run's own ladder for a nested run
                (``config.nested``, so the trained rungs stay), no constraint for a plain one;
                ``[]``: no constraint.
        """
        if rungs is None:
            ks = self.config.prefix_set()
            rungs = [] if ks is None else [k for k in ks if k < result.strokes.num_strokes]
        return prefixes.order_strokes(self, result, batch, rungs)

    # ------------------------------------------------------------------ checkpoints

    def fingerprint(self, target: Target, seeds: list[int]) -> str:
        """What a checkpoint must match to resume: the settings (but iterations, device, threads and
        checkpoint_every), the components' classes, the prepared image and the seeds."""
        settings = self.config.to_dict()
        for volatile in ("iterations", "device", "threads", "checkpoint_every"):
            settings.pop(volatile, None)
        # components by class (their reprs may show load state, which must not matter)
        classes = [type(c).__qualname__ for c in (self.loss, self.initializer, self.rasterizer)]
        return fingerprint(settings, *classes, target.image, seeds)

    def _precision_modules(self) -> list[Any]:
        """Loss modules that pick their arithmetic at run time (``active_precision``)."""
        return [m for m in self.loss.modules() if hasattr(m, "active_precision")]

    def _checkpoint_extra(self) -> dict[str, Any]:
        # a precision chosen at run time (precision="auto") must stay the same after a resume
        return {"precisions": [m.active_precision for m in self._precision_modules()]}

    def _load_checkpoint_extra(self, data: dict[str, Any]) -> None:
        for module, precision in zip(self._precision_modules(), data["precisions"]):
            module.active_precision = precision
