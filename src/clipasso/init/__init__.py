"""Stroke initializers: CLIP saliency (the CLIPasso default), weights-free edges, uniform random, and
from an SVG.

Example:
    >>> import torch
    >>> from clipasso.init import create_initializer, list_initializers
    >>> list_initializers()
    ['edges', 'random', 'saliency', 'svg']
    >>> res = create_initializer("random")(torch.ones(1, 3, 32, 32), 4, generator=torch.Generator())
    >>> tuple(res.strokes.points.shape)
    (1, 4, 4, 2)
"""

from .base import (
    INITIALIZERS,
    Initializer,
    InitResult,
    check_mask,
    check_num_strokes,
    check_target,
    create_initializer,
    list_initializers,
    make_strokes,
    random_walk,
    register_initializer,
    sample_pixels,
    sample_spread_pixels,
)
from .edges import EdgeInitializer, silhouette_relevance
from .figure import render_saliency_figure, save_saliency_figure
from .random import RandomInitializer
from .saliency import SaliencyInitializer, relevance_from_attention, relevance_map, saliency_distribution
from .svg import SVGInitializer

__all__ = [
    "INITIALIZERS",
    "EdgeInitializer",
    "InitResult",
    "Initializer",
    "RandomInitializer",
    "SVGInitializer",
    "SaliencyInitializer",
    "check_mask",
    "check_num_strokes",
    "check_target",
    "create_initializer",
    "list_initializers",
    "make_strokes",
    "random_walk",
    "register_initializer",
    "relevance_from_attention",
    "relevance_map",
    "render_saliency_figure",
    "saliency_distribution",
    "sample_pixels",
    "sample_spread_pixels",
    "save_saliency_figure",
    "silhouette_relevance",
]
