"""The machine a benchmark ran on, and pinning it to fewer cores (shared by the benchmark scripts).

Timings mean little without the CPU they came from: :func:`machine_info` records its model and the
instruction sets that change PyTorch's speed most (AMX and AVX-512 with bf16, used by oneDNN for
bf16 matrix products). :func:`pin_cores` restricts the process to ``n`` cores: PyTorch's thread
count is set with ``torch.set_num_threads``, but diffvg starts one worker per *system* core on
every render whatever that says, so a one-thread comparison with diffvg needs the affinity too.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_flags", "cpu_model", "machine_info", "machine_line", "pin_cores"]

_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512f", "avx512_bf16", "avx2")


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def cpu_model() -> str:
    """The CPU's model name with its family/model/stepping (``/proc/cpuinfo``; else ``platform``).

    Virtual machines often report a generic name ("Intel(R) Xeon(R) Processor"); the numbers and
    :func:`cpu_flags` still tell the generation apart.
    """
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or "unknown"
    ids = [f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if k in info]
    return f"{name} ({', '.join(ids)})" if ids else name


def cpu_flags() -> dict[str, bool]:
    """Which of the instruction sets that matter here the CPU reports (``/proc/cpuinfo`` flags)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return {f: f in flags for f in _FLAGS}


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
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One printable line of :func:`machine_info`."""
    info = info or machine_info()
    isa = ", ".join(k for k, v in info["flags"].items() if v) or "none of " + "/".join(_FLAGS)
    return (
        f"CPU {info['cpu']}; {'with' if info['amx'] else 'no'} AMX (flags: {isa}); {info['cpus']} CPUs, "
        f"allowed cores {info['cores_allowed']}, torch {info['torch']} with {info['torch_threads']} "
        f"thread(s), load average {info['load_average']:.2f}"
    )
