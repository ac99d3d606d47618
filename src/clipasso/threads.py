"""CPU threads: fast on an idle machine, never pathological on a busy one.

torch runs its CPU ops on an OpenMP thread pool (one thread per core by default). Between parallel
regions the pool's threads *spin*: libgomp, the runtime of the PyPI wheels, busy-waits 300 000
rounds before it sleeps. That makes back-to-back small ops fast on an idle machine, but when
another process holds one of the cores, every op waits for a thread that is not running: measured
on a 2-core Xeon (``benchmarks/bench_threads.py``, ``docs/performance.md``) a weights-free sketch
step went from 0.11 s to 1.8 s and a CLIP step from 0.79 s to 5.9 s with one busy process beside
it, where one thread took 0.25 s and 2.4 s. Spinning only 10 000 rounds keeps the idle speed
(0.13 s, 0.79 s) and stays in line with one thread on the busy machine (0.26 s, 2.0 s).

The spin count is read when the OpenMP runtime loads, i.e. on ``import torch``. ``import clipasso``
calls :func:`limit_spinning` (it imports no torch itself), so a script that imports clipasso before
torch gets the brief spin; one that imports torch first can set ``GOMP_SPINCOUNT=10000`` in the
environment, or use one thread (``SketchConfig(threads=1)``). A value the user set is never
changed. :func:`intra_op_threads` scopes ``torch.set_num_threads`` to a block
(``SketchConfig.threads``, ``clipasso sketch --threads``).

Example:
    >>> with intra_op_threads(1):
    ...     import torch
    ...     torch.get_num_threads()
    1
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["SPIN_COUNT", "intra_op_threads", "limit_spinning"]

#: Rounds an idle OpenMP thread spins before it sleeps, as :func:`limit_spinning` sets it.
SPIN_COUNT = 10_000


def limit_spinning(spin_count: int = SPIN_COUNT) -> bool:
    """Let idle OpenMP threads spin only briefly, unless the user chose otherwise.

    Sets ``GOMP_SPINCOUNT`` (libgomp, the runtime of torch's PyPI wheels) and ``KMP_BLOCKTIME``
    (Intel's runtime, in ms) where they are not set. They take effect only if the OpenMP runtime is
    not loaded yet, i.e. before ``import torch``.

    Args:
        spin_count: Spin rounds before sleeping (0: sleep at once, like ``OMP_WAIT_POLICY=PASSIVE``).

    Returns:
        Whether it can take effect (torch was not imported yet).
    """
    if spin_count < 0:
        raise ValueError(f"spin_count must be >= 0, got {spin_count}")
    os.environ.setdefault("GOMP_SPINCOUNT", str(int(spin_count)))
    os.environ.setdefault("KMP_BLOCKTIME", "1" if spin_count else "0")
    return "torch" not in sys.modules


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` intra-op threads (None: leave torch's setting), then restore it.

    Raises:
        ValueError: ``threads`` < 1.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
