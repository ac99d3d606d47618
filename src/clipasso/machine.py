"""What CPU this is, for benchmark records and ``clipasso info`` (imports no torch).

oneDNN picks different kernels on CPUs with and without AMX (``amx_bf16``, ``amx_tile``) or
AVX-512 BF16/FP16, so timings, and the last bits of some results, depend on the CPU kind: every
benchmark result records :func:`cpu_info`.

Example:
    >>> info = cpu_info()
    >>> sorted(info) == ["cores", "features", "ids", "model"] and info["cores"] >= 1
    True
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["CPU_FEATURES", "cpu_info"]

#: The instruction-set flags that change which kernels oneDNN runs (as /proc/cpuinfo names them).
CPU_FEATURES = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512f", "avx2")


def cpu_info(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's model name, family/model/stepping, core count and the :data:`CPU_FEATURES` it has.

    Virtual machines often report a generic name ("Intel(R) Xeon(R) Processor"); ``ids`` and the
    features still tell the generation apart.

    Args:
        cpuinfo: The Linux CPU description to read (elsewhere the model falls back to
            :func:`platform.processor` and the features are unknown, ``[]``).

    Returns:
        ``{"model": str, "ids": str, "cores": int, "features": [flag, ...]}`` (``ids`` like
        ``"family 6, model 143, stepping 8"``, empty where unknown; features in
        :data:`CPU_FEATURES` order).
    """
    model = platform.processor() or platform.machine() or "unknown"
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    first: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():  # the first processor's entries
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip(), value.strip())
    model = first.get("model name") or model
    flags = set((first.get("flags") or first.get("Features") or "").split())
    ids = ", ".join(
        f"{k.removeprefix('cpu ')} {first[k]}" for k in ("cpu family", "model", "stepping") if k in first
    )
    return {
        "model": model,
        "ids": ids,
        "cores": os.cpu_count() or 1,
        "features": [f for f in CPU_FEATURES if f in flags],
    }
