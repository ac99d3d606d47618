"""Photos with backgrounds: where the object mask comes from, and how the sketch uses it.

Two separate choices (:class:`~clipasso.config.SketchConfig` fields, command-line flags):

* **the mask's source** (``mask_source``, ``--mask``; or the ``mask=`` argument of
  :meth:`clipasso.Sketcher.sketch`): a file or array of the image's size (as before), an alpha
  channel (as before), ``"u2net"`` (the reference's matting net, :mod:`clipasso.matting`; weights by
  path: ``u2net_weights``, ``--u2net-weights``, ``$CLIPASSO_U2NET_WEIGHTS``), ``"saliency"`` (the
  CLIP ViT relevance map the saliency initializer computes, needs its weights) or
  ``"weights-free"`` (:func:`~clipasso.init.weights_free.weights_free_mask`, no weights).
* **its use** (``background``, ``--background``):

  - ``"keep"`` (default, the reference's): the image as it is; the mask only restricts the stroke
    starts (and, as before, weights the pixel-space terms); CLIP terms ignore it.
  - ``"cutout"``: the reference's two-stage ``--mask_object``: the image composited onto white by
    the hard mask (at the image's own resolution for files, alpha and U²-Net, as the reference
    does), so every later stage sees the cut-out. ``--mask u2net --background cutout`` is the
    reference's pipeline (METHOD §1, steps 2 and 1a).
  - ``"weight"``: one stage. The image is kept whole and the soft weight map :func:`weight_map`
    goes to the loss as ``LossContext.mask`` (see :mod:`clipasso.losses.masking` for what each
    term does with it); the starts are restricted to the object (``W > 0.5``).

The weight map of a hard mask ``m`` (1 = object) and an optional soft map ``s`` (``m = s > 0.5``)::

    W = s (or 1) where m,   min(G_σ(m), 0.5) elsewhere,   σ = margin · min(H, W)

so ``W > 0.5`` is exactly the object, and the object's surroundings keep a weight that falls off
over a few pixels (``margin`` 0.03: 6.7 px at 224): a matte that is a few pixels too small does not
cut the outline off, and one too large does not draw a cut edge. The matte is saved as
``mask.png``; in ``"weight"`` mode, ``W`` also as ``weights.png``.

Example:
    >>> import torch
    >>> m = torch.zeros(1, 1, 32, 32); m[..., 8:24, 8:24] = 1.0
    >>> w = weight_map(m)
    >>> float(w[0, 0, 16, 16]), bool(torch.equal(w > 0.5, m > 0.5)), 0 < float(w[0, 0, 16, 25]) < 0.5
    (1.0, True, True)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import BACKGROUND_MODES, MASK_SOURCES
from .errors import InputError
from .image import ImageLike, Target, prepare_target, read_image
from .xdog import gaussian_blur

if TYPE_CHECKING:  # pragma: no cover
    from .sketcher import Sketcher

__all__ = [
    "BACKGROUND_MODES",
    "MASK_SOURCES",
    "WEIGHT_MARGIN",
    "cut_out",
    "object_mask",
    "prepare_background",
    "source_of",
    "weight_map",
]

#: Fall-off of the weight map outside the mask, as a fraction of the short side.
WEIGHT_MARGIN = 0.03

Source = Literal["u2net", "saliency", "weights-free"]


def weight_map(mask: Tensor, soft: Tensor | None = None, *, margin: float = WEIGHT_MARGIN) -> Tensor:
    """The soft object weight ``W`` of a mask (module docstring): ``[1, 1, H, W]`` in [0, 1].

    Args:
        mask: ``[1, 1, H, W]``, object where ``> 0.5``.
        soft: Optional soft map of the same shape (e.g. U²-Net's normalised output); used inside the
            mask (where it is ``> 0.5`` by definition of a mask taken from it).
        margin: ``σ`` of the fall-off as a fraction of the short side (0: ``W`` = the mask).
    """
    if mask.dim() != 4 or mask.shape[:2] != (1, 1):
        raise InputError(f"mask must be [1, 1, H, W], got {tuple(mask.shape)}")
    if not margin >= 0:
        raise InputError(f"margin must be >= 0, got {margin}")
    m = (mask > 0.5).to(torch.float32)
    inside = torch.ones_like(m) if soft is None else soft.to(m).clamp(0, 1)
    if margin == 0:
        return torch.where(m > 0, inside, torch.zeros_like(m))
    h, w = m.shape[-2:]
    outside = gaussian_blur(m, float(margin) * min(h, w)).clamp(max=0.5)
    return torch.where(m > 0, inside, outside)


def cut_out(image: Tensor, mask: Tensor) -> Tensor:
    """The reference's cut-out: ``image · m + (1 − m)`` with the hard mask ``m = mask > 0.5``."""
    m = (mask > 0.5).to(image)
    return image * m + (1.0 - m)


def source_of(mask: Any, configured: str | None) -> tuple[Source | None, Any]:
    """Split the ``mask=`` argument: ``(source name, None)`` for one of :data:`MASK_SOURCES`, else
    ``(None, mask)`` (a file, array, tensor or None), falling back to ``configured``."""
    if isinstance(mask, str) and mask in MASK_SOURCES:
        return mask, None  # type: ignore[return-value]
    if mask is None and configured is not None:
        if configured not in MASK_SOURCES:
            raise InputError(f"mask_source must be one of {MASK_SOURCES} or None, got {configured!r}")
        return configured, None  # type: ignore[return-value]
    return None, mask


class _FullResolution:
    """A :class:`~clipasso.image.Matting` that returns a mask computed beforehand (the cut-out of
    files, alpha and U²-Net is made at the image's own resolution, as the reference makes it)."""

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask

    def __call__(self, image: Tensor) -> Tensor:
        return self.mask


def _models(sketcher: Sketcher) -> dict[str, Any]:
    """Per-Sketcher cache of the mask models (built lazily, once)."""
    cache: dict[str, Any] = sketcher.__dict__.setdefault("_background_models", {})
    return cache


def _u2net(sketcher: Sketcher) -> Any:
    from .matting import U2NetMatting

    cfg = sketcher.config
    cache = _models(sketcher)
    key = f"u2net:{cfg.u2net_weights}"
    if key not in cache:
        cache[key] = U2NetMatting(cfg.u2net_weights, soft=True)
    return cache[key]


def _vit_relevance(sketcher: Sketcher, image: Tensor) -> Tensor:
    """The saliency initializer's CLIP ViT relevance map of the prepared target, ``[1, 1, S, S]``."""
    from .init.saliency import SaliencyInitializer, relevance_map

    init = sketcher.initializer
    if isinstance(init, SaliencyInitializer):
        rel, _, _ = init.maps(image.to(sketcher.device))
        if init.weights_free:
            raise InputError(
                "mask 'saliency' needs the CLIP ViT saliency weights, which are not available; "
                "use mask 'weights-free' (no weights) or pass --saliency-weights FILE"
            )
        return rel[None, None].to(torch.float32)
    cache = _models(sketcher)
    if "vit" not in cache:
        from .models import load_clip

        name = sketcher.config.saliency_model or "ViT-B/32"
        model = sketcher.saliency_model if sketcher.saliency_model is not None else None
        cache["vit"] = (
            model if model is not None else load_clip(name, device=sketcher.device, role="saliency")
        )
    return relevance_map(cache["vit"], image.to(sketcher.device)).to(torch.float32)


def object_mask(sketcher: Sketcher, source: Source, image: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(hard mask, soft map or None)`` ``[1, 1, H, W]`` of ``image [1, 3, H, W]`` from a named source.

    ``"u2net"``: U²-Net's normalised map (soft) and the reference's matte (hard);
    ``"saliency"``: the ViT relevance (soft) and its 0.5 threshold (as U²-Net's);
    ``"weights-free"``: :func:`~clipasso.init.weights_free.weights_free_mask` (no soft map).
    """
    if source == "u2net":
        matting = _u2net(sketcher)
        prediction = matting.prediction(image)
        from .matting import u2net_matte

        size = (int(image.shape[2]), int(image.shape[3]))
        return u2net_matte(prediction, size).to(image), u2net_matte(prediction, size, soft=True).to(image)
    if source == "saliency":
        soft = _vit_relevance(sketcher, image).to(image.device)
        return (soft > 0.5).to(image), soft
    if source == "weights-free":
        from .init.weights_free import weights_free_mask

        return weights_free_mask(image).to(image), None
    raise InputError(f"unknown mask source {source!r}; known: {MASK_SOURCES}")


def _resize_like_target(mask: Tensor, size: int, fix_scale: bool) -> Tensor:
    """A full-resolution map ``[1, 1, H, W]`` through the target's geometry (pad, resize)."""
    m = mask
    if fix_scale:
        h, w = m.shape[-2:]
        side = max(h, w) + 20
        top, left = (side - h) // 2, (side - w) // 2
        m = F.pad(m, (left, side - w - left, top, side - h - top), value=0.0)
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def prepare_background(sketcher: Sketcher, image: ImageLike, mask: Any = None) -> Target:
    """The target of a run with an image, its mask from its source and used as ``background`` says.

    Called by :meth:`clipasso.Sketcher.prepare`. The returned target's ``mask`` is what the
    initializer and the loss see: the hard mask (``"keep"``, ``"cutout"``) or the weight map
    :func:`weight_map` (``"weight"``; its ``> 0.5`` part is the hard mask).

    Raises:
        InputError: ``"cutout"`` or ``"weight"`` without any mask (no ``mask=``, no alpha channel,
            no ``mask_source``), or a bad mask.
        WeightsError: ``"u2net"`` / ``"saliency"`` without their weights.
    """
    cfg = sketcher.config
    mode = cfg.background
    if mode not in BACKGROUND_MODES:
        raise InputError(f"background must be one of {BACKGROUND_MODES}, got {mode!r}")
    source, given = source_of(mask, cfg.mask_source)
    if isinstance(given, (str, os.PathLike)) and not os.path.exists(os.fspath(given)):
        if isinstance(given, str) and given.replace("_", "-").lower() in MASK_SOURCES:
            raise InputError(f"mask {given!r}: did you mean {given.replace('_', '-').lower()!r}?")
    size, fix = cfg.image_size, cfg.fix_scale
    soft: Tensor | None = None
    if source == "u2net":
        rgb, _, _ = read_image(image)
        hard_full, soft_full = object_mask(sketcher, "u2net", rgb[None])
        if mode == "cutout":  # the reference: the cut-out at the image's resolution
            return prepare_target(image, size=size, fix_scale=fix, matting=_FullResolution(hard_full))
        target = prepare_target(image, size=size, mask=hard_full[0, 0], fix_scale=fix)
        soft = _resize_like_target(soft_full, size, fix) if soft_full is not None else None
    elif source is not None:  # computed on the prepared target
        target = prepare_target(image, size=size, fix_scale=fix, matting=sketcher.matting)
        hard, soft = object_mask(sketcher, source, target.image)
        target = Target(target.image, hard.cpu(), target.original_size)
        soft = soft.cpu() if soft is not None else None
    elif mode == "cutout" and given is not None:  # a file/array: cut out at full resolution
        from .image import read_mask

        rgb, _, _ = read_image(image)
        full = read_mask(given, (int(rgb.shape[1]), int(rgb.shape[2])))
        return prepare_target(image, size=size, fix_scale=fix, matting=_FullResolution(full[None]))
    else:
        target = prepare_target(image, size=size, mask=given, fix_scale=fix, matting=sketcher.matting)
    if mode == "keep":
        return target
    if target.mask is None:
        raise InputError(
            f"background={mode!r} needs an object mask: pass mask= (a file or array), an image with "
            f"an alpha channel, or a mask source ({', '.join(MASK_SOURCES)}; --mask NAME)"
        )
    if mode == "cutout":  # alpha or a source computed at the target's size: composite here
        return Target(cut_out(target.image, target.mask), target.mask, target.original_size)
    return Target(target.image, weight_map(target.mask, soft), target.original_size)
