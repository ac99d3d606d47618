"""The machine a benchmark ran on, and pinning it to fewer cores (shared by the benchmark scripts).

Timings mean little without the CPU they came from: :func:`machine_info` records its model and the
instruction sets that change PyTorch's speed most (AMX and AVX-512 with bf16, used by oneDNN for
bf16 matrix products). :func:`pin_cores` restricts the process to ``n`` cores: PyTorch's thread
count is set with ``torch.set_num_threads``, but diffvg starts one worker per *system* core on
every render whatever that says, so a one-thread comparison with diffvg needs the affinity too.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from clipasso.machine import cpu_info

__all__ = ["cpu_flags", "cpu_model", "machine_info", "machine_line", "pin_cores"]

_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512f", "avx512_bf16", "avx2")


def cpu_model() -> str:
    """The CPU's model name with its family/model/stepping (:func:`clipasso.machine.cpu_info`)."""
    info = cpu_info()
    return f"{info['model']} ({info['ids']})" if info["ids"] else str(info["model"])


def cpu_flags() -> dict[str, bool]:
    """Which of the instruction sets that matter here the CPU reports."""
    features = set(cpu_info()["features"])
    return {f: f in features for f in _FLAGS}


def pin_cores(n: int) -> list[int]:
    """Restrict this process (its current and future threads) to the first ``n`` cores it may use.

    Returns:
        The cores now allowed (all of them where affinity cannot be set).
    """
    if not hasattr(os, "sched_setaffinity"):
        return list(range(os.cpu_count() or 1))
    allowed = sorted(os.sched_getaffinity(0))
    if 0 < n < len(allowed):
        os.sched_setaffinity(0, allowed[:n])
    return sorted(os.sched_getaffinity(0))


def machine_info() -> dict[str, Any]:
    """CPU model, AMX/AVX-512 flags, cores (all and allowed), torch version and threads, load."""
    flags = cpu_flags()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "cpu": cpu_model(),
        "amx": flags["amx_tile"] and flags["amx_bf16"],
        "flags": flags,
        "cpus": os.cpu_count(),
        "cores_allowed": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        # the allocator's settings change how often big tensors fault their pages in again
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One printable line of :func:`machine_info`."""
    info = info or machine_info()
    isa = ", ".join(k for k, v in info["flags"].items() if v) or "none of " + "/".join(_FLAGS)
    return (
        f"CPU {info['cpu']}; {'with' if info['amx'] else 'no'} AMX (flags: {isa}); {info['cpus']} CPUs, "
        f"allowed cores {info['cores_allowed']}, torch {info['torch']} with {info['torch_threads']} "
        f"thread(s), load average {info['load_average']:.2f}"
        + (f", GLIBC_TUNABLES={info['glibc_tunables']}" if info.get("glibc_tunables") else "")
    )
