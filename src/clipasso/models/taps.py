"""Feature taps on CLIP image towers, by layer NAME (never by child index).

ResNet towers (``clip.model.ModifiedResNet``) expose ``stem`` (three conv-bn-relu then the
average pool), ``layer1`` … ``layer4`` and ``attnpool`` (the image embedding). ViT towers expose each
transformer block's token output and its post-softmax attention probabilities.

Inputs are CLIP-normalised images (see :func:`normalize`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "RESNET_LAYERS",
    "ViTFeatures",
    "is_resnet",
    "is_vit",
    "normalize",
    "resnet_features",
    "visual_of",
    "vit_attention",
    "vit_block_index",
    "vit_features",
    "vit_tokens",
]

#: CLIP's image normalisation constants (RGB).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: Tap names of a ResNet tower, in forward order.
RESNET_LAYERS: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool")


@functools.lru_cache(maxsize=16)
def _mean_std(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # cached per device/dtype: normalising every view of every step must not copy the constants
    # to the device each time
    mean = torch.tensor(CLIP_MEAN, device=device, dtype=dtype).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device, dtype=dtype).view(3, 1, 1)
    return mean, std


def normalize(images: Tensor) -> Tensor:
    """CLIP-normalise RGB images in [0, 1].

    Args:
        images: ``[..., 3, H, W]`` (e.g. ``[B, 3, H, W]`` or views ``[B, V, 3, H, W]``).

    Returns:
        The same shape, ``(images - mean) / std`` per channel.

    Example:
        >>> normalize(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """
    if images.ndim < 3 or images.shape[-3] != 3:
        raise InputError(f"images must have shape [..., 3, H, W], got {list(images.shape)}")
    mean, std = _mean_std(images.device, images.dtype)
    return (images - mean) / std


def visual_of(model: nn.Module) -> Any:
    """The image tower of a CLIP model (or the argument itself if it already is one).

    Typed ``Any``: CLIP's towers are duck-typed (``ModifiedResNet`` / ``VisionTransformer``)."""
    visual = getattr(model, "visual", None)
    return visual if isinstance(visual, nn.Module) else model


def is_vit(model: nn.Module) -> bool:
    """True for a CLIP ViT (``VisionTransformer``) model or image tower."""
    visual = visual_of(model)
    return hasattr(visual, "transformer") and hasattr(visual, "class_embedding")


def is_resnet(model: nn.Module) -> bool:
    """True for a CLIP ResNet (``ModifiedResNet``) model or image tower."""
    visual = visual_of(model)
    return hasattr(visual, "attnpool") and hasattr(visual, "layer1")


def _stem(visual: Any, x: Tensor) -> Tensor:
    for i in (1, 2, 3):
        x = getattr(visual, f"bn{i}")(getattr(visual, f"conv{i}")(x))
        act = getattr(visual, f"relu{i}", None) or getattr(visual, "relu", None)
        x = act(x) if act is not None else F.relu(x)
    return visual.avgpool(x)


def resnet_features(
    visual: nn.Module, images: Tensor, layers: Sequence[str] = RESNET_LAYERS
) -> dict[str, Tensor]:
    """Named intermediate features of a CLIP ResNet image tower.

    The forward pass stops after the deepest requested layer.

    Args:
        visual: A CLIP ResNet model or its ``.visual`` tower.
        images: CLIP-normalised images ``[B, 3, H, W]``.
        layers: Any of ``"stem"``, ``"layer1"`` … ``"layer4"``, ``"attnpool"``.

    Returns:
        ``{name: tensor}``; feature maps are ``[B, C, h, w]``, ``"attnpool"`` is ``[B, E]`` and equals
        ``model.encode_image(images)``.

    Example:
        >>> from clipasso.testing import tiny_clip
        >>> feats = resnet_features(tiny_clip("resnet"), torch.zeros(1, 3, 224, 224), ["layer2", "attnpool"])
        >>> sorted(feats)
        ['attnpool', 'layer2']
    """
    tower = visual_of(visual)
    if not is_resnet(tower):
        raise InputError("resnet_features needs a CLIP ResNet tower (RN50, RN101, ...)")
    unknown = [name for name in layers if name not in RESNET_LAYERS]
    if unknown:
        raise InputError(f"unknown ResNet layer(s) {unknown}; known: {list(RESNET_LAYERS)}")
    if not layers:
        return {}
    wanted = set(layers)
    last = max(RESNET_LAYERS.index(name) for name in layers)
    x = images.to(tower.conv1.weight.dtype)
    out: dict[str, Tensor] = {}
    x = _stem(tower, x)
    if "stem" in wanted:
        out["stem"] = x
    for idx, name in enumerate(RESNET_LAYERS[1:], start=1):
        if idx > last:
            break
        x = getattr(tower, name)(x)
        if name in wanted:
            out[name] = x
    return out


@dataclass
class ViTFeatures:
    """Outputs of :func:`vit_features`.

    Attributes:
        tokens: Per transformer block, its output tokens ``[B, L, D]`` (``L = 1 + patches``; token 0
            is the class token).
        attention: Per block, post-softmax attention probabilities ``[B, heads, L, L]`` (empty when
            not requested).
        embedding: The image embedding ``[B, E]`` (equals ``model.encode_image``), or None when the
            pass stopped early.
    """

    tokens: list[Tensor] = field(default_factory=list)
    attention: list[Tensor] = field(default_factory=list)
    embedding: Tensor | None = None


def _attention_probs(block: Any, x_lnd: Tensor) -> Tensor:
    """Post-softmax attention of a CLIP residual block for input tokens ``[L, B, D]``."""
    attn: nn.MultiheadAttention = block.attn
    h = block.ln_1(x_lnd)
    q, k, _ = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    length, batch, dim = q.shape
    heads = attn.num_heads
    q = q.reshape(length, batch, heads, dim // heads).permute(1, 2, 0, 3)
    k = k.reshape(length, batch, heads, dim // heads).permute(1, 2, 0, 3)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(dim // heads)
    return logits.softmax(dim=-1)


def vit_features(
    visual: nn.Module, images: Tensor, *, attention: bool = True, blocks: int | None = None
) -> ViTFeatures:
    """Per-block tokens (and attention probabilities) of a CLIP ViT image tower.

    Args:
        visual: A CLIP ViT model or its ``.visual`` tower.
        images: CLIP-normalised images ``[B, 3, H, W]`` at the tower's input resolution.
        attention: Also return each block's post-softmax attention ``[B, heads, L, L]``.
        blocks: Stop after this many blocks (then ``embedding`` is None). Default: all.

    Returns:
        A :class:`ViTFeatures`.

    Example:
        >>> from clipasso.testing import tiny_clip
        >>> f = vit_features(tiny_clip("vit"), torch.zeros(1, 3, 224, 224))
        >>> f.tokens[0].shape[1], f.attention[0].shape[-1]
        (50, 50)
    """
    tower = visual_of(visual)
    if not is_vit(tower):
        raise InputError("vit_features needs a CLIP ViT tower (ViT-B/32, ViT-B/16, ...)")
    resblocks = list(tower.transformer.resblocks)
    count = len(resblocks) if blocks is None else blocks
    if not 0 < count <= len(resblocks):
        raise InputError(f"blocks must be in 1..{len(resblocks)}, got {blocks}")
    x = tower.conv1(images.to(tower.conv1.weight.dtype))  # [B, D, g, g]
    x = x.flatten(2).transpose(1, 2)  # [B, g*g, D]
    cls = tower.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    if x.shape[1] != tower.positional_embedding.shape[0]:
        raise InputError(
            f"image size {list(images.shape[-2:])} gives {x.shape[1]} tokens but the tower expects "
            f"{tower.positional_embedding.shape[0]}; resize to {tower.input_resolution}"
        )
    x = tower.ln_pre(x + tower.positional_embedding.to(x.dtype))
    x = x.permute(1, 0, 2)  # [L, B, D]
    out = ViTFeatures()
    for block in resblocks[:count]:
        if attention:
            out.attention.append(_attention_probs(block, x))
        x = block(x)
        out.tokens.append(x.permute(1, 0, 2))
    if count == len(resblocks):
        emb = tower.ln_post(x[0])
        out.embedding = emb @ tower.proj if tower.proj is not None else emb
    return out


def vit_attention(visual: nn.Module, images: Tensor) -> list[Tensor]:
    """Shortcut: the per-block post-softmax attention probabilities ``[B, heads, L, L]``."""
    return vit_features(visual, images, attention=True).attention


def vit_block_index(name: str | int) -> int:
    """The 0-based index of a ViT block given as ``"block<i>"`` or as the integer ``i``.

    ``"block0"`` is the output of the first residual block; ViT-B/32 has ``block0`` … ``block11``.

    Raises:
        InputError: For any other form (negative, non-integer, another prefix).

    Example:
        >>> vit_block_index("block7"), vit_block_index(2)
        (7, 2)
    """
    if isinstance(name, int) and not isinstance(name, bool):
        index = name
    elif isinstance(name, str) and name.startswith("block") and name[5:].isdigit():
        index = int(name[5:])
    else:
        raise InputError(f"a ViT block is 'block<i>' or a non-negative integer i, got {name!r}")
    if index < 0:
        raise InputError(f"a ViT block index must be >= 0, got {index}")
    return index


def vit_tokens(visual: nn.Module, images: Tensor, blocks: Sequence[str | int]) -> dict[str, Tensor]:
    """Output tokens of named ViT blocks; the forward pass stops after the deepest one.

    Args:
        visual: A CLIP ViT model or its ``.visual`` tower.
        images: CLIP-normalised images ``[B, 3, H, W]`` at the tower's input resolution.
        blocks: Block names ``"block<i>"`` (0-based; or the integers ``i``).

    Returns:
        ``{"block<i>": tokens [B, L, D]}`` with ``L = 1 + patches`` (token 0 is the class token):
        the tokens :func:`vit_features` returns for those blocks.

    Raises:
        InputError: A malformed name, or a block the tower does not have (the message gives its depth).

    Example:
        >>> from clipasso.testing import tiny_clip
        >>> feats = vit_tokens(tiny_clip("vit"), torch.zeros(1, 3, 224, 224), ["block1"])
        >>> {k: tuple(v.shape) for k, v in feats.items()}
        {'block1': (1, 50, 128)}
    """
    tower = visual_of(visual)
    if not is_vit(tower):
        raise InputError("vit_tokens needs a CLIP ViT tower (ViT-B/32, ViT-B/16, ...)")
    if not blocks:
        return {}
    indices = {f"block{vit_block_index(b)}": vit_block_index(b) for b in blocks}
    depth = len(tower.transformer.resblocks)
    deepest = max(indices.values())
    if deepest >= depth:
        raise InputError(
            f"block{deepest} was asked for but the ViT has {depth} blocks (block0..block{depth - 1})"
        )
    feats = vit_features(tower, images, attention=False, blocks=deepest + 1)
    return {name: feats.tokens[i] for name, i in indices.items()}
