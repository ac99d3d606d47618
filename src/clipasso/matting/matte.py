"""The reference's background-removal stage around U²-Net (METHOD §1, steps 2 and 1a).

For an RGB image ``[1, 3, H, W]`` in [0, 1], with ``s = min(H, W)``::

    x    = resize(image, short side → min(320, s), bicubic), the long side int(320 · long / s)
    x    = (x − CLIP_mean) / CLIP_std
    p    = U2Net(x)[0]                              # the fused map, [1, 1, h, w] in (0, 1)
    p    = (p − min p) / (max p − min p)
    m    = 1 where p ≥ 0.5, else 0                  # the hard matte at the net's size
    m    = resize(m, (H, W), bilinear); m = 1 where m ≥ 0.5, else 0

and the target becomes ``image · m + (1 − m)`` (background painted white; done by
:func:`clipasso.image.prepare_target` with any :class:`~clipasso.image.Matting`). The reference
resizes a PIL image with PIL's bicubic filter and the matte with scikit-image's ``resize`` (order 1,
no anti-aliasing); here both are torch's (antialiased bicubic, bilinear with half-pixel centres),
which agree with them up to the interpolation's rounding. ``soft=True`` returns the min-max
normalised map resized to ``(H, W)`` without either threshold, for ``background="weight"``.

Example:
    >>> m = U2NetMatting(model=U2Net("u2netp").eval())
    >>> tuple(m(torch.rand(1, 3, 40, 60)).shape)
    (1, 1, 40, 60)
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..models.taps import normalize
from .loading import load_u2net
from .u2net import U2Net  # noqa: F401 (the docstring example)

__all__ = ["U2NET_MAX_SIDE", "U2NetMatting", "u2net_input", "u2net_input_size", "u2net_matte"]

#: The reference resizes the short side to at most this many pixels before U²-Net.
U2NET_MAX_SIDE = 320


def u2net_input_size(height: int, width: int, max_side: int = U2NET_MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` the reference feeds U²-Net: the short side ``min(max_side, short)``, the long side
    scaled and truncated to an int (torchvision's ``Resize(int)``).

    Example:
        >>> u2net_input_size(480, 640), u2net_input_size(200, 100)
        ((320, 426), (200, 100))
    """
    short, long = min(height, width), max(height, width)
    new_short = min(max_side, short)
    new_long = int(new_short * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def u2net_input(image: Tensor, max_side: int = U2NET_MAX_SIDE) -> Tensor:
    """Resize and CLIP-normalise ``image [1, 3, H, W]`` in [0, 1] as the reference does → ``[1, 3, h, w]``
    (no resize when the size is already right)."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise InputError(f"image must be [1, 3, H, W], got {tuple(image.shape)}")
    size = u2net_input_size(int(image.shape[2]), int(image.shape[3]), max_side)
    x = image
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return normalize(x)


def u2net_matte(prediction: Tensor, size: tuple[int, int], *, soft: bool = False) -> Tensor:
    """The reference's post-processing of U²-Net's fused map ``[1, 1, h, w]`` → ``[1, 1, H, W]``.

    Min-max normalise, threshold at 0.5 (``≥``), bilinear resize to ``size``, threshold at 0.5 again.
    ``soft``: the normalised map resized, no thresholds. A constant map gives all zeros (nothing
    stands out).
    """
    if prediction.dim() != 4 or prediction.shape[:2] != (1, 1):
        raise InputError(f"prediction must be [1, 1, h, w], got {tuple(prediction.shape)}")
    p = prediction.float()
    lo, hi = p.min(), p.max()
    p = (p - lo) / (hi - lo) if float(hi - lo) > 0 else torch.zeros_like(p)
    if soft:
        return F.interpolate(p, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    m = (p >= 0.5).float()
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return (m >= 0.5).float()


class U2NetMatting:
    """A :class:`~clipasso.image.Matting` model: U²-Net with the reference's pre/post-processing.

    The model loads lazily on the first call (onto the image's device), from ``weights`` or
    ``$CLIPASSO_U2NET_WEIGHTS`` (:func:`~clipasso.matting.load_u2net`); a missing file raises a
    :class:`~clipasso.errors.WeightsError` that says where to get it.

    Args:
        weights: Path of ``u2net.pth`` or ``u2netp.pth``.
        model: An already built :class:`U2Net` (e.g. random weights in tests); overrides ``weights``.
        soft: Return the soft map instead of the hard 0/1 matte (:func:`u2net_matte`).
        max_side: The short side's cap before the net (reference 320).

    Call: ``image [1, 3, H, W]`` in [0, 1] → matte ``[1, 1, H, W]`` in [0, 1] (on the image's device).
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        model: nn.Module | None = None,
        soft: bool = False,
        max_side: int = U2NET_MAX_SIDE,
    ) -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise InputError(f"model must be a U2Net module, got {type(model).__name__}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
            raise InputError(f"max_side must be a positive int, got {max_side!r}")
        self.weights = weights
        self.soft = bool(soft)
        self.max_side = max_side
        self._model = model

    def __repr__(self) -> str:
        return f"U2NetMatting(weights={self.weights!r}, soft={self.soft}, max_side={self.max_side})"

    def load(self, device: torch.device | str = "cpu") -> nn.Module:
        """Load (once) and return the network on ``device``."""
        if self._model is None:
            self._model = load_u2net(self.weights, device=device)
        return self._model.to(device)

    def prediction(self, image: Tensor) -> Tensor:
        """U²-Net's fused map for ``image [1, 3, H, W]``, at the net's input size ``[1, 1, h, w]``."""
        model = self.load(image.device)
        with torch.no_grad():
            return model(u2net_input(image.float(), self.max_side))[0]

    def __call__(self, image: Tensor) -> Tensor:
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[:2] != (1, 3):
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InputError(f"U2NetMatting takes one RGB image [1, 3, H, W], got {shape}")
        size = (int(image.shape[2]), int(image.shape[3]))
        return u2net_matte(self.prediction(image), size, soft=self.soft).to(image.device)
