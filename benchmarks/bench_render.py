"""Benchmark of the rasterizer backends (not a test).

Prints the median forward and forward+backward times (2 threads) for N = 16, 32, 64, 128
CLIPasso-like strokes (METHOD §3.7: start uniform on the canvas, 3 steps of 0.05·size·(u − 0.5))
at 224 and 512, and B = 3 sketches × 16 strokes at 224; the peak memory of a forward+backward
(the maximum of the live CPU memory from the torch profiler's allocation
events); and diffvg with the ratio where the real diffvg is installed.

Usage:
    python benchmarks/bench_render.py [--reps 20] [--threads 2] [--backends torch,diffvg]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from clipasso.machine import cpu_info
from clipasso.render import available_backends, composite, rasterize

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default=",".join(available_backends()))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backends = [b for b in args.backends.split(",") if b in available_backends()]
    cpu = cpu_info()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, backends {backends}")
    print(f"cpu: {cpu['model']} ({', '.join(cpu['features']) or 'no AMX / AVX-512 BF16'})")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    results = []
    header = f"{'N':>4} {'size':>5} {'B':>2} {'backend':>8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>8}"
    print(header)
    for n, size, batch in GRID:
        base = None
        for backend in backends:
            reps = args.reps if backend == "torch" else max(3, args.reps // 5)
            fwd, both = time_config(n, size, batch, backend, reps)
            mem = float("nan") if args.no_memory else peak_memory_mb(n, size, batch, backend)
            ratio = "" if base is None else f"  (x{both / base:.1f} of torch)"
            base = both if base is None else base
            print(f"{n:>4} {size:>5} {batch:>2} {backend:>8} {fwd:>9.2f} {both:>11.2f} {mem:>8.1f}{ratio}")
            results.append({"n": n, "size": size, "batch": batch, "backend": backend, "fwd_ms": fwd,
                            "fwd_bwd_ms": both, "peak_mb": mem})  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": cpu, "torch": torch.__version__, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
