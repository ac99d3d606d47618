"""Benchmark of the abstraction ladder from one nested run (issue 20; not a test).

For each image, in ONE process and back to back (so a drift of the machine's speed hits the
variants alike), with ``num_sketches=1``, seed 0 and the same iterations everywhere:

* ``plain``: one plain 32-stroke run (the cost unit); its strokes' curve in the order they were
  optimised, and again after greedy reordering (:meth:`clipasso.Sketcher.order_strokes`);
* ``separate``: plain 4-, 8- and 16-stroke runs (with ``plain``, the paper's four-run ladder);
* ``all`` and ``sample``: one nested run, ``num_strokes=32, nested=[4, 8, 16]``, with
  ``nested_mode="all"`` (every prefix every step) and ``"sample"`` (the full sketch and one drawn
  prefix per step); its curve gives every rung;
* ``spread`` (CLIP objectives only): the nested run with ``nested_mode="spread"`` (the loss's
  random views made from prefixes, a plain step's cost);
* optionally (``--progressive``) one progressive 32-stroke run (``schedule="progressive"``: strokes
  added in stages where the residual is largest), its strokes in the order they were added;
* optionally (``--auto``) ``Sketcher(num_strokes="auto")`` runs (the default prefix set
  1, 2, 4, 8, 16, 32) at several ε.

Images (``--images``): the package's samples by name, and ``circle``, a drawn ring (the simplest
shape: one closed outline) for the automatic count.

Every loss compared is the un-augmented eval loss of :meth:`clipasso.Sketcher.loss_curve` (the
objective as at the last step), computed for all variants by the same sketcher. Figures:

* prefix quality: ``L_nested(k) / L_separate(k) - 1`` for k = 4, 8, 16 and ``L_nested(32) /
  L_plain(32) - 1`` (targets: within 5 % mean over images, and 2 %);
* cost: wall time of the nested run (with its curve) over the plain 32-stroke run (target <= 1.5x;
  the four separate runs for comparison);
* order: :func:`clipasso.prefixes.curve_area` of the nested order, of the plain run's order and of
  the plain run greedily reordered (targets: nested <= 0.8x plain; greedy closes >= half the gap);
* automatic count: :func:`clipasso.prefixes.choose_stroke_count` on each nested run's curve at
  several ε (monotone in ε; a simple shape should get fewer strokes than a detailed drawing or a
  photo), and with ``--auto`` real automatic runs.

Objectives (``--objective``): ``edges``, the weights-free edge objective (``initializer="edges"``
as the command line picks with ``--loss edges``); ``proxy``, CLIPasso's CLIPConvLoss on the
random-weight RN101 of the real architecture with BatchNorm recalibrated (the proxy of
``benchmarks/bench_sketch.py``: ``load_models``, the random ViT-B/32 for the saliency start): its
*losses* are a proxy for real CLIP, its *costs* are the real architecture's.

Usage:
    python benchmarks/bench_ladder.py --objective edges --iterations 200 \\
        --json benchmarks/results/ladder-edges-200.json --pictures docs/images/abstraction
    python benchmarks/bench_ladder.py --objective proxy --iterations 15 --images house,chelsea \\
        --json benchmarks/results/ladder-proxy-15.json
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import statistics
import sys
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
from clipasso.prefixes import choose_stroke_count, curve_area

N = 32
RUNGS = (4, 8, 16)
EPSILONS = (0.02, 0.05, 0.1, 0.2, 0.3)


def sketcher_factory(objective: str, iterations: int, precision: str | None = None) -> Any:
    """``make(**settings) -> Sketcher`` for the objective (models built once, shared); ``precision``:
    the CLIP passes' precision for every run alike (None: the default ``"auto"``, whose accuracy
    guard decides per run, so that runs of one image may differ)."""
    common: dict[str, Any] = dict(num_sketches=1, iterations=iterations, device="cpu", seed=0)
    if precision is not None:
        common["precision"] = precision
    if objective == "edges":
        common.update(loss="edges", initializer="edges")
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_sketch import load_models

        models = load_models(Path(os.environ.get("CLIPASSO_BENCH_DIR", "/tmp/clipasso-bench")))
        common.update(clip_model=models.rn101, saliency_model=models.vit)

    def make(**settings: Any) -> Sketcher:
        return Sketcher(**{**common, **settings})

    return make


def circle_image(size: int = 224) -> Image.Image:
    """A black ring on white: the simplest shape, one closed outline."""
    img = Image.new("RGB", (size, size), "white")
    r = size * 0.32
    c = size / 2
    ImageDraw.Draw(img).ellipse((c - r, c - r, c + r, c + r), outline=(0, 0, 0), width=max(2, size // 75))
    return img


def image_named(name: str) -> Image.Image:
    return circle_image() if name == "circle" else load_sample(name).convert("RGB")


def timed(sketcher: Sketcher, image: Image.Image, **kw: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = sketcher.sketch(image, **kw)
    return result, time.perf_counter() - t0


def run_image(make: Any, image: Image.Image, args: argparse.Namespace) -> dict[str, Any]:
    plain_sk = make(num_strokes=N)
    row: dict[str, Any] = {}
    plain, wall = timed(plain_sk, image)
    curve = plain_sk.loss_curve(plain.strokes, plain.target)
    t0 = time.perf_counter()
    greedy = plain_sk.order_strokes(plain) if args.greedy else None
    order_s = time.perf_counter() - t0
    row["plain"] = {
        "seconds": wall,
        "per_step": plain.timings["per_step"],
        "curve": curve,
        "area": curve_area(curve),
        "svg": plain.svg(),
    }
    if greedy is not None:
        row["plain_greedy"] = {
            "seconds": order_s,
            "curve": greedy.curve,
            "area": curve_area(greedy.curve),
            "order": greedy.stroke_order,
        }
    row["separate"] = {}
    for k in RUNGS if args.separate else ():
        res, wall = timed(plain_sk, image, num_strokes=k)
        c = plain_sk.loss_curve(res.strokes, res.target)
        row["separate"][str(k)] = {"seconds": wall, "per_step": res.timings["per_step"], "loss": c[-1]}
    row["separate"][str(N)] = {"seconds": row["plain"]["seconds"], "loss": curve[-1]}
    results = {"plain": plain}
    for mode in args.modes:
        sk = make(num_strokes=N, nested=list(RUNGS), nested_mode=mode, nested_weights=args.nested_weights)
        res, wall = timed(sk, image)
        assert res.curve is not None
        results[mode] = res
        c = res.curve
        entry: dict[str, Any] = {
            "seconds": wall,
            "optimize_seconds": res.timings["total"],
            "per_step": res.timings["per_step"],
            "curve": c,
            "area": curve_area(c),
            "auto": {str(e): choose_stroke_count(c, e) for e in EPSILONS},
            "svg": res.svg(),
        }
        if args.greedy and args.objective == "edges":
            t0 = time.perf_counter()
            g = sk.order_strokes(res, rungs=[])  # free: the rungs are lost
            entry["greedy_area"] = curve_area(g.curve)
            entry["greedy_seconds"] = time.perf_counter() - t0
        if args.greedy:  # within the rungs: the ladder stays, the strokes between rungs ordered
            t0 = time.perf_counter()
            g = sk.order_strokes(res)
            entry["rung_greedy_area"] = curve_area(g.curve)
            entry["rung_greedy_seconds"] = time.perf_counter() - t0
        row[mode] = entry
    if args.progressive:
        sk = make(num_strokes=N, schedule="progressive")
        res, wall = timed(sk, image)
        c = plain_sk.loss_curve(res.strokes, res.target)
        row["progressive"] = {
            "seconds": wall,
            "per_step": res.timings["per_step"],
            "curve": c,
            "area": curve_area(c),
            "auto": {str(e): choose_stroke_count(c, e) for e in EPSILONS},
            "svg": res.svg(),
        }
    if args.auto:
        row["auto_runs"] = {}
        for e in args.auto_epsilons:
            sk = make(num_strokes="auto", abstraction=e, nested_mode=args.auto_mode)
            res, wall = timed(sk, image)
            row["auto_runs"][str(e)] = {
                "auto_strokes": res.auto_strokes,
                "seconds": wall,
                "curve": res.curve,
                "mode": args.auto_mode,
            }
    row["_results"] = results
    row["_sketcher"] = plain_sk
    return row


def cost_rounds(make: Any, image: Image.Image, args: argparse.Namespace) -> dict[str, Any]:
    """``--cost-rounds R``: the cost alone, interleaved: R rounds of (a plain 32-stroke run, then
    one nested run per mode, with its curve); the median wall time of each and its ratio."""
    walls: dict[str, list[float]] = {"plain": []}
    for _ in range(args.cost_rounds):
        _, wall = timed(make(num_strokes=N), image)
        walls["plain"].append(wall)
        for mode in args.modes:
            sk = make(num_strokes=N, nested=list(RUNGS), nested_mode=mode, nested_weights=args.nested_weights)
            _, wall = timed(sk, image)
            walls.setdefault(mode, []).append(wall)
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"walls": walls, "median": med, "ratio": {m: med[m] / med["plain"] for m in args.modes}}


def summarise(rows: dict[str, dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    names = list(rows)
    out: dict[str, Any] = {}
    for mode in modes:
        gaps = {}
        for k in RUNGS if all(len(rows[n]["separate"]) > 1 for n in names) else ():
            gaps[str(k)] = statistics.mean(
                rows[n][mode]["curve"][k] / rows[n]["separate"][str(k)]["loss"] - 1 for n in names
            )
        gaps[str(N)] = statistics.mean(
            rows[n][mode]["curve"][N] / rows[n]["plain"]["curve"][N] - 1 for n in names
        )
        cost = statistics.mean(rows[n][mode]["seconds"] / rows[n]["plain"]["seconds"] for n in names)
        step = statistics.mean(rows[n][mode]["per_step"] / rows[n]["plain"]["per_step"] for n in names)
        area = statistics.mean(rows[n][mode]["area"] / rows[n]["plain"]["area"] for n in names)
        out[mode] = {"prefix_gap": gaps, "cost_ratio": cost, "per_step_ratio": step, "area_ratio": area}
        if all("rung_greedy_area" in rows[n][mode] for n in names):
            out[mode]["rung_greedy_area_ratio"] = statistics.mean(
                rows[n][mode]["rung_greedy_area"] / rows[n]["plain"]["area"] for n in names
            )
            out[mode]["rung_greedy_cost_ratio"] = statistics.mean(
                (rows[n][mode]["seconds"] + rows[n][mode]["rung_greedy_seconds"])
                / rows[n]["plain"]["seconds"]
                for n in names
            )
        monotone = all(
            all(
                rows[n][mode]["auto"][str(a)] >= rows[n][mode]["auto"][str(b)]
                for a, b in itertools.pairwise(EPSILONS)
            )
            for n in names
        )
        out[mode]["auto_monotone"] = monotone
    if all(len(rows[n]["separate"]) > 1 for n in names):
        out["separate_cost_ratio"] = statistics.mean(
            sum(rows[n]["separate"][str(k)]["seconds"] for k in (*RUNGS, N)) / rows[n]["plain"]["seconds"]
            for n in names
        )
    if all("progressive" in rows[n] and len(rows[n]["separate"]) > 1 for n in names):
        out["progressive"] = {
            "full_gap": statistics.mean(
                rows[n]["progressive"]["curve"][N] / rows[n]["plain"]["curve"][N] - 1 for n in names
            ),
            "prefix_gap": {
                str(k): statistics.mean(
                    rows[n]["progressive"]["curve"][k] / rows[n]["separate"][str(k)]["loss"] - 1
                    for n in names
                )
                for k in RUNGS
            },
            "cost_ratio": statistics.mean(
                rows[n]["progressive"]["seconds"] / rows[n]["plain"]["seconds"] for n in names
            ),
            "area_ratio": statistics.mean(
                rows[n]["progressive"]["area"] / rows[n]["plain"]["area"] for n in names
            ),
        }
    out["auto_counts"] = {
        key: {n: rows[n][key]["auto"] for n in names}
        for key in (*modes, "progressive")
        if all(key in rows[n] for n in names)
    }
    if all("plain_greedy" in rows[n] for n in names):
        out["greedy_area_ratio"] = statistics.mean(
            rows[n]["plain_greedy"]["area"] / rows[n]["plain"]["area"] for n in names
        )
        for mode in modes:
            closed = [
                (rows[n]["plain"]["area"] - rows[n]["plain_greedy"]["area"])
                / (rows[n]["plain"]["area"] - rows[n][mode]["area"])
                for n in names
                if rows[n]["plain"]["area"] > rows[n][mode]["area"]
            ]
            out[mode]["greedy_closes_per_image"] = statistics.mean(closed) if closed else None
            plain_area = statistics.mean(rows[n]["plain"]["area"] for n in names)
            gap = plain_area - statistics.mean(rows[n][mode]["area"] for n in names)
            done = plain_area - statistics.mean(rows[n]["plain_greedy"]["area"] for n in names)
            out[mode]["greedy_closes"] = done / gap if gap > 0 else None  # of the mean areas
    return out


# ------------------------------------------------------------------------------------ pictures


def _tile(x: torch.Tensor, size: int) -> Image.Image:
    arr = (x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr).resize((size, size), Image.Resampling.LANCZOS)


def _save(sheet: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    sheet.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        buffer, format="PNG", optimize=True
    )
    atomic_write_bytes(path, buffer.getvalue())
    print(f"picture: {path} ({path.stat().st_size / 1024:.0f} KiB)")


def _grid(rows: list[tuple[str, list[tuple[str, Image.Image]]]], size: int) -> Image.Image:
    pad, label = 4, 14
    cols = max(len(r[1]) for r in rows)
    height = len(rows) * (size + label + pad) + pad
    sheet = Image.new("RGB", (cols * (size + pad) + pad, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (_, tiles) in enumerate(rows):
        top = pad + i * (size + label + pad)
        for j, (title, tile) in enumerate(tiles):
            draw.text((pad + j * (size + pad) + 2, top), title, fill=(0, 0, 0))
            sheet.paste(tile, (pad + j * (size + pad), top + label))
    return sheet


def pictures(rows: dict[str, dict[str, Any]], mode: str, prefix: Path, size: int = 112) -> None:
    """``PREFIX-ladder.png`` (target and the 4/8/16/32 prefixes of one nested run per image),
    ``PREFIX-order.png`` (one run's drawing order, the newest stroke red), ``PREFIX-auto.png``
    (the automatic count at ε = 0.1 per image), ``PREFIX-curve.png`` (normalised curves)."""
    ladder = []
    auto = []
    for name, row in rows.items():
        res = row["_results"][mode]
        tiles = [("target", _tile(res.target.image[0], size))]
        tiles += [(f"{k} strokes", _tile(res.prefix(k).render()[0], size)) for k in (*RUNGS, N)]
        ladder.append((name, tiles))
        k = row[mode]["auto"]["0.1"]
        auto.append(
            (
                name,
                [
                    (name, _tile(res.target.image[0], size)),
                    (f"auto: {k}", _tile(res.prefix(k).render()[0], size)),
                ],
            )
        )
    _save(_grid(ladder, size), prefix.with_name(prefix.name + "-ladder.png"))
    flat = [tile for _, tiles in auto for tile in tiles]
    _save(_grid([("auto", flat)], size), prefix.with_name(prefix.name + "-auto.png"))
    # drawing order of the first image's nested run: the k-th stroke in red on the first k - 1
    name = next(iter(rows))
    res = rows[name]["_results"][mode]
    raster = rows[name]["_sketcher"].rasterizer
    s = res.strokes
    frames = []
    for k in (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32):
        colors = s.colors.detach().clone()[:, :k]
        colors[:, k - 1] = torch.tensor([0.85, 0.1, 0.1, 1.0])
        with torch.no_grad():
            im = raster.render_over(
                s.points.detach()[:, :k], s.widths.detach()[:, :k], colors, s.canvas_size, 1.0
            )
        frames.append((f"k = {k}", _tile(im[0], 80)))
    _save(_grid([("order", frames)], 80), prefix.with_name(prefix.name + "-order.png"))
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(rows), 2.8), dpi=90)
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, (name, row) in zip(axes, rows.items()):
        for key, label, style in (
            ("plain", "plain run, its order", "-"),
            ("plain_greedy", "plain run, greedy order", "--"),
            (mode, f"nested ({mode})", "-"),
        ):
            if key not in row:
                continue
            c = row[key]["curve"]
            norm = [(x - c[-1]) / (c[0] - c[-1]) for x in c]
            ax.plot(range(len(c)), norm, style, linewidth=1.2, label=f"{label}: area {row[key]['area']:.2f}")
        k = row[mode]["auto"]["0.1"]
        ax.axvline(k, color="tab:red", linestyle=":", linewidth=1)
        ax.set_title(f"{name} (auto, eps 0.1: {k})", fontsize=9)
        ax.set_xlabel("strokes k", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("normalised loss", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    sheet = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    _save(sheet, prefix.with_name(prefix.name + "-curve.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=("edges", "proxy"), default="edges")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--images", default="horse,house,chelsea")
    parser.add_argument("--modes", default="all,sample")
    parser.add_argument("--no-greedy", dest="greedy", action="store_false")
    parser.add_argument(
        "--no-separate",
        dest="separate",
        action="store_false",
        help="skip the separate 4/8/16-stroke runs (no prefix gaps: order and cost only)",
    )
    parser.add_argument("--auto", action="store_true", help="also real num_strokes='auto' runs")
    parser.add_argument("--progressive", action="store_true", help="also a progressive 32-stroke run")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), help="proxy: the same precision for every run"
    )
    parser.add_argument(
        "--cost-rounds",
        type=int,
        default=0,
        help="only the cost: R interleaved rounds of plain and nested runs",
    )
    parser.add_argument(
        "--nested-weights", help="the nested runs' prefix weights, e.g. 1,1,1,3 (4, 8, 16, 32)"
    )
    parser.add_argument("--auto-epsilons", default="0.1")
    parser.add_argument("--auto-mode", default="sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pictures", type=Path, help="PREFIX of the figures (edges runs)")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    args.nested_weights = [float(w) for w in args.nested_weights.split(",")] if args.nested_weights else None
    args.auto_epsilons = [float(e) for e in args.auto_epsilons.split(",")]
    pin_cores(args.threads)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    print(machine_line(machine))
    print(
        f"objective {args.objective}, {args.iterations} iterations, N = {N}, rungs {RUNGS}, "
        f"modes {args.modes}"
    )
    t_start = time.perf_counter()
    make = sketcher_factory(args.objective, args.iterations, args.precision)
    names = args.images.split(",")
    rows: dict[str, dict[str, Any]] = {}
    if args.cost_rounds > 0:
        costs = {}
        for name in names:
            costs[name] = cost_rounds(make, image_named(name), args)
            print(name, json.dumps(costs[name]), flush=True)
        mean = {m: statistics.mean(c["ratio"][m] for c in costs.values()) for m in args.modes}
        print("mean cost ratio", mean, f"load average {os.getloadavg()[0]:.2f}")
        if args.json is not None:
            report = {
                "machine": machine,
                "objective": args.objective,
                "threads": args.threads,
                "iterations": args.iterations,
                "cost_rounds": args.cost_rounds,
                "nested_weights": args.nested_weights,
                "images": costs,
                "mean_ratio": mean,
                "load_average_end": os.getloadavg()[0],
            }
            atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        return
    for name in names:
        image = image_named(name)
        row = run_image(make, image, args)
        rows[name] = row
        line = f"{name:8s} plain {row['plain']['seconds']:.1f} s area {row['plain']['area']:.3f}"
        if "plain_greedy" in row:
            line += f" (greedy {row['plain_greedy']['area']:.3f}, {row['plain_greedy']['seconds']:.1f} s)"
        line += f"; separate {sum(v['seconds'] for v in row['separate'].values()):.1f} s"
        for mode in [*args.modes, *(["progressive"] if "progressive" in row else [])]:
            e = row[mode]
            gaps = [
                e["curve"][k] / row["separate"][str(k)]["loss"] - 1
                for k in RUNGS
                if str(k) in row["separate"]
            ]
            gaps.append(e["curve"][N] / row["plain"]["curve"][N] - 1)
            line += (
                f"\n         {mode:6s} {e['seconds']:.1f} s area {e['area']:.3f}"
                + (
                    f" (within rungs {e['rung_greedy_area']:.3f}, {e['rung_greedy_seconds']:.1f} s)"
                    if "rung_greedy_area" in e
                    else ""
                )
                + " gaps "
                + " ".join(f"{g:+.1%}" for g in gaps)
                + f" auto {e['auto']}"
            )
        if "auto_runs" in row:
            runs = [(e, v["auto_strokes"], round(v["seconds"], 1)) for e, v in row["auto_runs"].items()]
            line += f"\n         auto runs {runs}"
        print(line, flush=True)
    summary = summarise(rows, args.modes)
    total = time.perf_counter() - t_start
    print(json.dumps(summary, indent=1))
    print(f"total {total:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
    if args.pictures is not None:
        pictures(rows, args.modes[0], args.pictures)
    if args.json is not None:
        report = {
            "machine": machine,
            "python": platform.python_version(),
            "objective": args.objective,
            "precision": args.precision,
            "threads": args.threads,
            "iterations": args.iterations,
            "num_strokes": N,
            "rungs": list(RUNGS),
            "nested_weights": args.nested_weights,
            "num_sketches": 1,
            "seed": 0,
            "epsilons": list(EPSILONS),
            "rows": {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in rows.items()},
            "summary": summary,
            "total_seconds": total,
            "load_average_end": os.getloadavg()[0],
        }
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
