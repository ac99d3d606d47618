"""The reference CLIPasso views: an identity view plus random perspective + resized-crop views.

METHOD §4 builds, every iteration, a batch of views of the sketch and of the target:

* view 0: ``resize(size, bicubic)`` of the short side, centre crop ``size``, CLIP normalisation
  (the identity at 224×224);
* views 1..V: sketch and target sent through ONE random transform with the SAME parameters:
  ``RandomPerspective(distortion_scale=0.5, p=1, fill=0)`` then
  ``RandomResizedCrop(size, scale=(0.8, 0.8), ratio=(1, 1))`` (both bilinear), then normalisation.
  ``fill=0`` pads with black *before* normalisation, as the reference does.

The random parameters are drawn here from a :class:`torch.Generator`, in the same order and with the
same distributions as torchvision's ``RandomPerspective.get_params`` (after its ``p`` coin) and
``RandomResizedCrop.get_params``; the images are then warped with
``torchvision.transforms.v2.functional`` (``perspective`` with a per-channel fill, ``resized_crop``).
So a generator seeded with ``s`` gives exactly the views that torchvision's classes give after
``torch.manual_seed(s)``.

Randomness and batches (``generators`` argument of :meth:`ReferenceViews.forward`):

* a list of ``B`` generators: sketch ``b`` (and the target paired with it) gets views drawn from
  generator ``b`` only, so a batched call equals ``B`` separate calls (independent views per sketch);
* one generator: one set of view parameters shared by every sketch in the batch;
* ``None``: the module's own generator (seeded with ``seed`` on first use) is used as one shared
  generator, so a fresh module with the same seed reproduces the same views.

Example:
    >>> import torch
    >>> from clipasso.augment import ReferenceViews
    >>> views = ReferenceViews(num_views=4)
    >>> sketch, target = torch.rand(2, 3, 224, 224), torch.rand(1, 3, 224, 224)
    >>> gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    >>> xs, ys = views(sketch, target, generators=gens)
    >>> tuple(xs.shape), tuple(ys.shape)
    ((2, 5, 3, 224, 224), (2, 5, 3, 224, 224))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .errors import InputError
from .models.taps import CLIP_MEAN, CLIP_STD, normalize

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ReferenceViews",
    "ViewParams",
    "apply_view",
    "base_view",
    "clip_normalize",
    "sample_view_params",
]

GeneratorArg = list[torch.Generator] | torch.Generator | None


@dataclass(frozen=True)
class ViewParams:
    """Parameters of one random view.

    Attributes:
        startpoints: Corners of the input ``[[x, y], ...]`` (top-left, top-right, bottom-right,
            bottom-left), in pixels.
        endpoints: Where those corners go, same order.
        crop: ``(top, left, height, width)`` of the crop that is then resized to the output size.
    """

    startpoints: list[list[int]]
    endpoints: list[list[int]]
    crop: tuple[int, int, int, int]


#: CLIP mean/std normalisation of ``[..., 3, H, W]`` images (the one in :mod:`clipasso.models`).
clip_normalize = normalize


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=generator, device=generator.device).item())


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    out = torch.empty(1, dtype=torch.float32, device=generator.device)
    return float(out.uniform_(low, high, generator=generator).item())


def sample_view_params(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    distortion_scale: float = 0.5,
    crop_scale: tuple[float, float] = (0.8, 0.8),
    crop_ratio: tuple[float, float] = (1.0, 1.0),
) -> ViewParams:
    """Draw the parameters of one perspective + resized-crop view.

    The draws follow torchvision's order and distributions: one uniform for the ``p=1`` coin of
    ``RandomPerspective``, 8 integers for the corner offsets (each corner moves inwards by at most
    ``int(distortion_scale * half_side)`` pixels), then ``RandomResizedCrop``'s rejection loop (area
    fraction uniform in ``crop_scale``, log aspect ratio uniform in ``log(crop_ratio)``, up to 10
    tries, else a central crop) with a uniform integer position.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        generator: Source of randomness (any device).
        distortion_scale: Perspective strength in [0, 1].
        crop_scale: Range of the crop area as a fraction of the image area.
        crop_ratio: Range of the crop aspect ratio (width / height).

    Returns:
        The view's :class:`ViewParams`.
    """
    # RandomPerspective.forward draws its coin first; with p = 1 it always passes.
    _uniform(0.0, 1.0, generator)
    half_h, half_w = height // 2, width // 2
    dw, dh = int(distortion_scale * half_w), int(distortion_scale * half_h)
    topleft = [_randint(0, dw + 1, generator), _randint(0, dh + 1, generator)]
    topright = [_randint(width - dw - 1, width, generator), _randint(0, dh + 1, generator)]
    botright = [_randint(width - dw - 1, width, generator), _randint(height - dh - 1, height, generator)]
    botleft = [_randint(0, dw + 1, generator), _randint(height - dh - 1, height, generator)]
    start = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    end = [topleft, topright, botright, botleft]

    area = height * width
    log_ratio = torch.log(torch.tensor(crop_ratio, dtype=torch.float32))
    lr0, lr1 = float(log_ratio[0]), float(log_ratio[1])
    for _ in range(10):
        target_area = area * _uniform(crop_scale[0], crop_scale[1], generator)
        aspect = math.exp(_uniform(lr0, lr1, generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            i = _randint(0, height - h + 1, generator)
            j = _randint(0, width - w + 1, generator)
            return ViewParams(start, end, (i, j, h, w))
    in_ratio = width / height
    if in_ratio < min(crop_ratio):
        w = width
        h = round(w / min(crop_ratio))
    elif in_ratio > max(crop_ratio):
        h = height
        w = round(h * max(crop_ratio))
    else:
        w, h = width, height
    return ViewParams(start, end, ((height - h) // 2, (width - w) // 2, h, w))


def apply_view(images: Tensor, params: ViewParams, size: int, *, fill: float = 0.0) -> Tensor:
    """Warp ``images [N, C, H, W]`` with one view's parameters (all N images get the same warp).

    Perspective (bilinear, constant ``fill`` blended through a coverage mask exactly as torchvision
    does for a given fill) then crop + bilinear resize (antialiased) to ``size × size``.

    Returns:
        ``[N, C, size, size]``, differentiable with respect to ``images``.
    """
    # torchvision blends a constant fill through a warped coverage channel, but in place (which breaks
    # autograd); the same computation, out of place: warp [images, 1], then mask * (img - fill) + fill.
    channels = images.shape[-3]
    ones = torch.ones_like(images[:, :1])
    warped = TF.perspective(
        torch.cat([images, ones], dim=1),
        params.startpoints,
        params.endpoints,
        interpolation=InterpolationMode.BILINEAR,
        fill=None,
    )
    img, mask = warped[:, :channels], warped[:, channels:]
    out = (img - fill) * mask + fill
    top, left, h, w = params.crop
    return TF.resized_crop(
        out, top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True
    )


def base_view(images: Tensor, size: int = 224) -> Tensor:
    """View 0: bicubic resize of the short side to ``size`` then centre crop (identity when square ``size``).

    Args:
        images: ``[N, C, H, W]``.
        size: Output side.

    Returns:
        ``[N, C, size, size]``.
    """
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    out = TF.resize(images, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(out, [size, size])


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{name} must be a [B, 3, H, W] tensor, got {shape}")


class ReferenceViews(nn.Module):
    """The reference augmentation: view 0 plus ``num_views`` shared-parameter random views.

    Args:
        num_views: Number of random views (reference: 4). 0 gives view 0 only.
        size: Output side of every view (CLIP's input size, 224).
        distortion_scale: ``RandomPerspective`` strength.
        crop_scale: ``RandomResizedCrop`` area range.
        crop_ratio: ``RandomResizedCrop`` aspect-ratio range.
        fill: Value outside the warped image (before normalisation; reference 0 = black).
        identity_view: Include view 0. The reference's optional ViT term uses random views only.
        normalize: Apply CLIP normalisation to every view.
        seed: Seed of the module's own generator, used when ``generators`` is None.

    Example:
        >>> import torch
        >>> views = ReferenceViews(num_views=2, seed=3)
        >>> xs, ys = views(torch.rand(1, 3, 224, 224), torch.rand(1, 3, 224, 224))
        >>> tuple(xs.shape)
        (1, 3, 3, 224, 224)
    """

    def __init__(
        self,
        num_views: int = 4,
        *,
        size: int = 224,
        distortion_scale: float = 0.5,
        crop_scale: tuple[float, float] = (0.8, 0.8),
        crop_ratio: tuple[float, float] = (1.0, 1.0),
        fill: float = 0.0,
        identity_view: bool = True,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_views < 0:
            raise InputError(f"num_views must be >= 0, got {num_views}")
        if not identity_view and num_views == 0:
            raise InputError("identity_view=False needs num_views >= 1 (otherwise there is no view)")
        if not 0.0 <= distortion_scale <= 1.0:
            raise InputError(f"distortion_scale must be in [0, 1], got {distortion_scale}")
        if crop_scale[0] > crop_scale[1] or crop_ratio[0] > crop_ratio[1] or crop_ratio[0] <= 0:
            raise InputError(
                f"crop_scale/crop_ratio must be (min, max) ranges, got {crop_scale}, {crop_ratio}"
            )
        self.num_views = int(num_views)
        self.size = int(size)
        self.distortion_scale = float(distortion_scale)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.fill = float(fill)
        self.identity_view = bool(identity_view)
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self._generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return (
            f"num_views={self.num_views}, size={self.size}, distortion_scale={self.distortion_scale}, "
            f"crop_scale={self.crop_scale}, crop_ratio={self.crop_ratio}, identity_view={self.identity_view}"
        )

    @property
    def generator(self) -> torch.Generator:
        """The module's own CPU generator (created and seeded with ``seed`` on first use)."""
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self._generator

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the module's own generator (with ``seed``, or the constructor's seed)."""
        if seed is not None:
            self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def num_outputs(self, train: bool = True) -> int:
        """Number of views ``V`` a call returns."""
        if not train:
            return 1
        return self.num_views + int(self.identity_view)

    def sample(self, height: int, width: int, generator: torch.Generator) -> list[ViewParams]:
        """Draw the parameters of the ``num_views`` random views, view after view."""
        return [
            sample_view_params(
                height,
                width,
                generator,
                distortion_scale=self.distortion_scale,
                crop_scale=self.crop_scale,
                crop_ratio=self.crop_ratio,
            )
            for _ in range(self.num_views)
        ]

    def sample_pool(self, height: int, width: int, count: int, seed: int | None = None) -> list[ViewParams]:
        """Parameters of a fixed pool of ``count`` random views, from a fresh generator seeded with
        ``seed`` (default: the module's ``seed``), so the pool is reproducible and drawing it does not
        touch the module's own generator.

        Example:
            >>> pool = ReferenceViews(4).sample_pool(224, 224, 8)
            >>> len(pool), pool == ReferenceViews(4).sample_pool(224, 224, 8)
            (8, True)
        """
        if count < 1:
            raise InputError(f"count must be >= 1, got {count}")
        gen = torch.Generator().manual_seed(self.seed if seed is None else int(seed))
        return [
            sample_view_params(
                height,
                width,
                gen,
                distortion_scale=self.distortion_scale,
                crop_scale=self.crop_scale,
                crop_ratio=self.crop_ratio,
            )
            for _ in range(count)
        ]

    def views_from(self, images: Tensor, params: Sequence[ViewParams], *, identity: bool = True) -> Tensor:
        """Views of ``images [N, 3, H, W]`` with given parameters: ``[N, V, 3, S, S]`` (view 0 first when
        ``identity``; then one view per entry of ``params``), normalised when ``normalize`` is set.
        Per-view sources ``images [N, V, 3, H, W]`` make view ``v`` from ``images[:, v]`` (nested
        ``"spread"`` training, :func:`clipasso.prefixes.spread_sources`).

        Example:
            >>> views = ReferenceViews(2)
            >>> out = views.views_from(torch.rand(1, 3, 224, 224), views.sample_pool(224, 224, 2))
            >>> tuple(out.shape)
            (1, 3, 3, 224, 224)
        """
        if isinstance(images, Tensor) and images.dim() == 5:
            _check_sources(images, len(params) + int(identity))
        else:
            _check_images("images", images)
        if not identity and not params:
            raise InputError("views_from needs identity=True or at least one view's parameters")
        out = self._views(images, params, identity)
        return clip_normalize(out) if self.normalize else out

    def _views(self, images: Tensor, params: Sequence[ViewParams], identity: bool) -> Tensor:
        """``[N, 3, H, W]`` → ``[N, V, 3, S, S]`` (not normalised); per-view sources
        ``[N, V, 3, H, W]``: view ``v`` made from ``images[:, v]``."""
        if images.dim() == 5:
            first = int(identity)
            views = [base_view(images[:, 0], self.size)] if identity else []
            views += [
                apply_view(images[:, first + i], p, self.size, fill=self.fill) for i, p in enumerate(params)
            ]
            return torch.stack(views, dim=1)
        views = [base_view(images, self.size)] if identity else []
        views += [apply_view(images, p, self.size, fill=self.fill) for p in params]
        return torch.stack(views, dim=1)

    def forward(
        self,
        sketch: Tensor,
        target: Tensor | None = None,
        generators: GeneratorArg = None,
        *,
        train: bool = True,
        sources: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Build the views of sketches and (optionally) their target.

        Args:
            sketch: ``[B, 3, H, W]`` in [0, 1].
            target: ``[1 or B, 3, H, W]`` in [0, 1], or None to augment the sketch alone.
            generators: A list of ``B`` generators (independent views per sketch), one generator (views
                shared by all sketches) or None (the module's own generator, shared).
            train: False gives view 0 only, whatever ``identity_view`` says (no randomness is drawn).
            sources: Train mode only: ``[B, V, 3, H, W]`` (``V`` = :meth:`num_outputs`), the image
                each view of sketch ``b`` is made from (view ``v`` from ``sources[b, v]``, with the
                parameters it would have had; nested ``"spread"`` training); None: every view from
                ``sketch``. The random draws are the same either way.

        Returns:
            ``(xs, ys)``: ``xs [B, V, 3, S, S]``; ``ys [Bt, V, 3, S, S]`` with ``Bt = 1`` when the
            target has batch 1 and the views are shared (or ``train`` is False), else ``B``; ``ys`` is
            None without a target. Normalised with CLIP's mean/std when ``normalize`` is set.
        """
        _check_images("sketch", sketch)
        batch = sketch.shape[0]
        if target is not None:
            _check_images("target", target)
            if target.shape[0] not in (1, batch):
                raise InputError(
                    f"target batch must be 1 or {batch} (the sketch batch), got {target.shape[0]}"
                )
            if target.shape[-2:] != sketch.shape[-2:]:
                got, want = tuple(target.shape[-2:]), tuple(sketch.shape[-2:])
                raise InputError(f"target size {got} differs from sketch size {want}")
            target = target.to(dtype=sketch.dtype)
        height, width = sketch.shape[-2:]
        if sources is not None and train:
            _check_sources(sources, self.num_outputs(train), sketch)
            return self._sourced(sketch, sources, target, generators)

        if not train or self.num_views == 0:
            xs = base_view(sketch, self.size).unsqueeze(1)
            ys = None if target is None else base_view(target, self.size).unsqueeze(1)
        elif isinstance(generators, (list, tuple)):
            if len(generators) != batch:
                raise InputError(f"got {len(generators)} generators for a batch of {batch} sketches")
            xs_list, ys_list = [], []
            for b, gen in enumerate(generators):
                params = self.sample(height, width, gen)
                if target is None:
                    xs_list.append(self._views(sketch[b : b + 1], params, self.identity_view))
                else:
                    t = target[b : b + 1] if target.shape[0] == batch else target
                    both = self._views(torch.cat([sketch[b : b + 1], t], dim=0), params, self.identity_view)
                    xs_list.append(both[:1])
                    ys_list.append(both[1:])
            xs = torch.cat(xs_list, dim=0)
            ys = torch.cat(ys_list, dim=0) if target is not None else None
        else:
            gen = generators if isinstance(generators, torch.Generator) else self.generator
            params = self.sample(height, width, gen)
            if target is None:
                xs, ys = self._views(sketch, params, self.identity_view), None
            else:
                both = self._views(torch.cat([sketch, target], dim=0), params, self.identity_view)
                xs, ys = both[:batch], both[batch:]
        if self.normalize:
            xs = clip_normalize(xs)
            ys = None if ys is None else clip_normalize(ys)
        return xs, ys

    def _sourced(
        self, sketch: Tensor, sources: Tensor, target: Tensor | None, generators: GeneratorArg
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`forward` in train mode with per-view ``sources [B, V, 3, H, W]`` (checked)."""
        batch = sketch.shape[0]
        height, width = sketch.shape[-2:]
        sources = sources.to(dtype=sketch.dtype)
        if isinstance(generators, (list, tuple)):
            if len(generators) != batch:
                raise InputError(f"got {len(generators)} generators for a batch of {batch} sketches")
            per = [self.sample(height, width, gen) for gen in generators]
            xs = torch.cat(
                [self._views(sources[b : b + 1], p, self.identity_view) for b, p in enumerate(per)]
            )
            ys = None
            if target is not None:
                rows = [target[b : b + 1] if target.shape[0] == batch else target for b in range(batch)]
                ys = torch.cat([self._views(t, p, self.identity_view) for t, p in zip(rows, per)])
        else:
            gen = generators if isinstance(generators, torch.Generator) else self.generator
            params = self.sample(height, width, gen)
            xs = self._views(sources, params, self.identity_view)
            ys = None if target is None else self._views(target, params, self.identity_view)
        if self.normalize:
            xs = clip_normalize(xs)
            ys = None if ys is None else clip_normalize(ys)
        return xs, ys


def _check_sources(sources: Tensor, views: int, sketch: Tensor | None = None) -> None:
    """Per-view sources must be ``[B, V, 3, H, W]`` with ``V`` views (and the sketch's B, H, W)."""
    ok = isinstance(sources, Tensor) and sources.dim() == 5 and sources.shape[1:3] == (views, 3)
    if ok and sketch is not None:
        ok = sources.shape[0] == sketch.shape[0] and sources.shape[-2:] == sketch.shape[-2:]
    if not ok:
        shape = tuple(sources.shape) if isinstance(sources, Tensor) else type(sources).__name__
        want = (
            "[B, V, 3, H, W]"
            if sketch is None
            else f"[{sketch.shape[0]}, V, 3, {sketch.shape[-2]}, {sketch.shape[-1]}]"
        )
        raise InputError(f"per-view sources must be {want} with V = {views} views, got {shape}")
