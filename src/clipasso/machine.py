"""What CPU this is, for benchmark records and ``clipasso info`` (imports no torch).

oneDNN picks different kernels on CPUs with and without AMX (``amx_bf16``, ``amx_tile``) or
AVX-512 BF16/FP16, so timings, and the last bits of some results, depend on the CPU kind: every
benchmark result records :func:`cpu_info`.

Example:
    >>> info = cpu_info()
    >>> sorted(info) == ["cores", "features", "model"] and info["cores"] >= 1
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
    """The CPU's model name, core count and the :data:`CPU_FEATURES` it has.

    Args:
        cpuinfo: The Linux CPU description to read (elsewhere the model falls back to
            :func:`platform.processor` and the features are unknown, ``[]``).

    Returns:
        ``{"model": str, "cores": int, "features": [flag, ...]}`` (features in
        :data:`CPU_FEATURES` order).
    """
    model = platform.processor() or platform.machine() or "unknown"
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "cores": os.cpu_count() or 1, "features": [f for f in CPU_FEATURES if f in flags]}
