"""Background removal: U²-Net (our implementation; weights by path) and the reference's matting stage.

Example:
    >>> import torch
    >>> from clipasso.matting import U2Net, U2NetMatting
    >>> matte = U2NetMatting(model=U2Net("u2netp").eval())(torch.rand(1, 3, 32, 32))
    >>> sorted(matte.unique().tolist()) in ([0.0], [1.0], [0.0, 1.0])
    True
"""

from .loading import U2NET_WEIGHTS_ENV, infer_variant, load_u2net, resolve_u2net_weights, u2net_help
from .matte import U2NET_MAX_SIDE, U2NetMatting, u2net_input, u2net_input_size, u2net_matte
from .u2net import RSU, RSU4F, U2NET_VARIANTS, ConvBNReLU, U2Net

__all__ = [
    "RSU",
    "RSU4F",
    "U2NET_MAX_SIDE",
    "U2NET_VARIANTS",
    "U2NET_WEIGHTS_ENV",
    "ConvBNReLU",
    "U2Net",
    "U2NetMatting",
    "infer_variant",
    "load_u2net",
    "resolve_u2net_weights",
    "u2net_help",
    "u2net_input",
    "u2net_input_size",
    "u2net_matte",
]
