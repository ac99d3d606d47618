"""The U²-Net salient-object network (Qin et al., "U²-Net: Going deeper with nested U-structure for
salient object detection", Pattern Recognition 2020), written from the paper's description.

Building blocks:

* ``ConvBNReLU`` (the paper's REBNCONV): 3×3 convolution with dilation ``d`` and padding ``d``,
  batch norm, ReLU; the spatial size is kept.
* ``RSU`` (ReSidual U-block, RSU-L): an input convolution ``x_in = ConvBNReLU(C_in → C_out)``, then
  a small U-Net on it with ``M`` channels: an encoder of ``L - 1`` convolutions with a 2×2 max-pool
  (stride 2, ceil mode) between them, a dilated (d = 2) convolution at the bottom, and a decoder
  that upsamples bilinearly to each skip's size and convolves the concatenation ``[up, skip]``
  (``2M → M``, the last ``2M → C_out``). The block returns ``decoder(x_in) + x_in``.
  RSU-7, RSU-6, RSU-5, RSU-4 have ``L`` = 7, 6, 5, 4.
* ``RSU-4F``: the same shape without pooling: dilations 1, 2, 4, 8 down and 4, 2, 1 up.

The network: six encoder stages (RSU-7, RSU-6, RSU-5, RSU-4, RSU-4F, RSU-4F) with a max-pool between
them, five decoder stages (RSU-4F, RSU-4, RSU-5, RSU-6, RSU-7), each fed the concatenation of the
upsampled deeper output and the encoder output of its level. Six side outputs (a 3×3 convolution
to one channel on the outputs of decoder stages 1-5 and of encoder stage 6), upsampled to the
input size; their fusion is a 1×1 convolution over the six. Every output goes through a sigmoid:
``forward`` returns ``(fused, side1, ..., side6)``, each ``[B, 1, H, W]`` in (0, 1).

Channel widths (``C_in, M, C_out`` per stage) of the full model (``u2net``, 44 M parameters) and
the small one (``u2netp``, 1.1 M):

=========  ===============  ==============
stage      u2net            u2netp
=========  ===============  ==============
stage1     RSU-7 3,32,64    RSU-7 3,16,64
stage2     RSU-6 64,32,128  RSU-6 64,16,64
stage3     RSU-5 128,64,256 RSU-5 64,16,64
stage4     RSU-4 256,128,512 RSU-4 64,16,64
stage5     RSU-4F 512,256,512 RSU-4F 64,16,64
stage6     RSU-4F 512,256,512 RSU-4F 64,16,64
stage5d    RSU-4F 1024,256,512 RSU-4F 128,16,64
stage4d    RSU-4 1024,128,256 RSU-4 128,16,64
stage3d    RSU-5 512,64,128 RSU-5 128,16,64
stage2d    RSU-6 256,32,64  RSU-6 128,16,64
stage1d    RSU-7 128,16,64  RSU-7 128,16,64
=========  ===============  ==============

The module and parameter names (``stage1.rebnconvin.conv_s1.weight``, ``side3.bias``,
``outconv.weight``, ...) follow the layout of the widely distributed ``u2net.pth`` / ``u2netp.pth``
files, so their state dicts load as they are (:func:`clipasso.matting.load_u2net`).

Example:
    >>> net = U2Net("u2netp").eval()
    >>> outs = net(torch.rand(1, 3, 64, 48))
    >>> len(outs), tuple(outs[0].shape)
    (7, (1, 1, 64, 48))
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError

__all__ = ["RSU", "RSU4F", "U2NET_VARIANTS", "ConvBNReLU", "U2Net"]

Variant = Literal["u2net", "u2netp"]

# (kind, in, mid, out) per stage, in the order of the names below
_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6")
_DECODER = ("stage5d", "stage4d", "stage3d", "stage2d", "stage1d")
_KINDS = {"stage1": 7, "stage2": 6, "stage3": 5, "stage4": 4, "stage5": 0, "stage6": 0}
_KINDS |= {"stage5d": 0, "stage4d": 4, "stage3d": 5, "stage2d": 6, "stage1d": 7}  # 0: RSU-4F

#: Channel widths ``(in, mid, out)`` of every stage, per variant.
U2NET_VARIANTS: dict[str, dict[str, tuple[int, int, int]]] = {
    "u2net": {
        "stage1": (3, 32, 64),
        "stage2": (64, 32, 128),
        "stage3": (128, 64, 256),
        "stage4": (256, 128, 512),
        "stage5": (512, 256, 512),
        "stage6": (512, 256, 512),
        "stage5d": (1024, 256, 512),
        "stage4d": (1024, 128, 256),
        "stage3d": (512, 64, 128),
        "stage2d": (256, 32, 64),
        "stage1d": (128, 16, 64),
    },
    "u2netp": {
        "stage1": (3, 16, 64),
        **{s: (64, 16, 64) for s in ("stage2", "stage3", "stage4", "stage5", "stage6")},
        **{s: (128, 16, 64) for s in _DECODER},
    },
}


def _upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to ``like``'s spatial size (align_corners=False)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class ConvBNReLU(nn.Module):
    """3×3 convolution (dilation ``d``, padding ``d``) → BatchNorm → ReLU: ``[B, C_in, H, W] →
    [B, C_out, H, W]`` (the paper's REBNCONV; parameter names ``conv_s1``, ``bn_s1``)."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """ReSidual U-block RSU-L (``L`` = ``height`` in 4..7): ``[B, C_in, H, W] → [B, C_out, H, W]``.

    Submodules: ``rebnconvin`` (C_in → C_out), ``rebnconv1`` (C_out → M), ``rebnconv2`` ..
    ``rebnconv{L-1}`` (M → M, each after a max-pool), ``rebnconv{L}`` (M → M, dilation 2, no pool),
    then ``rebnconv{L-1}d`` .. ``rebnconv2d`` (2M → M) and ``rebnconv1d`` (2M → C_out).
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        if not 2 <= height <= 7:
            raise InputError(f"RSU height must be in 2..7, got {height}")
        self.height = height
        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        self.rebnconv1 = ConvBNReLU(out_ch, mid_ch)
        for i in range(2, height):
            self.add_module(f"rebnconv{i}", ConvBNReLU(mid_ch, mid_ch))
        self.add_module(f"rebnconv{height}", ConvBNReLU(mid_ch, mid_ch, dilation=2))
        for i in range(height - 1, 1, -1):
            self.add_module(f"rebnconv{i}d", ConvBNReLU(2 * mid_ch, mid_ch))
        self.rebnconv1d = ConvBNReLU(2 * mid_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        x_in = self.rebnconvin(x)
        skips = [self.rebnconv1(x_in)]  # levels 1 .. L-1, full size first
        for i in range(2, self.height):
            skips.append(getattr(self, f"rebnconv{i}")(_pool(skips[-1])))
        h = getattr(self, f"rebnconv{self.height}")(skips[-1])  # the bottom, same size as level L-1
        for i in range(self.height - 1, 0, -1):
            skip = skips[i - 1]
            h = getattr(self, f"rebnconv{i}d")(torch.cat([_upsample_to(h, skip), skip], dim=1))
        return h + x_in


class RSU4F(nn.Module):
    """RSU-4F, the block without pooling (dilations 1, 2, 4, 8 then 4, 2, 1):
    ``[B, C_in, H, W] → [B, C_out, H, W]``."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        self.rebnconv1 = ConvBNReLU(out_ch, mid_ch, 1)
        self.rebnconv2 = ConvBNReLU(mid_ch, mid_ch, 2)
        self.rebnconv3 = ConvBNReLU(mid_ch, mid_ch, 4)
        self.rebnconv4 = ConvBNReLU(mid_ch, mid_ch, 8)
        self.rebnconv3d = ConvBNReLU(2 * mid_ch, mid_ch, 4)
        self.rebnconv2d = ConvBNReLU(2 * mid_ch, mid_ch, 2)
        self.rebnconv1d = ConvBNReLU(2 * mid_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        x_in = self.rebnconvin(x)
        h1 = self.rebnconv1(x_in)
        h2 = self.rebnconv2(h1)
        h3 = self.rebnconv3(h2)
        h = self.rebnconv4(h3)
        h = self.rebnconv3d(torch.cat([h, h3], dim=1))
        h = self.rebnconv2d(torch.cat([h, h2], dim=1))
        h = self.rebnconv1d(torch.cat([h, h1], dim=1))
        return h + x_in


def _block(height: int, widths: tuple[int, int, int]) -> nn.Module:
    return RSU4F(*widths) if height == 0 else RSU(height, *widths)


class U2Net(nn.Module):
    """U²-Net, full (``"u2net"``) or small (``"u2netp"``); see the module docstring.

    Args:
        variant: ``"u2net"`` or ``"u2netp"``.
        out_ch: Output channels of every side output (1 for saliency).

    Input ``[B, 3, H, W]`` (normalised as the weights were trained; any size, the stages pool with
    ceil mode). Output: a tuple of 7 tensors ``[B, out_ch, H, W]`` in (0, 1): the fused map first,
    then side outputs 1..6.
    """

    def __init__(self, variant: Variant = "u2net", *, out_ch: int = 1) -> None:
        super().__init__()
        if variant not in U2NET_VARIANTS:
            raise InputError(f"U2Net variant must be one of {sorted(U2NET_VARIANTS)}, got {variant!r}")
        self.variant = variant
        widths = U2NET_VARIANTS[variant]
        for name in (*_STAGES, *_DECODER):
            self.add_module(name, _block(_KINDS[name], widths[name]))
        side_in = [widths["stage1d"][2], widths["stage2d"][2], widths["stage3d"][2]]
        side_in += [widths["stage4d"][2], widths["stage5d"][2], widths["stage6"][2]]
        for i, c in enumerate(side_in, start=1):
            self.add_module(f"side{i}", nn.Conv2d(c, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"U2Net input must be [B, 3, H, W], got {tuple(x.shape)}")
        enc = []
        h = x
        for i, name in enumerate(_STAGES):
            if i > 0:
                h = _pool(h)
            h = getattr(self, name)(h)
            enc.append(h)
        dec = [enc[-1]]  # stage6's output feeds side6 and the first decoder stage
        for name, skip in zip(_DECODER, reversed(enc[:-1])):
            h = getattr(self, name)(torch.cat([_upsample_to(h, skip), skip], dim=1))
            dec.append(h)
        # dec = [stage6, stage5d, stage4d, stage3d, stage2d, stage1d]; side i reads level i
        levels = list(reversed(dec))
        sides = [_upsample_to(getattr(self, f"side{i}")(lv), x) for i, lv in enumerate(levels, start=1)]
        fused = self.outconv(torch.cat(sides, dim=1))
        return tuple(torch.sigmoid(t) for t in (fused, *sides))
