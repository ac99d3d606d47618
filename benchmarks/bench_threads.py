"""Benchmark of the intra-op thread count and the OpenMP wait policy, idle and busy (not a test).

A 2-core machine that runs one other CPU-bound process besides a 2-thread torch program is
oversubscribed: torch's OpenMP threads spin-wait for each other at every parallel region while the
other process holds a core, and the many small ops of the rasterizer and the losses pay that wait
each time. This measures, in fresh subprocesses (the wait policy is read when the OpenMP runtime
loads, so it must be set before ``import torch``):

* ``edges``: the README's weights-free sketch (the ``house`` sample, best of 3, 16 strokes, the
  ``edges`` objective, random initialisation): seconds per optimisation step;
* ``clip``: one training step of the CLIP conv loss on the real RN101 architecture (random
  weights, 4 random views + view 0, B = 1, ``precision="auto"``): loss forward + backward;
* ``suite``: ``tests/test_sketcher.py -k freezes`` through pytest, as the test suite runs it;

for threads 1 and 2, the wait policy as the runtime ships it (``default``: libgomp spins 300 000
times before it sleeps), ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) and ``spinN``
(``GOMP_SPINCOUNT=N``), on the idle machine and with one busy process beside it (a Python
loop spinning on one core). It prints one table of medians and the ratios to the 1-thread idle run,
with the CPU (model, AMX or not) it ran on.

Usage:
    python benchmarks/bench_threads.py [--steps 20] [--reps 5] [--policies default,passive,spin10000]
        [--kinds edges,clip,suite] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_WORKER = "--worker"


def _worker(kind: str, steps: int, reps: int) -> float:
    import torch

    if kind == "edges":
        from clipasso import Sketcher
        from clipasso.data import load_sample

        sk = Sketcher(loss="edges", initializer="random", num_strokes=16, device="cpu")
        sk.sketch(load_sample("house"), iterations=2)  # warm-up
        times = [sk.sketch(load_sample("house"), iterations=steps).timings["per_step"] for _ in range(reps)]
        return statistics.median(times)
    if kind == "clip":
        from clip.model import CLIP

        from clipasso.losses import CLIPConvLoss, LossContext

        torch.manual_seed(0)
        model = CLIP(
            embed_dim=512, image_resolution=224, vision_layers=(3, 4, 23, 3), vision_width=64,
            vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=512,
            transformer_heads=8, transformer_layers=12,
        ).float().eval()  # fmt: skip
        loss = CLIPConvLoss(model, precision="auto")
        sketch = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)).requires_grad_()
        target = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        gens = [torch.Generator().manual_seed(3)]

        def step() -> float:
            t0 = time.perf_counter()
            sum(loss(sketch, target, LossContext(generators=gens)).values()).sum().backward()
            return time.perf_counter() - t0

        step()
        return statistics.median(step() for _ in range(reps))
    if kind == "suite":
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sketcher.py",
               "-k", "freezes"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - t0
    raise SystemExit(f"unknown kind {kind}")


def cpu_description() -> str:
    from clipasso.machine import cpu_info

    info = cpu_info()
    return f"{info['model']} ({info['cores']} cores; {', '.join(info['features']) or 'no AMX/AVX-512 BF16'})"


def _burner() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(kind: str, threads: int, policy: str, busy: bool, steps: int, reps: int) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin"):  # libgomp: spin this many times, then sleep
        env["GOMP_SPINCOUNT"] = policy[4:]
    env["CLIPASSO_THREADS"] = env["CLIPASSO_TEST_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, _WORKER, kind, str(steps), str(reps), str(threads)]
    burner = _burner() if busy else None
    try:
        time.sleep(0.2 if busy else 0.0)
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == _WORKER:
        kind, steps, reps, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        import torch

        torch.set_num_threads(threads)
        print(_worker(kind, steps, reps))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per edges run")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per configuration")
    parser.add_argument("--kinds", default="edges,clip,suite")
    parser.add_argument(
        "--policies", default="default,passive", help="default, passive, or spinN (GOMP_SPINCOUNT=N)"
    )
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    print(f"cpu: {cpu_description()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    print(f"{'kind':>6} {'threads':>7} {'policy':>8} {'machine':>7} {'seconds':>9} {'x 1-thread idle':>16}")
    for kind in args.kinds.split(","):
        base = None
        for busy in (False, True):
            for policy in args.policies.split(","):
                for threads in (int(t) for t in args.threads.split(",")):
                    sec = run(kind, threads, policy, busy, args.steps, args.reps)
                    if base is None:
                        base = sec
                    machine = "busy" if busy else "idle"
                    print(f"{kind:>6} {threads:>7} {policy:>8} {machine:>7} {sec:>9.3f} {sec / base:>16.2f}")
                    rows.append({"kind": kind, "threads": threads, "policy": policy, "machine": machine,
                                 "seconds": sec, "ratio": sec / base})  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
