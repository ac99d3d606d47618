"""Adapter for diffvg (``pydiffvg``), the rasterizer the reference implementation uses.

Optional: diffvg must be compiled and installed separately (``shared/diffvg/build.sh`` in CI).
Only the real diffvg is accepted — its Python package ``pydiffvg`` wraps a compiled module named
``diffvg``; a pure-Python package that merely installs itself as ``pydiffvg`` is rejected.

The scene is built as the reference builds it: one open ``pydiffvg.Path`` per stroke
(``num_control_points`` = 2 per cubic segment, ``stroke_width`` = the half-width ``r``), one
``ShapeGroup`` per stroke with ``fill_color=None`` and the RGBA ``stroke_color``, drawn in list
order, ``num_samples × num_samples`` jittered samples per pixel (2 × 2, seed 0 by default),
transparent background. What the adapter adds, all checked against the real build
(``tests/test_render_diffvg.py``, ``docs/rasterizer.md``):

* **Straight alpha.** diffvg averages each sample's *straight* colour over the pixel, so a pixel
  half covered by an opaque red stroke comes out ``(0.5, 0, 0, 0.5)`` instead of
  ``(1, 0, 0, 0.5)``. That is exact for black strokes (the reference's) and, after dividing by
  the alpha, for opaque ones; otherwise (semi-transparent colours, or colours that need a
  gradient) the premultiplied colour is rendered a second time over an opaque black background
  (same samples) and divided by the alpha of the first render.
* **Device and global state.** diffvg keeps its device in module globals; they are set for each
  call and restored afterwards. Tensors on CUDA render on the GPU when diffvg was compiled with
  CUDA; otherwise (and for any other device) the render runs on the CPU and the image is moved to
  the tensors' device.
* **Inputs diffvg would crash on**: non-contiguous tensors (an assertion in ``pydiffvg``) and
  empty scenes (a segmentation fault in ``diffvg``) are handled here.

Example:
    >>> from clipasso.render import list_rasterizers
    >>> "torch" in list_rasterizers()
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import BackendUnavailableError, InputError
from .base import Rasterizer, register_rasterizer

__all__ = ["DiffvgRasterizer", "import_diffvg"]

_NO_GPU = "not compiled with GPU"  # diffvg's RuntimeError on a CPU-only build asked for the GPU


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
    for attr in ("Path", "ShapeGroup", "RenderFunction", "set_device", "get_device", "get_use_gpu"):
        if not hasattr(module, attr):
            raise BackendUnavailableError(f"the installed 'pydiffvg' is not diffvg (it has no {attr!r})")
    return module


@register_rasterizer("diffvg")
class DiffvgRasterizer(Rasterizer):
    """diffvg with ``num_samples × num_samples`` jittered samples per pixel, as the reference uses it.

    Args:
        num_samples: Samples per pixel along each axis (the reference uses 2). The image is the
            mean of the samples, so its error against the exact box-filtered coverage shrinks
            like ``1 / num_samples`` (see ``docs/rasterizer.md`` for measured figures).
        seed: Seed of the sub-pixel jitter (the reference passes 0 on every call). The same seed
            gives the same samples, so renders are deterministic and the items of a batch are
            rendered exactly as they would be alone.

    Raises:
        BackendUnavailableError: On construction, if diffvg is not installed.
        InputError: If ``num_samples`` is not a positive integer or ``seed`` is negative.
    """

    name: ClassVar[str] = "diffvg"
    differentiable: ClassVar[bool] = True
    exact: ClassVar[bool] = False
    #: Set to False the first time a CPU-only diffvg refuses a CUDA render (then the CPU is used).
    _gpu_ok: ClassVar[bool] = True

    def __init__(self, *, num_samples: int = 2, seed: int = 0) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self._diffvg = import_diffvg()
        self.num_samples = num_samples
        self.seed = seed

    @classmethod
    def is_available(cls) -> bool:
        """True when the real diffvg imports."""
        try:
            import_diffvg()
        except BackendUnavailableError:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_samples={self.num_samples}, seed={self.seed})"

    @contextmanager
    def _diffvg_device(self, device: torch.device) -> Iterator[None]:
        """Point diffvg's global device at ``device`` for the block, then restore it exactly.

        ``set_device`` also sets ``use_gpu`` (from the device type) and ``set_use_gpu(False)``
        resets the device to the CPU, so the old device goes back first and ``use_gpu`` after it.
        """
        dv = self._diffvg
        old_device, old_gpu = dv.get_device(), dv.get_use_gpu()
        try:
            dv.set_device(device)
            yield
        finally:
            dv.set_device(old_device)
            if dv.get_use_gpu() != old_gpu:
                dv.set_use_gpu(old_gpu)

    def render(self, points: Tensor, widths: Tensor, colors: Tensor, size: tuple[int, int]) -> Tensor:
        """See :meth:`Rasterizer.render`.

        diffvg computes in float32 on the CPU or a CUDA device; other dtypes are converted and the
        image is returned in the dtype (and on the device) of ``points``.
        """
        h, w = size
        b, n = points.shape[:2]
        if b == 0 or n == 0:  # diffvg segfaults on a scene without shapes
            return points.new_zeros(b, 4, h, w)
        device = points.device
        if device.type == "cuda" and type(self)._gpu_ok:
            try:
                return self._render_on(device, points, widths, colors, size)
            except RuntimeError as exc:
                if _NO_GPU not in str(exc):
                    raise
                type(self)._gpu_ok = False  # a CPU-only build: render on the CPU from now on
        return self._render_on(torch.device("cpu"), points, widths, colors, size).to(device)

    def _render_on(
        self, device: torch.device, points: Tensor, widths: Tensor, colors: Tensor, size: tuple[int, int]
    ) -> Tensor:
        """Render every item of the batch with diffvg on ``device``; ``[B, 4, H, W]``."""
        out_dtype = points.dtype
        pts = points.to(device=device, dtype=torch.float32)
        wid = widths.to(device=device, dtype=torch.float32)
        col = colors.to(device=device, dtype=torch.float32)
        rgb = col.detach()[..., :3]
        # diffvg's raw colour is the mean of per-sample straight colours: exact (after dividing by the
        # alpha where it is not zero already) for black or opaque strokes; else a second, premultiplied,
        # render gives the exact pixel colour (and its gradient)
        black = not bool(rgb.any())
        opaque = bool((col.detach()[..., 3] == 1).all())
        twice = colors.requires_grad or not (black or opaque)
        with self._diffvg_device(device):
            images = [self._render_one(pts[i], wid[i], col[i], size, twice, black) for i in range(len(pts))]
        return torch.stack(images).to(out_dtype)

    def _render_one(
        self, points: Tensor, widths: Tensor, colors: Tensor, size: tuple[int, int], twice: bool, black: bool
    ) -> Tensor:
        """One sketch: ``points [N, P, 2]``, ``widths [N]``, ``colors [N, 4]`` → ``[4, H, W]``."""
        dv = self._diffvg
        h, w = size
        n, p, _ = points.shape
        ncp = torch.full(((p - 1) // 3,), 2, dtype=torch.int32)
        shapes, groups = [], []
        for i in range(n):
            shapes.append(
                dv.Path(
                    num_control_points=ncp,
                    points=points[i].contiguous(),
                    stroke_width=widths[i].contiguous(),
                    is_closed=False,
                )
            )
            groups.append(
                dv.ShapeGroup(
                    shape_ids=torch.tensor([i], dtype=torch.int32),
                    fill_color=None,
                    stroke_color=colors[i].contiguous(),
                )
            )
        scene: list[Any] = dv.RenderFunction.serialize_scene(w, h, shapes, groups)
        s = self.num_samples
        img = dv.RenderFunction.apply(w, h, s, s, self.seed, None, *scene)  # [H, W, 4]
        alpha = img[..., 3:]
        if black and not twice:
            rgb = img[..., :3]  # zero where inked, and zero elsewhere
        else:
            if twice:  # premultiplied colour: over opaque black every sample's alpha is 1
                over_black = torch.zeros(h, w, 4, device=img.device)
                over_black[..., 3] = 1.0
                premultiplied = dv.RenderFunction.apply(w, h, s, s, self.seed, over_black, *scene)[..., :3]
            else:  # opaque strokes: every sample's alpha is 0 or 1, the mean is premultiplied already
                premultiplied = img[..., :3]
            inked = alpha > 0
            rgb = torch.where(inked, premultiplied / torch.where(inked, alpha, 1.0), 0.0)
        return torch.cat([rgb, alpha], -1).permute(2, 0, 1)
