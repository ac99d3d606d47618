"""Shared fixtures: tiny random-weight CLIP models built through the public loader."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from clipasso.testing import tiny_clip

# CLIPASSO_TEST_THREADS=1 avoids thread oversubscription when other jobs share the CPU.
torch.set_num_threads(int(os.environ.get("CLIPASSO_TEST_THREADS", min(2, os.cpu_count() or 1))))

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
