"""Photos with backgrounds: the plain, two-stage and one-stage runs on cluttered scenes with known masks.

Scenes (``benchmarks/_scenes.py``): the drawn house and mug and scikit-image's horse silhouette,
scaled to 70 % of the canvas at a seeded random place, composited over brick, grass and gravel
textures and over the corners of the coffee and rocket photographs. The true mask is known, so:

* ``ink_precision``: the share of the sketch's ink (rendered at 224, ink > 0.5) inside the true mask
  dilated by 3 px (:func:`clipasso.metrics.ink_precision`);
* ``outline_recall``: the share of the true mask's outline pixels within 2 px of ink
  (:func:`clipasso.metrics.outline_recall`).

Variants (one candidate, seed 0, 16 strokes, the same steps for all):

* ``plain``: the photo as it is, no mask (``background="keep"``);
* ``two-stage``: the reference's cut-out onto white by the true mask (``background="cutout"``);
* ``one-stage``: the photo kept, the true mask as a soft weight (``background="weight"``, the
  default ``mask_weighting="target"``); ``one-stage-features`` / ``one-stage-both``: the other
  weightings;
* ``one-stage-weights-free``: the weight from the weights-free saliency mask (``mask="weights-free"``);
* ``*-eroded5`` / ``*-dilated5``: two- and one-stage with the true mask eroded / dilated by 5 px,
  a slightly wrong matte.

Objectives: ``edges`` (the weights-free ``edges`` loss and initializer); ``rn101`` (the random-weight
CLIP RN101 of the real architecture, ``benchmarks/_proxy.py``, its BatchNorm recalibrated on each
scene with :func:`_proxy.calibration_images`, the reference's ``clip_conv`` terms, ``edges``
initializer: a content-sensitive proxy with the real model's cost, not CLIP's numbers); ``rn`` (the
same with the tiny random ResNet of :mod:`clipasso.testing`: quick, for trying things).

Usage:
    python benchmarks/bench_background.py --objective edges --iterations 150 \
        --out benchmarks/results/background-edges.json
    (add ``--pictures docs/images/backgrounds-edges.png`` for the docs' side-by-side figure)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info
from _scenes import scene

from clipasso import Sketcher
from clipasso.metrics import binary_dilate, ink_mask, ink_precision, outline_recall

# interleaved, so that ``--scenes N`` takes every object and several backgrounds
SCENES = [
    ("house", "grass"),
    ("mug", "coffee"),
    ("horse", "gravel"),
    ("house", "rocket"),
    ("mug", "brick"),
    ("horse", "coffee"),
    ("house", "brick"),
    ("mug", "grass"),
    ("horse", "rocket"),
    ("house", "gravel"),
    ("mug", "rocket"),
    ("horse", "brick"),
    ("house", "coffee"),
    ("mug", "gravel"),
    ("horse", "grass"),
]
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"background": "keep", "mask": None},
    "two-stage": {"background": "cutout", "mask": "true"},
    "one-stage": {"background": "weight", "mask": "true"},
    "one-stage-features": {"background": "weight", "mask": "true", "mask_weighting": "features"},
    "one-stage-both": {"background": "weight", "mask": "true", "mask_weighting": "both"},
    "one-stage-weights-free": {"background": "weight", "mask": "weights-free"},
    "two-stage-eroded5": {"background": "cutout", "mask": "eroded"},
    "one-stage-eroded5": {"background": "weight", "mask": "eroded"},
    "two-stage-dilated5": {"background": "cutout", "mask": "dilated"},
    "one-stage-dilated5": {"background": "weight", "mask": "dilated"},
}


def _mask_for(kind: str | None, true: torch.Tensor) -> Any:
    if kind is None or kind == "weights-free":
        return kind
    m = true[0, 0] > 0.5
    if kind == "eroded":
        m = ~binary_dilate(~m, 5)
    elif kind == "dilated":
        m = binary_dilate(m, 5)
    return m.float()


_RN101: dict[str, Any] = {}


def rn101_for(image: torch.Tensor) -> Any:
    """The RN101 proxy (random weights, seed 0, built once) with BatchNorm recalibrated on ``image``."""
    import copy

    from _proxy import REAL_SPECS, calibration_images
    from clip.model import CLIP

    from clipasso.testing import recalibrate_batchnorm

    if "model" not in _RN101:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _RN101["model"] = CLIP(**REAL_SPECS["RN101"]).float().eval()
    return recalibrate_batchnorm(copy.deepcopy(_RN101["model"]), calibration_images(image))


def sketch(
    objective: str,
    image: torch.Tensor,
    true: torch.Tensor,
    variant: dict[str, Any],
    iterations: int,
    clip_model: Any = None,
) -> Any:
    settings: dict[str, Any] = {
        "num_strokes": 16,
        "iterations": iterations,
        "num_sketches": 1,
        "seed": 0,
        "device": "cpu",
        "initializer": "edges",
        "background": variant["background"],
    }
    if "mask_weighting" in variant:
        settings["mask_weighting"] = variant["mask_weighting"]
    if objective == "edges":
        settings["loss"] = "edges"
    elif objective == "rn101":
        settings["loss"] = "clip_conv"  # the library's default precision (bf16 where the CPU has it)
    else:
        from clipasso.testing import recalibrate_batchnorm, tiny_clip

        settings["loss"] = "clip_conv"
        settings["precision"] = "fp32"
        clip_model = recalibrate_batchnorm(tiny_clip("resnet"), image)
    sk = Sketcher(clip_model=clip_model, **settings)
    return sk.sketch(image[0], mask=_mask_for(variant["mask"], true))


def measure(result: Any, true: torch.Tensor) -> dict[str, float]:
    ink = ink_mask(result.render())[0]
    m = true[0, 0] > 0.5
    return {
        "ink_precision": float(ink_precision(ink, m)),
        "outline_recall": float(outline_recall(ink, m)),
    }


PICTURE_VARIANTS = (
    "plain",
    "two-stage",
    "one-stage",
    "one-stage-weights-free",
    "two-stage-eroded5",
    "one-stage-eroded5",
)
PICTURE_SCENES = (("house", "grass"), ("mug", "coffee"))


def pictures(path: Path, tiles: dict[tuple[str, str], list[tuple[str, torch.Tensor]]]) -> None:
    """A side-by-side figure: each scene, then its sketches (the runs' own renders)."""
    from PIL import Image, ImageDraw

    side, pad = 150, 16
    rows = [tiles[k] for k in PICTURE_SCENES if k in tiles]
    if not rows:
        return
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * side, len(rows) * (side + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (label, t) in enumerate(row):
            arr = (t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8")
            img = Image.fromarray(arr).resize((side, side), Image.Resampling.LANCZOS)
            canvas.paste(img, (c * side, r * (side + pad) + pad))
            draw.text((c * side + 3, r * (side + pad) + 2), label, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path, optimize=True)  # small


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objective", choices=("edges", "rn101", "rn"), default="edges")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--scenes", type=int, default=len(SCENES), help="the first N scenes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="results JSON (merged into an existing file)")
    ap.add_argument("--pictures", type=Path, help="also write a side-by-side figure of two scenes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tiles: dict[tuple[str, str], list[tuple[str, torch.Tensor]]] = {}
    names = args.variants.split(",")
    results: dict[str, Any] = {}
    if args.out is not None and args.out.exists():
        results = json.loads(args.out.read_text())
    runs = results.setdefault("runs", {})
    for i, (obj, bg) in enumerate(SCENES[: args.scenes]):
        image, true = scene(obj, bg, seed=i)
        if (obj, bg) in PICTURE_SCENES:
            tiles[(obj, bg)] = [(f"{obj} on {bg}", image)]
        model = rn101_for(image) if args.objective == "rn101" else None
        for name in names:
            key = f"{obj}/{bg}/{name}"
            t0 = time.perf_counter()
            res = sketch(args.objective, image, true, VARIANTS[name], args.iterations, model)
            runs[key] = {**measure(res, true), "seconds": round(time.perf_counter() - t0, 2)}
            if (obj, bg) in tiles and name in PICTURE_VARIANTS:
                tiles[(obj, bg)].append((name, res.render()))
            print(key, runs[key], flush=True)
    summary: dict[str, dict[str, float]] = {}
    for name in VARIANTS:
        rows = [v for k, v in runs.items() if k.split("/")[2] == name]
        if rows:
            summary[name] = {
                m: round(sum(r[m] for r in rows) / len(rows), 3) for m in ("ink_precision", "outline_recall")
            } | {"scenes": len(rows)}
    results.update(
        {
            "objective": args.objective,
            "iterations": args.iterations,
            "strokes": 16,
            "machine": machine_info(),
            "threads": args.threads,
            "summary": summary,
        }
    )
    for name, row in summary.items():
        p, r, n = row["ink_precision"], row["outline_recall"], row["scenes"]
        print(f"{name:26s} precision {p:.3f}  recall {r:.3f}  ({n} scenes)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    if args.pictures is not None:
        pictures(args.pictures, tiles)


if __name__ == "__main__":
    main()
