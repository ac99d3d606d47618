"""Several images in one optimisation: the run behind :meth:`clipasso.Sketcher.sketch_many`.

The images' candidates are one batch (``B = K × num_sketches``), each candidate against its own
image (``RunState.target.image [B, 3, H, W]``; the engine takes the active candidates' rows), with
the seeds each image would get alone; ``RunState.groups`` tells the race and the results which
candidates belong to which image.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .engine import RunState, candidates_from_state
from .errors import InputError
from .image import ImageLike, Target
from .result import SketchResult
from .strokes import StrokeSet

__all__ = ["run_many"]


def run_many(sketcher: Any, images: list[ImageLike], masks: list[ImageLike | None]) -> list[SketchResult]:
    """Several images' candidates as one run of ``sketcher`` (:meth:`clipasso.Sketcher.sketch_many`,
    which checks the arguments and sets the per-call config): one target per candidate, the
    candidates of image ``i`` as ``RunState.groups[i]``, one result per image."""
    cfg = sketcher.config
    t0 = time.perf_counter()
    targets = [sketcher.prepare(image, mask) for image, mask in zip(images, masks)]
    shapes = {tuple(t.image.shape) for t in targets}
    if len(shapes) != 1:
        raise InputError(f"the images were prepared to different sizes {sorted(shapes)}")
    seeds = [cfg.seed + b * cfg.seed_stride for b in range(cfg.num_sketches)]
    dev = sketcher.device
    sketcher.loss.to(dev)
    settings = sketcher.run_settings()
    sketcher.loss.configure(settings)
    sketcher.initializer.configure(settings)
    parts, inits, generators = [], [], []
    for t in targets:
        work = Target(t.image.to(dev), t.mask.to(dev) if t.mask is not None else None, t.original_size)
        strokes, init, gens = sketcher.initialize(work, cfg.num_strokes, seeds)
        parts.append(strokes)
        inits += init
        generators += gens
    n = cfg.num_sketches
    trainable = ("points", "colors") if cfg.optimize_opacity else ("points",)
    cat = StrokeSet.cat(parts)
    strokes = StrokeSet(
        cat.points.detach(),
        cat.widths.detach(),
        cat.colors.detach(),
        canvas_size=cat.canvas_size,
        trainable=trainable,
    )
    image = torch.cat([t.image.to(dev).expand(n, -1, -1, -1) for t in targets])
    mask = None
    if any(t.mask is not None for t in targets):
        mask = torch.cat(
            [
                (t.mask if t.mask is not None else torch.ones_like(t.image[:, :1]))
                .to(dev)
                .expand(n, -1, -1, -1)
                for t in targets
            ]
        )
    optimizer = sketcher.build_optimizer(strokes)
    state = RunState.start(
        strokes,
        optimizer,
        seeds=seeds * len(targets),
        iterations=cfg.iterations,
        scheduler=sketcher.build_scheduler(optimizer, cfg.iterations),
        generators=generators,
        target=Target(image, mask, targets[0].original_size),
    )
    state.groups = [list(range(i * n, (i + 1) * n)) for i in range(len(targets))]
    state.extra["inits"] = inits
    t_init = time.perf_counter()
    engine = sketcher.build_engine(None, "")
    engine.run(state)
    t_end = time.perf_counter()
    steps = max(len(state.train_history), 1)
    timings = {
        "prepare_and_init": t_init - t0,
        "optimize": t_end - t_init,
        "total": t_end - t0,
        "per_step": (t_end - t_init) / steps,
        "images": float(len(targets)),
    }
    everyone = candidates_from_state(state, inits)
    results = []
    for group, t in zip(state.groups, targets):
        candidates = [everyone[b] for b in group]
        results.append(
            SketchResult(
                candidates=candidates,
                best_index=sketcher.select(candidates),
                target=Target(t.image.cpu(), t.mask.cpu() if t.mask is not None else None, t.original_size),
                config=sketcher.config,
                timings=timings,
                rasterizer=sketcher.rasterizer,
            )
        )
    for cb in engine.callbacks:
        for r in results:
            cb.on_end(sketcher, r)
    return results
