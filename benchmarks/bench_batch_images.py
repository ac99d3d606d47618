"""Images per hour: one image at a time vs several images in one optimisation (``Sketcher.sketch_many``).

The same images, settings and seeds both ways, in one process, alternating (a, b, a, b) so that a
change of the machine's load hits both; the weights-free ``edges`` objective by default (what runs
offline), or the tiny calibrated CLIP models (``--objective tiny-clip``, a cost proxy only).

    python benchmarks/bench_batch_images.py --images 4 --iterations 60 \
        --json benchmarks/results/batch-images-edges.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from _machine import machine_info, machine_line, pin_cores

from clipasso import Sketcher
from clipasso.data import sample_tensor

NAMES = ("house", "mug", "horse", "chelsea", "coffee", "astronaut", "rocket")


def sketcher(objective: str, iterations: int, strokes: int, sketches: int) -> Sketcher:
    settings: dict[str, Any] = dict(
        num_strokes=strokes, iterations=iterations, num_sketches=sketches, device="cpu", threads=1
    )
    if objective == "edges":
        return Sketcher(loss="edges", initializer="edges", **settings)
    from clipasso.testing import recalibrate_batchnorm, tiny_clip

    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    return Sketcher(
        clip_model=recalibrate_batchnorm(tiny_clip("resnet"), images),
        saliency_model=tiny_clip("vit"),
        **settings,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--strokes", type=int, default=16)
    parser.add_argument("--sketches", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--objective", choices=("edges", "tiny-clip"), default="edges")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pin_cores(1)
    torch.set_num_threads(1)
    info = machine_info()
    print(machine_line(info), flush=True)
    images = [sample_tensor(NAMES[i % len(NAMES)], size=224)[0] for i in range(args.images)]
    sk = sketcher(args.objective, args.iterations, args.strokes, args.sketches)
    sk.sketch(images[0], iterations=1)  # warm-up: models, caches, kernels
    rows: dict[str, list[float]] = {"one at a time": [], "batched": []}
    losses: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        single = [sk.sketch(im) for im in images]
        rows["one at a time"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = sk.sketch_many(images)
        rows["batched"].append(time.perf_counter() - t0)
        losses = {"one at a time": [r.best_loss for r in single], "batched": [r.best_loss for r in batched]}
    best = {k: min(v) for k, v in rows.items()}
    per_hour = {k: 3600.0 * args.images / v for k, v in best.items()}
    for k in rows:
        print(
            f"{k}: {best[k]:.1f} s for {args.images} images (best of {args.rounds}: {rows[k]}), "
            f"{per_hour[k]:.0f} images/hour; best losses {[round(x, 5) for x in losses[k]]}"
        )
    print(f"batched / one at a time: {best['one at a time'] / best['batched']:.2f}x the images per hour")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(args) | {"json": str(args.json)},
                    "seconds": rows,
                    "images_per_hour": per_hour,
                    "best_losses": losses,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
