"""The Sketcher's typed configuration, with the reference defaults (METHOD §2, §5).

Settings files are TOML (:func:`read_toml`, :func:`to_toml`): a ``[sketch]`` table (or the top
level) of :class:`SketchConfig` fields. Reading checks the file (size, UTF-8, TOML syntax) and
each setting's type and range and raises an :class:`~clipasso.errors.InputError` that names the
file and the setting; relations between settings are checked when the configuration is built.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, _with_prefix
from .limits import check_limit

__all__ = ["MIN_CANVAS", "PRESETS", "SketchConfig", "check_setting", "read_toml", "to_toml"]

#: Least side of ``SketchConfig.canvas_size`` (pixels); the largest is the ``max_canvas_side`` limit
#: (:mod:`clipasso.limits`), as for ``image_size``. CLIP sees every view at 224 px, so a larger
#: canvas costs rendering memory and time without showing CLIP more; an SVG scales freely.
MIN_CANVAS = 16

#: Named settings that :meth:`SketchConfig.preset` applies on top of the defaults: each preset is
#: the difference from the defaults, nothing more.
#:
#: ``"reference"``: the paper's arithmetic exactly (METHOD §5; the defaults already are its recipe):
#: fp32 CLIP and contiguous (NCHW) inputs.
#:
#: ``"fast"``: races the candidates (only the leader goes on after 50 steps, with those within 0.5 %
#: until step 300), 1400 iterations with a cosine decay over the last 30 %, 2 random views per
#: step with view 0 weighted 0.2, and evaluations taken from the training step's view 0
#: (``free_evaluations``: the same values to the kernels' rounding), with CLIP's BatchNorms folded
#: into its convolutions (``fold_batchnorm``: the same function, rounded differently), their weights
#: reordered once for oneDNN (``prepack_weights``: the same sums) and the ReLUs and residual
#: additions run inside the convolutions (``fuse_activations``). Deviations from the
#: reference; what they cost and gain, as measured on a random-weight proxy, is in
#: docs/performance.md ("The fast preset").
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "iterations": 1400,
        "lr_schedule": "cosine",
        "lr_decay_fraction": 0.3,
        "prune_after": 50,
        "prune_tolerance": 0.005,
        "prune_until": 300,
        "num_views": 2,
        "identity_weight": 0.2,
        "free_evaluations": True,
        "fold_batchnorm": True,
        "prepack_weights": True,
        "fuse_activations": True,
    },
    "reference": {
        "precision": "fp32",
        "channels_last": False,
    },
}


@dataclass
class SketchConfig:
    """Every setting of a sketch run. The defaults are the reference recipe.

    Attributes:
        num_strokes: N strokes per sketch.
        num_segments: Cubic segments per stroke (P = 3k + 1 control points).
        width: Stroke half-width r in pixels (the visible line is 2r wide).
        iterations: Optimisation steps. Evaluations happen every ``eval_every`` steps and once more
            on the final strokes, so 2000 matches the reference driver's steps 0..2000.
        lr: Adam learning rate on the control points (pixels).
        eval_every: Steps between evaluations (un-augmented objective, no gradient).
        early_stop_delta: An evaluation within this of the best counts as "no change".
        early_stop_patience: That many no-changes since the last improvement stop a sketch.
            0 disables early stopping.
        num_sketches: Best-of-N: sketches optimised together in one batch.
        seed: Seed of sketch 0; sketch ``b`` uses ``seed + b * seed_stride`` (reference: 0, 1000, 2000).
        seed_stride: See ``seed``.
        image_size: Canvas side (224 for CLIP).
        fix_scale: Pad the image to a centred white square first.
        background: How the object mask is used (:mod:`clipasso.background`): ``"keep"`` (default,
            the reference's: the image as it is; the mask restricts the starts, CLIP terms ignore
            it), ``"cutout"`` (the reference's two-stage ``--mask_object``: the image composited onto
            white by the hard mask) or ``"weight"`` (one stage: the image kept, the soft weight map
            goes to the loss as ``LossContext.mask``). ``"cutout"`` and ``"weight"`` need a mask.
        mask_source: Where the mask comes from when ``sketch()`` gets no ``mask=``: None (an alpha
            channel, if any), ``"u2net"`` (:mod:`clipasso.matting`, weights by ``u2net_weights``),
            ``"saliency"`` (the CLIP ViT relevance map) or ``"weights-free"`` (a classical
            saliency, :func:`~clipasso.init.weights_free.weights_free_mask`).
        u2net_weights: Path of ``u2net.pth`` / ``u2netp.pth`` for ``mask_source="u2net"`` (None:
            ``$CLIPASSO_U2NET_WEIGHTS``).
        mask_weighting: With ``background="weight"``: what the loss does with the weight map, for
            losses that take ``mask_weighting`` (:mod:`clipasso.losses.masking`): ``"target"`` (the
            target composited onto white by it, for the edge term too),
            ``"features"`` (each layer's differences weighted by it at the layer's resolution; the
            edge term: its per-pixel errors) or ``"both"``.
        loss: Registry name of the objective (see :func:`clipasso.losses.list_losses`).
        loss_options: Keyword options for the loss.
        clip_model: CLIP weights (name or path) for losses that take a ``model``; None leaves each
            loss its own default (RN101 for ``clip_conv``, ViT-B/32 for ``clip_semantic``).
        initializer: Registry name of the initializer.
        initializer_options: Keyword options for the initializer.
        saliency_model: CLIP ViT weights (name or path) for initializers that take a ``model``; None
            leaves the initializer's default (ViT-B/32).
        text: Text prompt(s) as the semantic target (CLIPDraw-style); a string is one prompt, several
            prompts are averaged. With an image, the prompt replaces the image in the semantic term
            (``clip_conv``'s and ``clip_vit_layer``'s ``fc`` term is switched off unless
            ``loss_options`` set ``fc_weight``; with ``loss="clip_semantic"`` the prompt is that
            term's target) and the geometric terms stay. Without an image, the text term is the whole
            objective. None (default): no text.
        text_weight: Weight of the text term (``1 - cos`` between the sketch's and the prompt's CLIP
            embeddings, 4 random views).
        text_start: The step from which the text term is on, beside an image's terms (runs without
            an image have no other term: there it is on from step 0).
        text_model: Full CLIP weights (name or path; the text tower is needed) for the text term;
            None: ViT-B/32.
        canvas_size: Side in pixels of the blank square canvas of a run without an image (from 16
            up to the ``max_canvas_side`` limit, 4096 by default); None: ``image_size``. Runs with an
            image use ``image_size`` and refuse it.
        fidelity: None, or a CLIP ViT block (0-based; ViT-B/32 has 0..11) whose token features the
            geometric term matches (CLIPascene's fidelity axis: shallow follows the image closely,
            deep loosely). The objective is then ``clip_vit_layer`` on that block with its embedding
            term at 0.1, in place of ``clip_conv``; ``loss`` must be ``"clip_conv"`` (replaced) or
            ``"clip_vit_layer"`` (its ``loss_options`` apply, without ``layers``).
        rasterizer: Registry name of the rasterizer (``"auto"``: torch unless configured).
        optimize_opacity: Also optimise each stroke's opacity (own Adam group, clamped to [0, 1]).
        opacity_lr: Learning rate of the opacity group.
        lr_schedule: None (constant, the reference) or ``"cosine"`` (cosine decay to 0 over the run,
            or over its last ``lr_decay_fraction`` only).
        lr_decay_fraction: With ``lr_schedule="cosine"``: the fraction of ``iterations``, at the end,
            over which the learning rate decays; before that it stays at ``lr``. 1.0 (default): the
            decay spans the whole run.
        prune_after: None (the reference: every candidate runs to the end) or a step count: from
            the first evaluation at or after it, only the ``prune_keep`` running candidates with the
            lowest best evaluation loss go on, and the others stop there with their best strokes
            (a race, as in successive halving). A deviation from the reference's independent
            best-of-N runs that saves most of the losers' cost; see docs/performance.md.
        prune_keep: How many candidates go on after ``prune_after``.
        prune_tolerance: With ``prune_after``: at that round, a candidate whose best evaluation loss
            is less than this (relative) above the leader's also goes on. 0 (default): exactly
            ``prune_keep`` go on. Early evaluation losses of one seed differ by a few tenths of a
            percent between runs (rounding), so a smaller gap is weak evidence; see
            docs/performance.md.
        prune_until: None, or the step of a second, final round: the survivors of the first run
            side by side until the first evaluation at or after it, where only ``prune_keep`` go
            on. None with a tolerance: the close candidates run to the end.
        shared_views: Draw the augmentations once for all sketches (cheaper, but then a batched
            run no longer equals separate runs).
        precision: CLIP precision for losses that take ``precision`` (``"fp32"``, ``"bf16"``,
            ``"auto"``: bf16 where the device has fast bf16 and an accuracy guard passes, else fp32;
            see :class:`~clipasso.losses.CLIPConvLoss` and docs/performance.md). ``"fp32"`` is the
            reference's arithmetic.
        channels_last: Channels-last inputs for CLIP ResNets (losses that take ``channels_last``).
            These speed settings reach the losses through ``SketchLoss.configure`` (names and objects).
        fold_batchnorm: CLIP ResNet passes run a copy of the tower with each BatchNorm folded into
            the convolution before it (losses that take ``fold_batchnorm``): the same function
            without the BatchNorm passes, rounded differently, so off in the reference (default);
            on in ``"fast"``. Measured in docs/performance.md.
        prepack_weights: On a CPU, those losses' private tower copies (the bf16 weight copy, the
            folded copy) keep their convolution weights reordered for oneDNN instead of reordering
            them on every call, forward and backward: the same sums (bit for bit where measured).
            Off by default and in the
            reference (it relies on oneDNN ops that PyTorch keeps private); on in ``"fast"``.
        fuse_activations: With ``fold_batchnorm`` and ``prepack_weights`` (it needs both and does
            nothing without them), the folded copies run CLIP's ReLUs and residual additions inside
            their convolutions as oneDNN post-ops (CPU): exact for the ReLUs, one rounding fewer
            per bottleneck for the additions in bf16. Off by default and in the reference; on in
            ``"fast"``.
        target_pool: 0 (the reference) or the size K of a fixed pool of random views whose target
            features are computed once, so the iterations skip the target's CLIP pass (its measured
            effect: docs/performance.md). A deviation from the reference (each sketch still draws
            its own views, but only among those K); see
            :class:`~clipasso.losses.CLIPConvLoss` and docs/performance.md.
        num_views: Random views per sketch and training step
            (the reference: 4, plus view 0). Fewer views make a step cheaper and its gradient
            noisier (measured in docs/performance.md).
        identity_weight: The share of view 0 in the mean
            over the views (None: the plain mean, ``1 / (1 + num_views)``). 0.2 with fewer than 4
            random views keeps the reference's objective in expectation (view 0 at 1/5, the random
            views sharing 4/5), so the step estimates the reference's gradient, unbiased but noisier.
        reseed_every: 0 (off) or K: every K steps, strokes that are dead (collapsed to a dot, or off
            the target's edges) move onto the edges that no live stroke covers
            (:class:`~clipasso.reseed.Reseed`, which :meth:`Sketcher.build_callbacks` adds). None
            (default): 50 with the weights-free ``edges`` objective, where strokes far from every
            edge die (docs/initializers.md, "Dead strokes"), else 0, so the reference is unchanged.
        reseed_options: Keyword options of :class:`~clipasso.reseed.Reseed` (e.g. ``until``,
            ``min_length``, ``reach``).
        device: ``"auto"`` (CUDA, then MPS, then CPU), or any torch device string.
        threads: CPU intra-op threads during a run (``torch.set_num_threads`` for the run, restored
            after it); None leaves torch's setting (one per core). See :mod:`clipasso.threads`.
        checkpoint_every: Steps between checkpoint writes (when a checkpoint path is given).
        nested: None (a plain run), or stroke counts ``k``: nested (prefix) training, where each
            step's loss combines the losses of the first-``k``-stroke sketches for every ``k`` here
            and ``num_strokes`` (always included), so that the first ``k`` strokes are themselves a
            ``k``-stroke sketch and the order carries importance (docs/abstraction.md). A deviation
            from the paper.
        nested_mode: ``"all"`` (every prefix every step: ``len(K)`` times the loss's cost),
            ``"sample"`` (the full sketch and one prefix drawn per step, importance-weighted so that
            the expected loss is the ``"all"`` objective: twice the cost), ``"spread"`` (one loss
            call on the full sketch whose random views are made from prefixes drawn by their
            weights, view 0 from the full sketch: a plain step's cost; CLIP losses only, as they
            are the ones with views) or ``"auto"`` (default: ``"spread"`` where the objective can
            spread its views, else ``"sample"``; :attr:`~clipasso.sketcher.Sketcher.nested_mode`
            says which). Evaluations score all.
        nested_weights: Weights of the prefixes' losses, one per prefix in increasing order
            (``nested`` and ``num_strokes``, sorted); None: the mode's default
            (:func:`~clipasso.prefixes.default_prefix_weights`): equal weights (their mean), and
            for ``"sample"`` half of the weight on the full sketch.
        auto_strokes: Choose the stroke count (``Sketcher(num_strokes="auto")``): optimise
            ``num_strokes`` nested strokes (``nested`` defaults to the powers of two below it),
            then keep the smallest prefix whose loss keeps ``1 - abstraction`` of the loss
            reduction the whole sketch achieves over the blank canvas.
        abstraction: ε of ``auto_strokes``, in ``[0, 1]``: the share of that reduction one gives
            up for fewer strokes (larger: fewer strokes, a more abstract sketch).
        auto_max_strokes: ``num_strokes`` of an automatic run (``num_strokes="auto"``).
        free_evaluations: Take each evaluation from the training step's own un-augmented view 0
            (its CLIP features are computed anyway) instead of a second forward pass, where every
            loss term can give it; otherwise evaluate as usual. The values equal a separate
            evaluation to the kernels' rounding (bit for bit for the pixel and edge terms); off by
            default and in the reference (docs/performance.md, "Free evaluations").
        schedule: None (every stroke drawn from the start, the paper's way) or ``"progressive"``:
            strokes are added one by one, each where the sketch so far explains the target least,
            all drawn ones optimising on (:class:`~clipasso.progressive.ProgressiveDrawing`).
        schedule_options: Keyword options of the schedule's callback (e.g. ``start``, ``until``).

    Example:
        >>> cfg = SketchConfig(num_strokes=8)
        >>> SketchConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    num_strokes: int = 16
    num_segments: int = 1
    width: float = 1.5
    iterations: int = 2000
    lr: float = 1.0
    eval_every: int = 10
    early_stop_delta: float = 1e-5
    early_stop_patience: int = 2
    num_sketches: int = 3
    seed: int = 0
    seed_stride: int = 1000
    image_size: int = 224
    fix_scale: bool = False
    background: str = "keep"
    mask_source: str | None = None
    u2net_weights: str | None = None
    mask_weighting: str = "target"
    loss: str = "clip_conv"
    loss_options: dict[str, Any] = field(default_factory=dict)
    clip_model: str | None = None
    initializer: str = "saliency"
    initializer_options: dict[str, Any] = field(default_factory=dict)
    saliency_model: str | None = None
    text: list[str] | None = None
    text_weight: float = 1.0
    text_start: int = 0
    text_model: str | None = None
    canvas_size: int | None = None
    fidelity: int | None = None
    rasterizer: str = "auto"
    optimize_opacity: bool = False
    opacity_lr: float = 0.01
    lr_schedule: str | None = None
    lr_decay_fraction: float = 1.0
    prune_after: int | None = None
    prune_keep: int = 1
    prune_tolerance: float = 0.0
    prune_until: int | None = None
    shared_views: bool = False
    precision: str = "auto"
    channels_last: bool = True
    fold_batchnorm: bool = False
    prepack_weights: bool = False
    fuse_activations: bool = False
    target_pool: int = 0
    num_views: int = 4
    identity_weight: float | None = None
    reseed_every: int | None = None
    reseed_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 50
    nested: list[int] | None = None
    nested_mode: str = "auto"
    nested_weights: list[float] | None = None
    auto_strokes: bool = False
    abstraction: float = 0.1
    auto_max_strokes: int = 32
    free_evaluations: bool = False
    schedule: str | None = None
    schedule_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.text, str):  # one prompt
            self.text = [self.text]
        elif isinstance(self.text, tuple):
            self.text = list(self.text)
        for name in ("nested", "nested_weights"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting.

        Each field is checked for its type and range (and against the resource limits of
        :mod:`clipasso.limits`: strokes, segments, sketches, views, iterations, canvas side), then
        the settings that depend on each other.
        """
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name))
        tolerance = self.prune_tolerance
        if self.prune_after is None and (tolerance > 0 or self.prune_until is not None):
            raise InputError(
                "prune_tolerance and prune_until refine a race: set prune_after too "
                f"(got prune_tolerance={tolerance!r}, prune_until={self.prune_until!r})"
            )
        if (
            self.prune_after is not None
            and self.prune_until is not None
            and self.prune_until < self.prune_after
        ):
            raise InputError(
                f"prune_until ({self.prune_until}) must be at or after prune_after ({self.prune_after})"
            )
        last_seed = self.seed + (self.num_sketches - 1) * self.seed_stride
        if last_seed > _MAX_SEED:
            raise InputError(
                f"the last candidate's seed seed + (num_sketches - 1) * seed_stride = {last_seed} is above "
                f"{_MAX_SEED} (seeds are 63-bit integers)"
            )
        self._validate_text_and_fidelity()
        self._validate_nested()

    def prefix_set(self) -> list[int] | None:
        """The stroke counts of nested training, sorted, with ``num_strokes`` (None: a plain run).

        Example:
            >>> SketchConfig(num_strokes=16, nested=[4, 8]).prefix_set()
            [4, 8, 16]
        """
        if self.nested is None and self.auto_strokes:
            return [
                k for k in (1 << i for i in range(self.num_strokes.bit_length())) if k < self.num_strokes
            ] + [self.num_strokes]
        if self.nested is None:
            return None
        return sorted(set(self.nested) | {self.num_strokes})

    def _validate_nested(self) -> None:
        ks = self.prefix_set()
        if ks is None or self.nested is None:
            if self.nested_weights is not None and self.nested is None:
                raise InputError("nested_weights weigh the prefixes of nested training: set nested too")
            return
        if max(ks) > self.num_strokes:
            raise InputError(
                f"nested stroke counts must be at most num_strokes ({self.num_strokes}), got {self.nested}"
            )
        if self.nested_weights is not None and len(self.nested_weights) != len(ks):
            raise InputError(
                f"nested_weights needs one weight per prefix {ks} ({len(ks)}), got {len(self.nested_weights)}"
            )
        if self.nested_weights is not None and not sum(self.nested_weights) > 0:
            raise InputError(f"nested_weights must not all be 0, got {self.nested_weights}")

    def _validate_text_and_fidelity(self) -> None:
        text = self.text
        if text is not None and (
            not isinstance(text, list) or not text or not all(isinstance(p, str) and p.strip() for p in text)
        ):
            raise InputError(f"text must be None, a prompt or a non-empty list of prompts, got {text!r}")
        weight = self.text_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
            raise InputError(f"text_weight must be a positive finite number, got {weight!r}")
        start = self.text_start
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InputError(f"text_start must be a non-negative integer, got {start!r}")
        if self.text_model is not None and (not isinstance(self.text_model, str) or not self.text_model):
            raise InputError(f"text_model must be None or a model name or path, got {self.text_model!r}")
        block = self.fidelity
        if block is None:
            return
        if isinstance(block, bool) or not isinstance(block, int) or block < 0:
            raise InputError(f"fidelity must be None or a ViT block index >= 0, got {block!r}")
        if self.loss not in ("clip_conv", "clip_vit_layer"):
            raise InputError(
                f"fidelity replaces the clip_conv objective by clip_vit_layer; it cannot go with "
                f"loss={self.loss!r}"
            )
        if self.loss == "clip_conv" and self.loss_options:
            raise InputError(
                "fidelity replaces clip_conv, so its loss_options would not apply; set "
                'loss = "clip_vit_layer" to give the layer loss options'
            )
        if "layers" in self.loss_options:
            raise InputError("set the ViT block with fidelity or with loss_options.layers, not both")

    @classmethod
    def preset(cls, name: str, **changes: Any) -> SketchConfig:
        """A configuration from a named preset (see :data:`PRESETS`), with ``changes`` on top.

        Args:
            name: A key of :data:`PRESETS`, e.g. ``"reference"`` for the paper's exact recipe.
            **changes: Further settings, applied after the preset's.

        Raises:
            InputError: For an unknown preset name or setting.

        Example:
            >>> SketchConfig.preset("reference").precision
            'fp32'
            >>> SketchConfig.preset("reference", num_strokes=8).num_strokes
            8
        """
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls().replace(**{**PRESETS[name], **changes})

    def replace(self, **changes: Any) -> SketchConfig:
        """A copy with some fields changed (validated)."""
        unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
        if unknown:
            raise InputError(f"unknown setting(s) {unknown}; see SketchConfig")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every setting."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SketchConfig:
        """Build from a dict (e.g. a parsed TOML/JSON file); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise InputError(f"settings must be a table of names and values, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise InputError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> SketchConfig:
        """Build from a TOML file (see :func:`read_toml`) on top of the defaults.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "my.toml"
            >>> _ = path.write_text(SketchConfig(num_strokes=8).to_toml())
            >>> SketchConfig.from_toml(path).num_strokes
            8
        """
        table = read_toml(path)  # its errors name the file
        try:
            return cls.from_dict(table)
        except InputError as exc:
            raise _with_prefix(exc, f"{path}: ") from None

    def to_toml(self) -> str:
        """Every setting as a TOML ``[sketch]`` table (:func:`to_toml`)."""
        return to_toml(self.to_dict())

    def to_json(self) -> str:
        """Pretty JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------- checks

_MAX_SEED = 2**63 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_check(minimum: int, limit: str | None = None, optional: bool = False) -> Callable[[str, Any], None]:
    word = "positive" if minimum == 1 else "non-negative"

    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        if not _is_int(value) or value < minimum:
            extra = " or None" if optional else ""
            raise InputError(f"{name} must be a {word} integer{extra}, got {value!r}")
        if value > _MAX_SEED:
            raise InputError(f"{name} must be below 2**63, got {value!r}")
        if limit is not None:
            check_limit(value, limit, name)

    return check


def _positive_float(name: str, value: Any) -> None:
    if not _is_number(value) or not 0 < value < math.inf:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")


def _str_check(choices: tuple[str, ...] | None = None, optional: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        if choices is not None and value not in choices:
            shown = ", ".join(repr(c) for c in choices) + (" or None" if optional else "")
            raise InputError(f"{name} must be {shown}, got {value!r}")
        if not isinstance(value, str) or not value.strip():
            raise InputError(
                f"{name} must be a non-empty string{' or None' if optional else ''}, got {value!r}"
            )

    return check


def _bool_check(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {value!r}")


def _options_check(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise InputError(
            f"{name} must be a table of keyword options (e.g. {name} = {{ key = 1 }}), got {value!r}"
        )
    bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise InputError(f"{name} keys must be option names (Python identifiers), got {bad}")


def _delta(name: str, value: Any) -> None:
    if not _is_number(value) or not value >= 0:  # inf is allowed: every evaluation is "no change"
        raise InputError(f"{name} must be >= 0, got {value!r}")


def _fraction(name: str, value: Any) -> None:
    if not _is_number(value) or not 0 < value <= 1:
        raise InputError(f"{name} must be in (0, 1], got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or not 0 <= value < math.inf:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")


def _unit_or_none(name: str, value: Any) -> None:
    if value is not None and (not _is_number(value) or not 0 <= value <= 1):
        raise InputError(f"{name} must be None or in [0, 1], got {value!r}")


def _text_check(name: str, value: Any) -> None:
    prompts = [value] if isinstance(value, str) else value
    if value is not None and (
        not isinstance(prompts, (list, tuple))
        or not prompts
        or not all(isinstance(p, str) and p.strip() for p in prompts)
    ):
        raise InputError(f"{name} must be None, a prompt or a non-empty list of prompts, got {value!r}")


def _stroke_counts(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v >= 1 for v in value):
        raise InputError(f"{name} must be None or a non-empty list of stroke counts >= 1, got {value!r}")
    for v in value:
        check_limit(v, "max_strokes", name)


def _fraction_closed(name: str, value: Any) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")


def _weights_list(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not value or not all(_is_number(v) and v >= 0 for v in value):
        raise InputError(f"{name} must be None or a non-empty list of numbers >= 0, got {value!r}")


def _canvas_size(name: str, value: Any) -> None:
    if value is not None:
        _image_size(name, value)


def _image_size(name: str, value: Any) -> None:
    if not _is_int(value) or value < 16:
        raise InputError(f"{name} must be an integer of at least 16, got {value!r}")
    check_limit(value, "max_canvas_side", name)


#: How the object mask is used (``SketchConfig.background``; :mod:`clipasso.background`).
BACKGROUND_MODES: tuple[str, ...] = ("keep", "cutout", "weight")
#: Mask sources named by a string (``SketchConfig.mask_source``, ``--mask NAME``).
MASK_SOURCES: tuple[str, ...] = ("u2net", "saliency", "weights-free")

#: What the loss does with the weight map in ``background="weight"`` (:mod:`clipasso.losses.masking`).
MASK_WEIGHTINGS: tuple[str, ...] = ("target", "features", "both")

_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "num_strokes": _int_check(1, "max_strokes"),
    "num_segments": _int_check(1, "max_segments"),
    "width": _positive_float,
    "iterations": _int_check(0, "max_iterations"),
    "lr": _positive_float,
    "eval_every": _int_check(1),
    "early_stop_delta": _delta,
    "early_stop_patience": _int_check(0),
    "num_sketches": _int_check(1, "max_sketches"),
    "seed": _int_check(0),
    "seed_stride": _int_check(0),
    "image_size": _image_size,
    "fix_scale": _bool_check,
    "background": _str_check(BACKGROUND_MODES),
    "mask_source": _str_check(MASK_SOURCES, optional=True),
    "u2net_weights": _str_check(optional=True),
    "mask_weighting": _str_check(MASK_WEIGHTINGS),
    "loss": _str_check(),
    "loss_options": _options_check,
    "clip_model": _str_check(optional=True),
    "initializer": _str_check(),
    "initializer_options": _options_check,
    "saliency_model": _str_check(optional=True),
    "rasterizer": _str_check(),
    "optimize_opacity": _bool_check,
    "opacity_lr": _positive_float,
    "lr_schedule": _str_check(("cosine",), optional=True),
    "lr_decay_fraction": _fraction,
    "prune_after": _int_check(0, optional=True),
    "prune_keep": _int_check(1, "max_sketches"),
    "prune_tolerance": _non_negative,
    "prune_until": _int_check(0, optional=True),
    "shared_views": _bool_check,
    "precision": _str_check(("fp32", "bf16", "auto")),
    "channels_last": _bool_check,
    "fold_batchnorm": _bool_check,
    "prepack_weights": _bool_check,
    "fuse_activations": _bool_check,
    "target_pool": _int_check(0, "max_views"),
    "num_views": _int_check(0, "max_views"),
    "identity_weight": _unit_or_none,
    "reseed_every": _int_check(0, "max_iterations", optional=True),
    "reseed_options": _options_check,
    "device": _str_check(),
    "threads": _int_check(1, optional=True),
    "text": _text_check,
    "text_weight": _positive_float,
    "text_start": _int_check(0, "max_iterations"),
    "text_model": _str_check(optional=True),
    "canvas_size": _canvas_size,
    "fidelity": _int_check(0, optional=True),
    "checkpoint_every": _int_check(1),
    "nested": _stroke_counts,
    "nested_mode": _str_check(("auto", "all", "sample", "spread")),
    "nested_weights": _weights_list,
    "auto_strokes": _bool_check,
    "abstraction": _fraction_closed,
    "auto_max_strokes": _int_check(1, "max_strokes"),
    "free_evaluations": _bool_check,
    "schedule": _str_check(("progressive",), optional=True),
    "schedule_options": _options_check,
}


def check_setting(name: str, value: Any) -> None:
    """Check one setting's type and range on its own (:meth:`SketchConfig.validate` checks them all).

    Raises:
        InputError: An unknown name, a wrong type or a value out of range.
        LimitError: A value above its resource limit (:mod:`clipasso.limits`).
    """
    check = _CHECKS.get(name)
    if check is None:
        raise InputError(f"unknown setting {name!r}; known: {sorted(_CHECKS)}")
    check(name, value)


# ---------------------------------------------------------------------------------------------- TOML


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read settings from a TOML file: its ``[sketch]`` table, or the top level if it has none.

    Every setting is checked on its own (:func:`check_setting`); settings that depend on each other
    are checked when a :class:`SketchConfig` is built from them (e.g. on top of a preset).

    Args:
        path: The file.

    Returns:
        ``{setting: value}`` (only the settings the file gives).

    Raises:
        InputError: A missing, unreadable, binary or malformed file, an unknown setting or a bad
            value; the message names the file.
        LimitError: A file above ``max_config_bytes`` or a value above its limit.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.exists():
        raise InputError(f"config file not found: {p}")
    if not p.is_file():
        raise InputError(f"expected a config file, got a directory or special file: {p}")
    try:
        check_limit(p.stat().st_size, "max_config_bytes", f"the size of config file {p} (bytes)")
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{p}: not a TOML file (not UTF-8 text; invalid byte at offset {exc.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: invalid TOML: {exc}") from None
    except RecursionError:
        raise InputError(f"{p}: invalid TOML: nested too deeply") from None
    table = data.get("sketch", data)
    if not isinstance(table, dict):
        raise InputError(f"{p}: [sketch] must be a table of settings, got {table!r}")
    for name, value in table.items():
        try:
            check_setting(name, value)
        except InputError as exc:
            raise _with_prefix(exc, f"{p}: ") from None
    return dict(table)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: Any) -> str:
    text = str(key)
    return text if _BARE_KEY.fullmatch(text) else _toml_string(text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{ }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    raise InputError(f"a {type(value).__name__} cannot be written to TOML ({value!r})")


def to_toml(settings: Mapping[str, Any]) -> str:
    """Settings as a TOML ``[sketch]`` table; :func:`read_toml` reads it back to the same values.

    None values are left out (they mean "default"; TOML has no null), also inside options.

    Example:
        >>> print(to_toml({"num_strokes": 8, "device": "cpu", "clip_model": None}), end="")
        [sketch]
        num_strokes = 8
        device = "cpu"
    """
    lines = ["[sketch]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in settings.items() if v is not None]
    return "\n".join(lines) + "\n"
