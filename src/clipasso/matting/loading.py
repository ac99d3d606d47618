"""Loading U²-Net weights: the widely distributed ``u2net.pth`` / ``u2netp.pth`` state dicts, by path.

clipasso never downloads them. The file is found from, in order: the ``weights`` argument
(``SketchConfig.u2net_weights``, the command line's ``--u2net-weights PATH``), then the environment
variable ``CLIPASSO_U2NET_WEIGHTS``. It is read with ``torch.load(..., weights_only=True)`` (tensors
only, no code runs), its keys and shapes are checked against :class:`~clipasso.matting.U2Net`, and
the variant (full or small) is read from the shapes.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "u2netp.pth")
    >>> torch.save(U2Net("u2netp").state_dict(), path)
    >>> load_u2net(path).variant
    'u2netp'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..errors import WeightsError
from .u2net import U2NET_VARIANTS, U2Net

__all__ = ["U2NET_WEIGHTS_ENV", "infer_variant", "load_u2net", "resolve_u2net_weights", "u2net_help"]

#: The environment variable naming a U²-Net weights file.
U2NET_WEIGHTS_ENV = "CLIPASSO_U2NET_WEIGHTS"


def u2net_help() -> str:
    """Where the weights come from and how to pass them (part of every error message)."""
    return (
        "clipasso does not download U2Net weights. Get u2net.pth (the full model, 176 MB) or "
        "u2netp.pth (the small one, 4.7 MB) from the U-2-Net authors (github.com/xuebinqin/U-2-Net, "
        "the links in its README), then pass the file: --u2net-weights PATH on the command line, "
        f"SketchConfig(u2net_weights=PATH) / U2NetMatting(weights=PATH), or set {U2NET_WEIGHTS_ENV}=PATH. "
        "No weights at all? --mask weights-free (a classical saliency) needs none."
    )


def resolve_u2net_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """The weights file: ``weights``, else ``$CLIPASSO_U2NET_WEIGHTS``.

    Raises:
        WeightsError: Neither given, or the path is not a file (the message says how to get one).
    """
    source = "the given path"
    if weights is None:
        env = os.environ.get(U2NET_WEIGHTS_ENV)
        if not env:
            raise WeightsError(f"no U2Net weights file given. {u2net_help()}")
        weights, source = env, U2NET_WEIGHTS_ENV
    path = Path(os.fspath(weights)).expanduser()
    if path.is_dir():
        raise WeightsError(f"U2Net weights path {path} ({source}) is a directory, not a file. {u2net_help()}")
    if not path.is_file():
        raise WeightsError(f"U2Net weights file not found: {path} ({source}). {u2net_help()}")
    return path


def infer_variant(state: Mapping[str, Tensor]) -> str:
    """``"u2net"`` or ``"u2netp"`` from the width of ``stage1``'s first inner convolution.

    Raises:
        WeightsError: The state dict has no such key or an unknown width.
    """
    key = "stage1.rebnconv1.conv_s1.weight"
    w = state.get(key)
    if not isinstance(w, Tensor) or w.dim() != 4:
        raise WeightsError(f"not a U2Net state dict: no {key!r} tensor (keys start with {sorted(state)[:3]})")
    for name, widths in U2NET_VARIANTS.items():
        if int(w.shape[0]) == widths["stage1"][1]:
            return name
    raise WeightsError(f"not a known U2Net variant: {key} has {int(w.shape[0])} output channels")


def _strip_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a ``module.`` prefix (weights saved from ``nn.DataParallel``)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_u2net(
    weights: str | os.PathLike[str] | None = None,
    *,
    variant: str | None = None,
    device: torch.device | str = "cpu",
) -> U2Net:
    """Build a :class:`U2Net` and load a ``u2net.pth`` / ``u2netp.pth`` state dict into it.

    Args:
        weights: The file (default: ``$CLIPASSO_U2NET_WEIGHTS``).
        variant: ``"u2net"`` or ``"u2netp"``; default: read from the state dict's shapes.
        device: Where the model goes.

    Returns:
        The model in eval mode, frozen (no parameter requires a gradient).

    Raises:
        WeightsError: Missing file (with where to get it), unreadable file, not a state dict,
            missing/unexpected keys or mismatched shapes (the first few are named).
    """
    path = resolve_u2net_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle with code, a non-torch file
        raise WeightsError(f"cannot read U2Net weights {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"U2Net weights {path} are not a state dict of tensors ({type(state).__name__})")
    state = _strip_prefix(state)
    found = infer_variant(state)
    if variant is not None and variant != found:
        raise WeightsError(
            f"U2Net weights {path} are a {found} state dict, but variant={variant!r} was asked"
        )
    model = U2Net(found)  # type: ignore[arg-type]
    expected = model.state_dict()
    # BatchNorm's num_batches_tracked counter does not affect eval-mode outputs: old files lack it
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", wrong),
        ):
            if items:
                shown = ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(f"U2Net weights {path} do not fit the {found} architecture; " + "; ".join(parts))
    merged = {k: state.get(k, v) for k, v in expected.items()}
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in merged.items()})
    model.eval().requires_grad_(False)
    return model.to(device)
