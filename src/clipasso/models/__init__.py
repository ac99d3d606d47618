"""CLIP models: loading (by name or path) and feature taps by layer name."""

from .loading import (
    CLIP_MODELS,
    available_models,
    build_clip,
    default_cache_dir,
    load_clip,
    read_state_dict,
    resolve_weights,
    weights_env_var,
)
from .taps import (
    CLIP_MEAN,
    CLIP_STD,
    RESNET_LAYERS,
    ViTFeatures,
    is_resnet,
    is_vit,
    normalize,
    resnet_features,
    visual_of,
    vit_attention,
    vit_features,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_MODELS",
    "CLIP_STD",
    "RESNET_LAYERS",
    "ViTFeatures",
    "available_models",
    "build_clip",
    "default_cache_dir",
    "is_resnet",
    "is_vit",
    "load_clip",
    "normalize",
    "read_state_dict",
    "resnet_features",
    "resolve_weights",
    "visual_of",
    "vit_attention",
    "vit_features",
    "weights_env_var",
]
