"""Shared fixtures: tiny random-weight CLIP models built through the public loader."""

from __future__ import annotations

import os

from clipasso.threads import limit_spinning

limit_spinning()  # before torch loads the OpenMP runtime: idle threads spin briefly, then sleep

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from clipasso.testing import tiny_clip  # noqa: E402

# One intra-op thread unless asked (CLIPASSO_TEST_THREADS=2): the tiny models' ops are small and
# dispatch-bound, and with two threads a 2-core machine running anything else stalls them (the suite
# took 20 minutes instead of 2.5 beside another job; docs/performance.md, "Threads").
torch.set_num_threads(int(os.environ.get("CLIPASSO_TEST_THREADS", "1")))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core this process may use, at most 4 (each
    holds its own tiny models and imports, ~2 GB at its peak). PYTEST_XDIST_AUTO_NUM_WORKERS or
    ``-n N`` choose otherwise; ``-n 0`` runs in this process. Two workers on 2 cores took the suite
    from 640-715 s to 397 s on the AMD EPYC."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def tiny_resnet() -> torch.nn.Module:
    """A tiny CLIP ResNet (224 px input), frozen, loaded from a state-dict file."""
    return tiny_clip("resnet", seed=0)


@pytest.fixture(scope="session")
def tiny_vit() -> torch.nn.Module:
    """A tiny CLIP ViT/32 (224 px input, 2 heads, 3 blocks), frozen, loaded from a state-dict file."""
    return tiny_clip("vit", seed=0)
