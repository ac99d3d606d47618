"""Several processes sketching one batch: the process group ``torchrun`` sets up, read from its
environment (used by :func:`clipasso.batch.sketch_folders`).

``torchrun`` (``torch.distributed.run``, part of PyTorch) starts one process per rank and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each. Nothing
here starts processes or servers: :func:`World.from_env` only reads those variables, and
:meth:`World.init` joins the group torchrun's rendezvous made (``gloo``, which runs on CPU and
only carries the small plan and summary objects; the sketches never cross processes). Without
those variables, or with a world of one, everything is a no-op and one process does the work.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_TIMEOUT", "World", "local_device"]

#: How long a rank waits for the others in a collective (the plan at the start, the summary at
#: the end, where ranks that finish early wait for the slowest one). A rank that dies is noticed
#: by torchrun, which stops the others, so this only bounds a rank that hangs.
DEFAULT_TIMEOUT = datetime.timedelta(days=7)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes of one run.

    Attributes:
        rank: This process's index, ``0 <= rank < size`` (``RANK``).
        size: Number of processes (``WORLD_SIZE``).
        local_rank: Index among the processes on this machine (``LOCAL_RANK``): its device.
        restart_count: How many times torchrun restarted the group (``TORCHELASTIC_RESTART_COUNT``);
            above 0, a run resumes what the failed attempt left.

    Example:
        >>> World.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
        ...                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
        World(rank=1, size=2, local_rank=1, restart_count=0)
        >>> World.from_env({}).distributed
        False
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    restart_count: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in the environment, or a single process without it.

        Raises:
            InputError: The variables are there but not integers, or the rank is out of range.
        """
        from .errors import InputError

        env = os.environ if environ is None else environ
        if not all(k in env for k in _ENV):
            return cls()
        try:
            rank, size, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
            restarts = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        except ValueError:
            raise InputError(
                "RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)"
            ) from None
        if size < 1 or not 0 <= rank < size or local < 0:
            raise InputError(f"RANK={rank} is not a rank of WORLD_SIZE={size} (LOCAL_RANK={local})")
        return cls(rank, size, local, restarts)

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
        return self.size > 1

    def init(self, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> None:
        """Join torchrun's process group (gloo; a no-op for one process or when already joined)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timeout)

    def close(self) -> None:
        """Leave the process group (a no-op when not joined)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (it waits for all: a barrier)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def local_device(spec: str, world: World, cuda_devices: int | None = None) -> str:
    """The device of this rank: with several processes and GPUs, one GPU per local rank.

    ``"auto"`` and ``"cuda"`` become ``cuda:<local_rank mod number of GPUs>`` in a distributed
    run on a machine with GPUs; anything else (``"cpu"``, ``"cuda:1"``, one process) is kept.

    Args:
        spec: The configured device.
        world: This process's place.
        cuda_devices: Number of GPUs (default: ``torch.cuda.device_count()``).

    Example:
        >>> local_device("auto", World(rank=3, size=4, local_rank=3), cuda_devices=2)
        'cuda:1'
        >>> local_device("auto", World(rank=3, size=4, local_rank=3), cuda_devices=0)
        'auto'
        >>> local_device("cpu", World(rank=1, size=2, local_rank=1), cuda_devices=2)
        'cpu'
    """
    if not world.distributed or spec not in ("auto", "cuda"):
        return spec
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_devices < 1:
        return spec
    return f"cuda:{world.local_rank % cuda_devices}"
