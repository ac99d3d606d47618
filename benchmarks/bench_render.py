"""Benchmark of the rasterizer backends (not a test).

Prints the median forward and forward+backward times for N = 16, 32, 64, 128 CLIPasso-like strokes
(METHOD §3.7: start uniform on the canvas, 3 steps of 0.05·size·(u − 0.5)) at 224 and 512, and
B = 3 sketches × 16 strokes at 224; the peak memory of a torch forward+backward (the maximum of the
live CPU memory from the torch profiler's allocation events; diffvg's own C++ buffers are invisible
to it, so it is not shown for diffvg); and, where the real diffvg is installed, diffvg's times and
its same-run ratios to the torch backend. The first line names the CPU (and whether it has AMX).

``--threads`` sets torch's threads and pins the process to as many cores (``--cores`` to change
that): diffvg starts one worker thread per system core on every render whatever torch is told, so
only the affinity makes a one-thread comparison fair.

Usage:
    python benchmarks/bench_render.py [--reps 20] [--threads 1] [--backends torch,diffvg]
    python benchmarks/bench_render.py --threads 1 --grid 16x224,128x224,16x512,128x512 --reps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _machine import machine_info, machine_line, pin_cores

from clipasso.render import composite, list_rasterizers, rasterize

GRID = [(16, 224, 1), (32, 224, 1), (64, 224, 1), (128, 224, 1), (16, 512, 1), (32, 512, 1), (64, 512, 1),
        (128, 512, 1), (16, 224, 3)]  # fmt: skip


def strokes(n: int, size: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p0 = torch.rand(batch, n, 1, 2, generator=g) * size
    steps = 0.05 * size * (torch.rand(batch, n, 3, 2, generator=g) - 0.5)
    return torch.cat([p0, p0 + steps.cumsum(2)], dim=2)


def time_config(n: int, size: int, batch: int, backend: str, reps: int) -> tuple[float, float]:
    pts = strokes(n, size, batch).requires_grad_()
    widths = torch.full((batch, n), 1.5)
    colors = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(batch, n, 4)
    fwd, both = [], []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        with torch.no_grad():
            composite(rasterize(pts, widths, colors, size=size, backend=backend))
        t1 = time.perf_counter()
        composite(rasterize(pts, widths, colors, size=size, backend=backend)).mean().backward()
        t2 = time.perf_counter()
        if i >= 3:
            fwd.append(t1 - t0)
            both.append(t2 - t1)
    return 1e3 * statistics.median(fwd), 1e3 * statistics.median(both)


def peak_memory_mb(n: int, size: int, batch: int, backend: str) -> float:
    """Peak live CPU memory (MB) of one forward+backward, from the profiler's allocation events.

    Every allocation and free made by a torch op is recorded (``profile_memory=True``); the
    running sum of the per-op self allocations in chronological order is the live memory held by
    the computation (inputs excluded) and its maximum is the peak.
    """
    from torch.profiler import ProfilerActivity, profile

    pts = strokes(n, size, batch).requires_grad_()
    widths = torch.full((batch, n), 1.5)
    colors = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(batch, n, 4)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        composite(rasterize(pts, widths, colors, size=size, backend=backend)).mean().backward()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def parse_grid(text: str) -> list[tuple[int, int, int]]:
    """``NxSIZE[xB],...`` (e.g. ``16x224,16x224x3``) → ``[(N, size, B), ...]``."""
    out = []
    for item in text.split(","):
        parts = [int(v) for v in item.lower().split("x")]
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"expected NxSIZE or NxSIZExB, got {item!r}")
        out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions (diffvg: a fifth, >= 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cores", type=int, help="pin to this many cores (default: --threads)")
    parser.add_argument("--backends", default=",".join(list_rasterizers()))
    parser.add_argument("--grid", type=parse_grid, default=GRID, help="NxSIZE[xB],... (default: all)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    pin_cores(args.cores or args.threads)
    torch.set_num_threads(args.threads)
    # the torch backend first: the ratios are to it
    backends = sorted(
        (b for b in args.backends.split(",") if b in list_rasterizers()), key=lambda b: b != "torch"
    )
    machine = machine_info()
    print(machine_line(machine))
    print(f"backends {backends}")
    results = []
    header = f"{'N':>4} {'size':>5} {'B':>2} {'backend':>8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>8}"
    print(header)
    for n, size, batch in args.grid:
        base: tuple[float, float] | None = None
        for backend in backends:
            reps = args.reps if backend == "torch" else max(3, args.reps // 5)
            fwd, both = time_config(n, size, batch, backend, reps)
            torch_memory = backend == "torch" and not args.no_memory
            mem = peak_memory_mb(n, size, batch, backend) if torch_memory else float("nan")
            row = {"n": n, "size": size, "batch": batch, "backend": backend, "fwd_ms": fwd,
                   "fwd_bwd_ms": both, "peak_mb": mem, "reps": reps}  # fmt: skip
            ratio = ""
            if base is None:
                base = (fwd, both)
            else:
                row["fwd_ratio"], row["fwd_bwd_ratio"] = fwd / base[0], both / base[1]
                ratio = (
                    f"  (x{row['fwd_ratio']:.1f} fwd, x{row['fwd_bwd_ratio']:.1f} fwd+bwd of {backends[0]})"
                )
            print(f"{n:>4} {size:>5} {batch:>2} {backend:>8} {fwd:>9.2f} {both:>11.2f} {mem:>8.1f}{ratio}")
            results.append(row)
    machine["load_average_end"] = machine_info()["load_average"]
    print(f"load average at the end {machine['load_average_end']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "threads": args.threads, "rows": results}, fh, indent=1)


if __name__ == "__main__":
    main()
