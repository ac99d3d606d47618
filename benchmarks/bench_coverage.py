"""Benchmark of outline coverage in the weights-free mode: edge starts and re-seeding (not a test).

The README's weights-free recipe (``clipasso sketch IMAGE --loss edges``: 16 strokes, best of 3,
seeds 0/1000/2000) on objects whose exact mask is known, in the same process, the variants of an
image back to back (so a drift of the machine's speed hits them alike):

* ``before``: ``initializer="random"``, ``reseed_every=0``: the weights-free recipe before the
  ``edges`` initializer and re-seeding (the command line then started ``--loss edges`` runs on
  random strokes, and nothing moved dead strokes);
* ``after``: today's defaults of ``--loss edges``: ``initializer="edges"`` (which the command line
  picks with ``--loss edges``) and ``reseed_every`` left at its default (None, resolved to 50 for the
  ``edges`` objective; the resolved value is recorded);
* optional ablations (``--variants``): ``edges-init`` (``initializer="edges"``, ``reseed_every=0``)
  and ``reseed`` (``initializer="random"``, ``reseed_every=50``).

The sketch is made from the RGB image alone (as the command line gets it from a PNG without alpha,
e.g. ``save_sample('house', 'house.png')``): the mask is used only to score the result with
:mod:`clipasso.metrics`: **outline recall** (share of the mask's outline pixels within 2 px of ink;
ink = pixels of the best candidate's render at 224 px, black over white, darker than 50 % grey)
and **ink precision** (share of ink pixels inside the mask dilated by 3 px). It also counts the
best sketch's dead strokes by :class:`clipasso.reseed.Reseed`'s rule (``collapsed``: shorter than
4 px; ``off-edges``: less than a quarter of the footprint within 2 px of the target's edges) and
records the edge loss, the time of each run and the machine (``benchmarks/_machine.py``).

The objects (all on white, each with its exact mask; the image is 224 × 224 after the Sketcher's
resize, non-square ones stretched as the reference does):

* ``house``, ``mug``: the drawn samples (:mod:`clipasso.data`), mask = their alpha channel;
* ``horse``: scikit-image's horse silhouette, mask = the silhouette;
* ``coffee``: scikit-image's ``coffee`` photograph cut out with two ellipses drawn with PIL on the
  600 × 400 photograph (bounding boxes (75, 75, 480, 390): the saucer, and (172, 15, 410, 200):
  the cup's rim), white outside: a rough cut-out, so the object's outline is those ellipses';
* ``chelsea``: scikit-image's ``chelsea`` cut out with the ellipse (50, 30, 420, 296) on the
  451 × 300 photograph (the cat's face and some of the background), white outside;
* ``horse-fur``: a synthetic photo cut-out: ``chelsea`` scaled (bicubic) to cover the horse's
  400 × 328 canvas, centre-cropped, kept inside the horse silhouette and white outside it: fur
  texture and the cat's eyes inside an exact silhouette, where texture edges compete with the
  outline.

Usage:
    python benchmarks/bench_coverage.py [--iterations 300] [--images house,mug,...]
        [--variants before,after[,edges-init,reseed]] [--json benchmarks/results/coverage.json]
        [--pictures docs/images/coverage]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import machine_info, machine_line, pin_cores
from PIL import Image, ImageDraw

from clipasso import Sketcher
from clipasso._io import atomic_write_bytes, atomic_write_text
from clipasso.data import load_sample
from clipasso.image import prepare_target
from clipasso.metrics import binary_dilate, coverage, ink_mask, outline
from clipasso.reseed import Reseed, curve_length, stroke_footprints

#: Sketcher settings of each variant beside ``loss="edges"`` (``after`` leaves ``reseed_every`` unset).
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"initializer": "random", "reseed_every": 0},
    "after": {"initializer": "edges"},
    "edges-init": {"initializer": "edges", "reseed_every": 0},
    "reseed": {"initializer": "random", "reseed_every": 50},
}


#: The objects drawn with flat colours (a sample, or a silhouette); the others are photographs.
DRAWN_OBJECTS = ("house", "mug", "horse")


def _cut(photo: Image.Image, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The photo inside a binary mask, white outside; and the mask (L, 0/255)."""
    rgb = np.asarray(photo.convert("RGB")).copy()
    inside = np.asarray(mask.convert("L")) > 127
    rgb[~inside] = 255
    return Image.fromarray(rgb), Image.fromarray((inside * 255).astype(np.uint8))


