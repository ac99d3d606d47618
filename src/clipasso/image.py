"""Target preparation, exactly as the reference does it (METHOD §1).

1. Read the image; an alpha channel is composited onto white and kept as an exact object mask.
2. Optional background removal through a :class:`Matting` model (none ships; plug U2Net, rembg...).
3. Optional ``fix_scale``: pad to a white square of side ``max(h, w) + 20``, image centred.
4. Resize to ``size``: a square image is resized (bicubic) and centre-cropped, a non-square one is
   resized to exactly ``size × size`` (stretched, as the reference does).

Files, PIL images and uint8 arrays are resized with PIL's bicubic filter (what torchvision does for
PIL inputs, hence the reference's pixels); float tensors/arrays with torch's antialiased bicubic.

Image and mask files are checked before they are decoded: a missing, empty or non-image file, or
one whose header claims more pixels than the limit ``max_image_pixels`` (:mod:`clipasso.limits`;
Pillow's own decompression-bomb check is replaced by it), raises an
:class:`~clipasso.errors.InputError` (:class:`~clipasso.errors.LimitError`) naming the file; so
does any failure of the decoder on a corrupt file.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import InputError
from .limits import check_limit

__all__ = ["MIN_IMAGE_SIDE", "ImageLike", "Matting", "Target", "prepare_target", "read_image", "read_mask"]

#: Anything :func:`read_image` accepts.
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]  # noqa: UP007 (a runtime alias)

#: Images smaller than this (either side, in pixels) are refused: there is nothing to sketch.
MIN_IMAGE_SIDE = 16


@runtime_checkable
class Matting(Protocol):
    """A background-removal model: RGB ``[1, 3, H, W]`` in [0, 1] → soft mask ``[1, 1, H, W]`` in [0, 1].

    Example (rembg, not a dependency)::

        class RembgMatting:
            def __call__(self, image):
                from rembg import remove
                pil = to_pil_image(image[0])
                alpha = remove(pil, only_mask=True)
                return to_tensor(alpha)[None]
    """

    def __call__(self, image: Tensor) -> Tensor: ...


@dataclass
class Target:
    """A prepared target.

    Attributes:
        image: RGB in [0, 1], ``[1, 3, S, S]`` (float32, CPU).
        mask: Object mask in {0, 1}, ``[1, 1, S, S]``, or None when unknown.
        original_size: ``(H, W)`` of the input before any padding or resizing.
    """

    image: Tensor
    mask: Tensor | None
    original_size: tuple[int, int]


def _describe(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


# Pillow's decompression-bomb check reads a module global; it is switched off only while a header
# is read (under this lock), because clipasso's own check, with its own setting, follows at once.
_PIL_LOCK = threading.Lock()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _check_pixels(img: Image.Image, what: str) -> None:
    w, h = img.size
    check_limit(w * h, "max_image_pixels", f"the pixel count of {what} ({w}x{h} px)")


def _open_file(path: Path, kind: str = "image") -> Image.Image:
    """Open, check and decode an image file (any failure is an :class:`InputError` naming it)."""
    if not path.exists():
        raise InputError(f"{kind} file not found: {path}")
    if path.is_dir():
        article = "an" if kind[0] in "aeiou" else "a"
        raise InputError(f"expected {article} {kind} file, got a directory: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {kind} {path}: {_first_line(exc)}") from None
    if size == 0:
        raise InputError(f"{kind} file is empty (0 bytes): {path}")
    try:
        with _PIL_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                img = Image.open(path)  # the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {path}: not an image format Pillow knows") from None
    except Exception as exc:  # a corrupt header: any error of the decoder is the file's problem
        raise InputError(f"cannot read image {path}: {_first_line(exc)}") from None
    with img:
        _check_pixels(img, f"{kind} {path}")
        try:
            img.load()
            return img.copy()
        except Exception as exc:  # truncated or corrupt data (Pillow raises many types)
            raise InputError(f"cannot read image {path}: {_first_line(exc)}") from None


def _array_to_tensor(arr: np.ndarray, what: str) -> Tensor:
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
    elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        raise InputError(f"{what}: unsupported array dtype {arr.dtype} (use uint8 or float in [0, 1])")
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 3 and t.shape[-1] in (1, 3, 4):  # numpy images are [H, W, C]
        t = t.permute(2, 0, 1)
    return t


def read_image(source: ImageLike) -> tuple[Tensor, Tensor | None, Image.Image | None]:
    """Read any supported image into RGB in [0, 1] and an optional alpha channel.

    Args:
        source: A path, a PIL image, a numpy array (``[H, W]``, ``[H, W, C]`` uint8 or float in
            [0, 1]) or a tensor (``[C, H, W]`` or ``[1, C, H, W]``, float in [0, 1]), C in {1, 3, 4}.

    Returns:
        ``(rgb [3, H, W], alpha [1, H, W] or None, pil)``; ``rgb`` is composited onto white where
        there is alpha; ``pil`` is the white-composited PIL image when the input was PIL-like
        (files, PIL, uint8 arrays), for reference-exact PIL resizing, else None.

    Raises:
        InputError: Unreadable, empty, too small, wrong shape or non-finite input.
    """
    pil: Image.Image | None = None
    what = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        source = _open_file(Path(source))
    if isinstance(source, np.ndarray) and source.dtype == np.uint8 and source.ndim in (2, 3):
        shape = source.shape
        try:
            source = Image.fromarray(source)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what}: cannot interpret array of shape {shape} as an image") from exc
    if isinstance(source, Image.Image):
        _check_pixels(source, what)
        try:
            img = source
            if img.mode == "P":
                img = img.convert("RGBA")
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGBa")
            rgba = img.convert("RGBA") if has_alpha else img.convert("RGB")
            arr = np.asarray(rgba, dtype=np.float32) / 255.0
        except Exception as exc:  # an unloaded PIL image decodes here; odd modes may not convert
            raise InputError(
                f"{what}: cannot convert the {source.mode} image to RGB: {_first_line(exc)}"
            ) from None
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        if has_alpha:
            alpha = t[3:4]
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            pil = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            alpha = None
            pil = rgba
    elif isinstance(source, np.ndarray):
        t = _array_to_tensor(source, what)
        alpha = None
    elif isinstance(source, Tensor):
        t = source.detach().to("cpu", torch.float32)
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise InputError(f"image tensor must hold one image, got batch of {t.shape[0]}")
            t = t[0]
        if t.ndim == 2:
            t = t[None]
        alpha = None
    else:
        raise InputError(
            f"unsupported image type {type(source).__name__}; pass a path, PIL image, array or tensor"
        )
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise InputError(f"{what}: image must have 1, 3 or 4 channels ([C, H, W]), got shape {list(t.shape)}")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise InputError(f"{what}: image is empty (size {t.shape[-2]}x{t.shape[-1]})")
    if min(t.shape[-2:]) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{what}: image is too small to sketch ({t.shape[-2]}x{t.shape[-1]} px; "
            f"at least {MIN_IMAGE_SIDE} px per side needed)"
        )
    if not torch.isfinite(t).all():
        raise InputError(f"{what}: image contains NaN or infinite values")
    if pil is None:
        if t.min() < 0 or t.max() > 1:
            raise InputError(
                f"{what}: float image values must lie in [0, 1], got [{t.min():.3g}, {t.max():.3g}]"
            )
        if t.shape[0] == 4:
            alpha = t[3:4]
            t = t[:3] * alpha + (1 - alpha)
        elif t.shape[0] == 1:
            t = t.expand(3, -1, -1)
    else:
        t = t[:3]
        if alpha is not None:
            t = t * alpha + (1 - alpha)
    return t.contiguous(), alpha, pil


def read_mask(source: ImageLike, size: tuple[int, int]) -> Tensor:
    """Read an object mask and check it matches the image size ``(H, W)``.

    Returns:
        ``[1, H, W]`` float in {0, 1} (values > 0.5 are object).
    """
    what = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        source = _open_file(Path(source), "mask")
    if isinstance(source, Image.Image):
        _check_pixels(source, f"mask {what}")
        try:
            grey = np.asarray(source.convert("L"), dtype=np.float32)
        except Exception as exc:
            raise InputError(
                f"mask {what}: cannot convert the {source.mode} image: {_first_line(exc)}"
            ) from None
        m = torch.from_numpy(grey / 255.0)[None]
    elif isinstance(source, np.ndarray):
        m = _array_to_tensor(source, what)
    elif isinstance(source, Tensor):
        m = source.detach().to("cpu", torch.float32)
    else:
        raise InputError(f"unsupported mask type {type(source).__name__}")
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim == 3:
        m = m.mean(0)
    if m.ndim != 2:
        raise InputError(f"mask {what} must be a single-channel image [H, W], got shape {list(m.shape)}")
    if tuple(m.shape) != tuple(size):
        raise InputError(
            f"mask {what} has size {m.shape[0]}x{m.shape[1]} but the image is {size[0]}x{size[1]}"
        )
    if not torch.isfinite(m).all():
        raise InputError(f"mask {what} contains NaN or infinite values")
    return (m > 0.5).float()[None]


def _pad_square(t: Tensor, fill: float) -> Tensor:
    _, h, w = t.shape
    side = max(h, w) + 20
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(t, (left, side - w - left, top, side - h - top), value=fill)


# The reference resizes a square image's short side to `size` and centre-crops `size` (for a square
# that is a plain resize), and stretches a non-square image to size x size: both are one resize.


def _resize_tensor(t: Tensor, size: int, mode: str) -> Tensor:
    kwargs: dict[str, Any] = {"antialias": True} if mode == "bicubic" else {}
    return F.interpolate(t[None], size=(size, size), mode=mode, **kwargs)[0]


def _resize_pil(img: Image.Image, size: int) -> Tensor:
    img = img.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def prepare_target(
    source: ImageLike,
    *,
    size: int = 224,
    mask: ImageLike | None = None,
    fix_scale: bool = False,
    matting: Matting | None = None,
) -> Target:
    """Read and preprocess a target image as the reference does (module docstring).

    Args:
        source: The image (path, PIL, array or tensor).
        size: Output side in pixels (224 for CLIP).
        mask: Optional object mask of the same size as the image (overrides the alpha channel).
        fix_scale: Pad to a centred white square first (the reference's ``fix_scale``).
        matting: Optional background-removal model; its mask paints the background white.

    Returns:
        A :class:`Target` with ``image [1, 3, size, size]`` and ``mask [1, 1, size, size]`` or None.

    Example:
        >>> t = prepare_target(torch.ones(3, 300, 200))
        >>> t.image.shape, t.original_size
        (torch.Size([1, 3, 224, 224]), (300, 200))
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_IMAGE_SIDE:
        raise InputError(f"size must be an integer >= {MIN_IMAGE_SIDE}, got {size!r}")
    check_limit(size, "max_canvas_side", "the target size")
    rgb, alpha, pil = read_image(source)
    h, w = rgb.shape[-2:]
    obj = (
        read_mask(mask, (h, w))
        if mask is not None
        else ((alpha > 0.5).float() if alpha is not None else None)
    )
    if matting is not None:
        soft = matting(rgb[None])
        if soft.shape[-2:] != (h, w):
            raise InputError(
                f"matting returned a mask of size {list(soft.shape[-2:])} for an image of {h}x{w}"
            )
        soft = soft.reshape(1, h, w).clamp(0, 1).to(rgb)
        rgb = rgb * soft + (1 - soft)
        pil = None
        obj = (soft > 0.5).float() if obj is None else obj * (soft > 0.5).float()
    if fix_scale:
        rgb = _pad_square(rgb, 1.0)
        obj = _pad_square(obj, 0.0) if obj is not None else None
        pil = None
    if pil is not None:
        image = _resize_pil(pil, size)
    else:
        image = _resize_tensor(rgb, size, "bicubic").clamp(0, 1)
    resized_mask = (_resize_tensor(obj, size, "nearest") > 0.5).float()[None] if obj is not None else None
    return Target(image=image[None].contiguous(), mask=resized_mask, original_size=(int(h), int(w)))
