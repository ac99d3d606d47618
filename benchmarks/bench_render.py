"""Benchmark of the rasterizer backends (not a test).

Prints the median forward and forward+backward times for N = 16, 32, 64, 128 CLIPasso-like strokes
(METHOD §3.7: start uniform on the canvas, 3 steps of 0.05·size·(u − 0.5)) at 224 and 512, and
B = 3 sketches × 16 strokes at 224; the peak memory of a torch forward+backward (the maximum of the
live CPU memory from the torch profiler's allocation events; diffvg's own C++ buffers are invisible
to it, so it is not shown for diffvg); and, where the real diffvg is installed, diffvg's times and
its same-run ratios to the torch backend. The first line names the CPU (and whether it has AMX).

Two paths (``--path``): ``rgba`` is ``composite(rasterize(...))`` (validation, straight RGBA, then
onto white: what this benchmark always timed); ``over`` is ``Rasterizer.render_over(..., 1.0)``,
what the Sketcher calls in every step (validated inputs, straight onto white).

``--baseline REV`` times the torch backend of a git revision too (``torch@REV``, its
``torch_backend.py`` loaded from git into this process), so before/after come from one run;
``--rounds`` alternates the backends that many times per configuration (medians of the rounds'
medians), so a drift of the machine's speed hits them alike. ``--accuracy`` adds each backend's
inked-pixel mean absolute error against a 16 × 16-supersampled render
(:func:`clipasso.testing.supersampled_render`; single sketches at up to 224 px, a few seconds each).

``--threads`` sets torch's threads and pins the process to as many cores (``--cores`` to change
that): diffvg starts one worker thread per system core on every render whatever torch is told, so
only the affinity makes a one-thread comparison fair.

Usage:
    python benchmarks/bench_render.py [--reps 20] [--threads 1] [--backends torch,diffvg]
    python benchmarks/bench_render.py --threads 1 --grid 16x224,128x224,16x512,128x512 --reps 10
    python benchmarks/bench_render.py --threads 1 --backends torch --baseline d6fe17b --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from _machine import machine_info, machine_line, pin_cores

from clipasso.render import composite, create_rasterizer, list_rasterizers, rasterize
from clipasso.testing import supersampled_render

GRID = [(16, 224, 1), (32, 224, 1), (64, 224, 1), (128, 224, 1), (16, 512, 1), (32, 512, 1), (64, 512, 1),
        (128, 512, 1), (16, 224, 3)]  # fmt: skip


def strokes(n: int, size: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p0 = torch.rand(batch, n, 1, 2, generator=g) * size
    steps = 0.05 * size * (torch.rand(batch, n, 3, 2, generator=g) - 0.5)
    return torch.cat([p0, p0 + steps.cumsum(2)], dim=2)


def _inputs(n: int, size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pts = strokes(n, size, batch).requires_grad_()
    widths = torch.full((batch, n), 1.5)
    colors = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(batch, n, 4)
    return pts, widths, colors


def _render(
    path: str, backend: str, pts: torch.Tensor, widths: torch.Tensor, colors: torch.Tensor, size: int
):
    if path == "over":
        return create_rasterizer(backend).render_over(pts, widths, colors, (size, size), 1.0)
    return composite(rasterize(pts, widths, colors, size=size, backend=backend))


def time_config(
    n: int, size: int, batch: int, backend: str, reps: int, path: str = "rgba"
) -> tuple[float, float]:
    """Median forward and forward+backward milliseconds over ``reps`` runs, after 3 warm-up runs."""
    pts, widths, colors = _inputs(n, size, batch)
    fwd, both = [], []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        with torch.no_grad():
            _render(path, backend, pts, widths, colors, size)
        t1 = time.perf_counter()
        _render(path, backend, pts, widths, colors, size).mean().backward()
        t2 = time.perf_counter()
        if i >= 3:
            fwd.append(t1 - t0)
            both.append(t2 - t1)
    return 1e3 * statistics.median(fwd), 1e3 * statistics.median(both)


def accuracy_mae(n: int, size: int, backend: str) -> float:
    """Inked-pixel mean absolute error of the render over white against a 16 × 16-supersampled one."""
    pts, widths, colors = _inputs(n, size, 1)
    with torch.no_grad():
        ours = composite(rasterize(pts, widths, colors, size=size, backend=backend))[0].double()
    ref = supersampled_render(pts[0], widths[0], colors[0], (size, size))
    inked = ((ours < 1 - 1e-6) | (ref < 1 - 1e-6)).any(0)
    return float((ours - ref).abs()[:, inked].mean())


def load_baseline(rev: str) -> str:
    """Register the torch backend of git revision ``rev`` as ``torch@REV``; returns that name."""
    name = f"torch@{rev}"
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:src/clipasso/render/torch_backend.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    marker = '@register_rasterizer("torch")'
    if marker not in source:
        raise SystemExit(f"{rev}: torch_backend.py does not register the torch backend as expected")
    module = types.ModuleType(f"clipasso.render._torch_at_{rev}")
    module.__package__ = "clipasso.render"  # its relative imports resolve against today's package
    sys.modules[module.__name__] = module
    code = compile(
        source.replace(marker, f'@register_rasterizer("{name}")'), f"{rev}:torch_backend.py", "exec"
    )
    exec(code, module.__dict__)
    return name


def peak_memory_mb(n: int, size: int, batch: int, backend: str, path: str = "rgba") -> float:
    """Peak live CPU memory (MB) of one forward+backward, from the profiler's allocation events.

    Every allocation and free made by a torch op is recorded (``profile_memory=True``); the
    running sum of the per-op self allocations in chronological order is the live memory held by
    the computation (inputs excluded) and its maximum is the peak.
    """
    from torch.profiler import ProfilerActivity, profile

    pts, widths, colors = _inputs(n, size, batch)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _render(path, backend, pts, widths, colors, size).mean().backward()
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
    parser.add_argument("--path", choices=["rgba", "over", "both"], default="both")
    parser.add_argument("--baseline", help="also time the torch backend of this git revision (torch@REV)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the backends this many times")
    parser.add_argument("--accuracy", action="store_true", help="MAE against 16x16 supersampling")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    pin_cores(args.cores or args.threads)
    torch.set_num_threads(args.threads)
    # the torch backend first: the ratios are to it
    backends = sorted(
        (b for b in args.backends.split(",") if b in list_rasterizers()), key=lambda b: b != "torch"
    )
    if args.baseline:
        backends.append(load_baseline(args.baseline))
    paths = ["rgba", "over"] if args.path == "both" else [args.path]
    machine = machine_info()
    print(machine_line(machine))
    print(f"backends {backends}, paths {paths}, {args.rounds} round(s) of {args.reps} timed runs")
    results = []
    header = f"{'N':>4} {'size':>5} {'B':>2} {'path':>4} {'backend':>14} {'fwd ms':>9} {'fwd+bwd ms':>11}"
    header += f" {'peak MB':>8}"
    print(header + ("  MAE" if args.accuracy else ""))
    for n, size, batch in args.grid:
        for path in paths:
            times: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
            for _ in range(args.rounds):
                for backend in backends:
                    reps = args.reps if backend.startswith("torch") else max(3, args.reps // 5)
                    times[backend].append(time_config(n, size, batch, backend, reps, path))
            base: tuple[float, float] | None = None
            for backend in backends:
                fwd = statistics.median(t[0] for t in times[backend])
                both = statistics.median(t[1] for t in times[backend])
                reps = args.reps if backend.startswith("torch") else max(3, args.reps // 5)
                torch_memory = backend.startswith("torch") and not args.no_memory
                mem = peak_memory_mb(n, size, batch, backend, path) if torch_memory else float("nan")
                row = {"n": n, "size": size, "batch": batch, "path": path, "backend": backend, "fwd_ms": fwd,
                       "fwd_bwd_ms": both, "peak_mb": mem, "reps": reps, "rounds": args.rounds,
                       "round_fwd_bwd_ms": [t[1] for t in times[backend]]}  # fmt: skip
                extra = ""
                if args.accuracy and batch == 1 and size <= 224 and path == "rgba":
                    row["mae_supersampled_16"] = accuracy_mae(n, size, backend)
                    extra = f"  {row['mae_supersampled_16']:.4f}"
                ratio = ""
                if base is None:
                    base = (fwd, both)
                else:
                    row["fwd_ratio"], row["fwd_bwd_ratio"] = fwd / base[0], both / base[1]
                    ratio = f"  (x{row['fwd_ratio']:.2f} fwd, x{row['fwd_bwd_ratio']:.2f} fwd+bwd"
                    ratio += f" of {backends[0]})"
                line = f"{n:>4} {size:>5} {batch:>2} {path:>4} {backend:>14} {fwd:>9.2f} {both:>11.2f}"
                print(f"{line} {mem:>8.1f}{extra}{ratio}")
                results.append(row)
    machine["load_average_end"] = machine_info()["load_average"]
    print(f"load average at the end {machine['load_average_end']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "threads": args.threads, "rounds": args.rounds,
                       "baseline": args.baseline, "rows": results}, fh, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
