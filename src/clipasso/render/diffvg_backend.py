"""Adapter for diffvg (``pydiffvg``), the rasterizer the reference implementation uses.

Optional: diffvg must be compiled and installed separately. Only the real diffvg is accepted —
its Python package ``pydiffvg`` wraps a compiled module named ``diffvg``; a pure-Python package
that merely installs itself as ``pydiffvg`` is not diffvg and is rejected.

The scene is built exactly as the reference does: one open ``pydiffvg.Path`` per stroke
(``num_control_points`` = 2 per cubic segment, ``stroke_width`` = the half-width ``r``), one
``ShapeGroup`` per stroke with ``fill_color=None`` and the RGBA ``stroke_color``, drawn in list
order, 2×2 samples per pixel, seed 0, transparent background. diffvg keeps its device in global
state; the adapter sets it for each call and restores the previous value afterwards.

Example:
    >>> from clipasso.render import available_backends
    >>> "torch" in available_backends()
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import BackendUnavailableError
from .base import Rasterizer, register_rasterizer

__all__ = ["DiffvgRasterizer", "import_diffvg"]


def import_diffvg() -> ModuleType:
    """Import the real ``pydiffvg`` (the one backed by the compiled ``diffvg`` module).

    Raises:
        BackendUnavailableError: If diffvg is not installed, or ``pydiffvg`` is an impostor.
    """
    if importlib.util.find_spec("diffvg") is None:
        raise BackendUnavailableError(
            "the diffvg backend needs the compiled diffvg package (module 'diffvg' not found); "
            "build it from https://github.com/BachiLi/diffvg or use backend='torch'"
        )
    try:
        importlib.import_module("diffvg")
        module = importlib.import_module("pydiffvg")
    except Exception as exc:  # a broken build raises all sorts of errors
        raise BackendUnavailableError(f"diffvg is installed but failed to import: {exc}") from exc
    for attr in ("Path", "ShapeGroup", "RenderFunction"):
        if not hasattr(module, attr):
            raise BackendUnavailableError(f"the installed 'pydiffvg' is not diffvg (it has no {attr!r})")
    return module


@register_rasterizer("diffvg")
class DiffvgRasterizer(Rasterizer):
    """diffvg with 2×2 jittered samples per pixel (seed 0), as the reference uses it.

    Args:
        samples: Samples per pixel along each axis (the reference uses 2).
        seed: Sample-jitter seed (the reference passes 0 on every call).

    Raises:
        BackendUnavailableError: On construction, if diffvg is not installed.
    """

    name: ClassVar[str] = "diffvg"
    differentiable: ClassVar[bool] = True
    exact: ClassVar[bool] = False

    def __init__(self, *, samples: int = 2, seed: int = 0) -> None:
        self._diffvg = import_diffvg()
        self.samples = int(samples)
        self.seed = int(seed)

    @classmethod
    def is_available(cls) -> bool:
        """True when the real diffvg imports."""
        try:
            import_diffvg()
        except BackendUnavailableError:
            return False
        return True

    def render(self, points: Tensor, widths: Tensor, colors: Tensor, size: tuple[int, int]) -> Tensor:
        """See :meth:`Rasterizer.render`."""
        dv = self._diffvg
        h, w = size
        b, n, p, _ = points.shape
        k = (p - 1) // 3
        get_gpu = getattr(dv, "get_use_gpu", None)
        get_dev = getattr(dv, "get_device", None)
        old_gpu = get_gpu() if get_gpu is not None else None
        old_dev = get_dev() if get_dev is not None else None
        out_dtype = points.dtype
        pts32, w32, c32 = points.float(), widths.float(), colors.float()
        try:
            dv.set_use_gpu(points.device.type == "cuda")
            if hasattr(dv, "set_device"):
                dv.set_device(points.device)
            images = []
            ncp = torch.full((k,), 2, dtype=torch.int32)
            for bi in range(b):
                shapes, groups = [], []
                for i in range(n):
                    shapes.append(
                        dv.Path(
                            num_control_points=ncp,
                            points=pts32[bi, i],
                            stroke_width=w32[bi, i],
                            is_closed=False,
                        )
                    )
                    groups.append(
                        dv.ShapeGroup(
                            shape_ids=torch.tensor([i], dtype=torch.int32),
                            fill_color=None,
                            stroke_color=c32[bi, i],
                        )
                    )
                scene = dv.RenderFunction.serialize_scene(w, h, shapes, groups)
                img = dv.RenderFunction.apply(w, h, self.samples, self.samples, self.seed, None, *scene)
                images.append(img.to(points.device).permute(2, 0, 1))
            if not images:
                return points.new_zeros(0, 4, h, w)
            return torch.stack(images).to(out_dtype)
        finally:
            if old_gpu is not None:
                dv.set_use_gpu(old_gpu)
            if old_dev is not None and hasattr(dv, "set_device"):
                dv.set_device(old_dev)