def objects() -> dict[str, tuple[Image.Image, Image.Image]]:
    """``{name: (RGB image on white, its mask)}`` as described in the module docstring."""
    import skimage.data

    out: dict[str, tuple[Image.Image, Image.Image]] = {}
    for name in ("house", "mug", "horse"):
        out[name] = _cut(load_sample(name), load_sample(name, alpha=True).getchannel("A"))
    horse = load_sample("horse", alpha=True).getchannel("A")
    w, h = horse.size
    cat = Image.fromarray(skimage.data.chelsea())
    s = max(w / cat.width, h / cat.height)
    cat = cat.resize((round(cat.width * s), round(cat.height * s)), Image.Resampling.BICUBIC)
    left, top = (cat.width - w) // 2, (cat.height - h) // 2
    out["horse-fur"] = _cut(cat.crop((left, top, left + w, top + h)), horse)
    coffee = Image.fromarray(skimage.data.coffee())
    mask = Image.new("L", coffee.size, 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse([75, 75, 480, 390], fill=255)
    draw.ellipse([172, 15, 410, 200], fill=255)
    out["coffee"] = _cut(coffee, mask)
    cat = Image.fromarray(skimage.data.chelsea())
    mask = Image.new("L", cat.size, 0)
    ImageDraw.Draw(mask).ellipse([50, 30, 420, 296], fill=255)
    out["chelsea"] = _cut(cat, mask)
    return out


def _dead(sketcher: Sketcher, result: Any) -> dict[str, int]:
    """The best sketch's dead strokes by the Reseed rule (default thresholds)."""
    rule = Reseed()
    strokes = result.strokes
    points = strokes.points.detach()[0]
    foot = stroke_footprints(sketcher.rasterizer, points, strokes.widths.detach()[0], strokes.canvas_size)
    edges = sketcher.loss.edge_ink(result.target.image)[0, 0] > 0.5
    reasons = rule.dead(foot, curve_length(points), binary_dilate(edges, rule.tol))
    return {r: sum(x == r for x in reasons) for r in ("collapsed", "off-edges")}


class _Recording(Sketcher):
    """A Sketcher that keeps the callbacks :meth:`build_callbacks` made (to read ``Reseed.events``)."""

    def build_callbacks(self) -> list[Any]:
        self.built = super().build_callbacks()
        return self.built


def run_one(
    image: Image.Image, mask: Image.Image, settings: dict[str, Any], iterations: int
) -> dict[str, Any]:
    target = prepare_target(image, size=224, mask=mask)  # the Sketcher's own resize, for the mask
    assert target.mask is not None
    sketcher = _Recording(
        loss="edges", iterations=iterations, num_strokes=16, num_sketches=3, device="cpu", **settings
    )
    t0 = time.perf_counter()
    result = sketcher.sketch(image)  # the RGB image alone: the mask only scores
    wall = time.perf_counter() - t0
    assert result.target.image.shape[-2:] == target.mask.shape[-2:]
    render = result.render()  # [1, 3, 224, 224], black over white
    ink = ink_mask(render)  # [1, 224, 224]
    scores = {k: float(v[0]) for k, v in coverage(ink, target.mask[:, 0]).items()}
    events = [e for cb in sketcher.built if isinstance(cb, Reseed) for e in cb.events]
    return {
        **scores,
        "dead": _dead(sketcher, result),
        "reseed_every": sketcher.reseed_every(),
        "initializer": sketcher.config.initializer,
        "moved": len(events),
        "moved_in_best": sum(e.candidate == result.best_index for e in events),
        "edge_loss": result.best_loss,
        "candidate_losses": [c.best_loss for c in result.candidates],
        "best_index": result.best_index,
        "seconds": wall,
        "per_step": result.timings["per_step"],
        "svg": result.svg(),
        "render": render[0],
        "mask": target.mask[0, 0],
        "image": target.image[0],
    }


def _tile(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _with_outline(render: torch.Tensor, mask: torch.Tensor) -> Image.Image:
    """The sketch in black over the object's outline in light red (what a sketch misses shows red)."""
    base = torch.ones(3, *mask.shape)
    ring = outline(mask)
    base[1, ring], base[2, ring] = 0.55, 0.55
    return _tile(base * render)


def pictures(rows: dict[str, dict[str, Any]], variants: list[str], path: Path, size: int = 160) -> None:
    """One row per object: the target, then each variant's best sketch over the outline (light red)."""
    names = list(rows)
    cols = 1 + len(variants)
    pad, label = 4, 14
    sheet = Image.new("RGB", (cols * (size + pad) + pad, label + len(names) * (size + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(["target", *variants]):
        draw.text((pad + j * (size + pad) + 2, 1), title, fill=(0, 0, 0))
    for i, name in enumerate(names):
        first = rows[name][variants[0]]
        tiles = [_tile(first["image"])]
        tiles += [_with_outline(rows[name][v]["render"], rows[name][v]["mask"]) for v in variants]
        for j, tile in enumerate(tiles):
            sheet.paste(
                tile.resize((size, size), Image.Resampling.LANCZOS),
                (pad + j * (size + pad), label + pad + i * (size + pad)),
            )
    buffer = io.BytesIO()
    sheet.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        buffer, format="PNG", optimize=True
    )
    atomic_write_bytes(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--images", default="house,mug,horse,coffee,chelsea,horse-fur")
    parser.add_argument("--variants", default="before,after", help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, and cores pinned")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--pictures",
        type=Path,
        help="PREFIX: write the side-by-side sheets PREFIX-drawn.png (house, mug, horse) and "
        "PREFIX-photos.png (the other objects)",
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    all_objects = objects()
    names = args.images.split(",")
    if sorted(set(names) - set(all_objects)):
        parser.error(f"unknown images {sorted(set(names) - set(all_objects))}; known: {list(all_objects)}")
    pin_cores(args.threads)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(machine_line(machine))
    print(f"{args.iterations} iterations, 16 strokes, best of 3, loss edges; variants {variants}")
    t_start = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        image, mask = all_objects[name]
        rows[name] = {}
        for v in variants:
            r = run_one(image, mask, VARIANTS[v], args.iterations)
            rows[name][v] = r
            print(
                f"{name:10s} {v:10s} recall {r['outline_recall']:.3f} precision {r['ink_precision']:.3f} "
                f"dead {r['dead']} moved {r['moved']} ({r['moved_in_best']} in the best) "
                f"edge loss {r['edge_loss']:.5f} {r['seconds']:.1f} s",
                flush=True,
            )
    total = time.perf_counter() - t_start
    print("\n| object | " + " | ".join(f"{v}: recall / precision" for v in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for name in names:
        cells = [
            f"{rows[name][v]['outline_recall']:.0%} / {rows[name][v]['ink_precision']:.0%}" for v in variants
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    means = {
        v: {
            "outline_recall": statistics.mean(rows[n][v]["outline_recall"] for n in names),
            "ink_precision": statistics.mean(rows[n][v]["ink_precision"] for n in names),
            "seconds": statistics.mean(rows[n][v]["seconds"] for n in names),
            "dead": sum(sum(rows[n][v]["dead"].values()) for n in names),
            "moved": sum(rows[n][v]["moved"] for n in names),
        }
        for v in variants
    }
    cells = [f"{means[v]['outline_recall']:.0%} / {means[v]['ink_precision']:.0%}" for v in variants]
    print("| **mean** | " + " | ".join(cells) + " |")
    for v in variants:
        print(
            f"{v}: {means[v]['dead']} dead strokes in {len(names)} best sketches, {means[v]['moved']} moved; "
            f"mean {means[v]['seconds']:.1f} s per sketch"
        )
    print(f"total {total:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
    if args.pictures is not None:
        groups = {"drawn": [n for n in names if n in DRAWN_OBJECTS]}
        groups["photos"] = [n for n in names if n not in DRAWN_OBJECTS]
        for group, members in groups.items():
            if members:
                path = args.pictures.with_name(f"{args.pictures.name}-{group}.png")
                pictures({n: rows[n] for n in members}, variants, path)
                print(f"pictures: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if args.json is not None:
        keep = (
            "outline_recall",
            "ink_precision",
            "dead",
            "reseed_every",
            "initializer",
            "moved",
            "moved_in_best",
            "edge_loss",
            "candidate_losses",
            "best_index",
            "seconds",
            "per_step",
            "svg",
        )
        report = {
            "machine": machine,
            "python": platform.python_version(),
            "threads": args.threads,
            "iterations": args.iterations,
            "num_strokes": 16,
            "num_sketches": 3,
            "loss": "edges",
            "variants": {v: VARIANTS[v] for v in variants},
            "rows": {n: {v: {k: rows[n][v][k] for k in keep} for v in variants} for n in names},
            "means": means,
            "total_seconds": total,
            "load_average_end": os.getloadavg()[0],
        }
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
