"""CLIPasso's default initialisation: CLIP ViT attention saliency × XDoG edges (METHOD §3).

Formulas (canvas ``H × W``, ViT with ``g × g`` patches and ``K`` blocks)::

    A_b   = mean over heads of clamp(attention_b, min=0)          # [L, L] per block b
    r     = (1/K) Σ_b A_b[0, 1:]                                  # class-token row, patch columns
    R     = minmax(bicubic_upsample(reshape(r, g, g), (H, W)))    # relevance in [0, 1]
    E     = xdog(normalize(target))                               # 1 = no edge, 0 = edge
    M     = (1 − E) · R   (· mask)
    p     ∝ exp(M / τ) where M > 0, 0 elsewhere                    # τ = 0.3
    pixels = N draws without replacement from p
    p0    = (col / W, row / H),  p_{j+1} = p_j + radius · (u − 0.5)

Example:
    >>> from clipasso.testing import tiny_clip
    >>> init = SaliencyInitializer(model=tiny_clip("vit"))
    >>> img = torch.ones(1, 3, 224, 224); img[..., 60:160, 60:160] = 0.2
    >>> res = init(img, 8, generator=torch.Generator().manual_seed(0))
    >>> tuple(res.strokes.points.shape), tuple(res.relevance.shape)
    ((1, 8, 4, 2), (224, 224))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..xdog import xdog
from .base import (
    Initializer,
    InitResult,
    check_mask,
    check_num_strokes,
    check_target,
    make_strokes,
    random_walk,
    register_initializer,
    sample_pixels,
    validate_walk_options,
)

__all__ = [
    "SaliencyInitializer",
    "relevance_from_attention",
    "relevance_map",
    "saliency_distribution",
]


def _minmax(x: Tensor) -> Tensor:
    """Min-max normalise each ``[B, ...]`` element to ``[0, 1]``; a constant element becomes ones."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    span = hi - lo
    const = span <= 0
    return torch.where(const, torch.ones_like(x), (x - lo) / torch.where(const, torch.ones_like(span), span))


def relevance_from_attention(attention: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Class-token relevance from per-block attention probabilities.

    ``R = minmax(bicubic(mean_b mean_h clamp(A_b, 0)[:, 0, 1:] reshaped to g × g, size))`` with
    ``F.interpolate(mode="bicubic")`` at its default ``align_corners=False``.

    Args:
        attention: K tensors ``[B, heads, L, L]`` (``L = 1 + g²``), post-softmax.
        size: Output ``(H, W)``.

    Returns:
        ``[B, 1, H, W]`` in ``[0, 1]`` (min 0 and max 1 unless the map is constant, then all ones).
    """
    if len(attention) == 0:
        raise InputError("attention must hold at least one block's [B, heads, L, L] probabilities")
    rows = []
    for a in attention:
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise InputError(f"each attention tensor must be [B, heads, L, L], got {tuple(a.shape)}")
        rows.append(a.clamp(min=0).mean(dim=1)[:, 0, 1:])  # [B, L-1]
    r = torch.stack(rows, dim=0).mean(dim=0)  # [B, g*g]
    g = round(r.shape[1] ** 0.5)
    if g * g != r.shape[1]:
        raise InputError(f"{r.shape[1]} patch tokens do not form a square grid")
    grid = r.reshape(r.shape[0], 1, g, g)
    up = F.interpolate(grid, size=size, mode="bicubic")
    return _minmax(up)


def relevance_map(model: nn.Module, images: Tensor, *, size: tuple[int, int] | None = None) -> Tensor:
    """CLIP ViT attention relevance of images in ``[0, 1]`` (METHOD §3.2).

    The images are CLIP-normalised; if their size differs from the tower's input resolution they
    are first resized to it (bicubic, antialiased). No gradient is tracked.

    Args:
        model: A CLIP ViT model or its ``.visual`` tower.
        images: ``[B, 3, H, W]`` in ``[0, 1]``.
        size: Output size; default ``(H, W)`` of ``images``.

    Returns:
        ``[B, 1, H, W]`` in ``[0, 1]`` on ``images``' device.
    """
    from ..models import is_vit, normalize, visual_of, vit_features

    if not is_vit(model):
        raise InputError("the saliency model must be a CLIP ViT (e.g. 'ViT-B/32'), not a ResNet")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    visual = visual_of(model)
    out_size = size if size is not None else (int(images.shape[2]), int(images.shape[3]))
    res = int(getattr(visual, "input_resolution", images.shape[-1]))
    x = images
    if tuple(x.shape[-2:]) != (res, res):
        x = F.interpolate(x, size=(res, res), mode="bicubic", antialias=True).clamp(0.0, 1.0)
    dev = next(visual.parameters()).device
    with torch.no_grad():
        feats = vit_features(visual, normalize(x.to(dev)), attention=True)
        rel = relevance_from_attention([a.float() for a in feats.attention], out_size)
    return rel.to(images.device)


def saliency_distribution(
    relevance: Tensor, edges: Tensor | None = None, *, temperature: float = 0.3, mask: Tensor | None = None
) -> Tensor:
    """Sampling distribution ``p ∝ exp(M / τ)`` over ``M > 0``, with ``M = (1 − edges) · relevance``.

    Args:
        relevance: ``[H, W]`` in ``[0, 1]``.
        edges: ``[H, W]`` XDoG map (1 = no edge), or None to use ``M = relevance``.
        temperature: τ > 0.
        mask: Bool ``[H, W]`` (True = object), or None. Outside it ``M = 0``.

    Returns:
        ``[H, W]`` probabilities summing to 1 (all zeros if no entry of ``M`` is positive).
    """
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    m = relevance if edges is None else (1.0 - edges) * relevance
    if mask is not None:
        m = torch.where(mask, m, torch.zeros_like(m))
    pos = m > 0
    if not bool(pos.any()):
        return torch.zeros_like(m)
    top = m[pos].max()
    w = torch.where(pos, torch.exp((m - top) / temperature), torch.zeros_like(m))
    return w / w.sum()


@register_initializer("saliency")
class SaliencyInitializer(Initializer):
    """CLIPasso's saliency initialisation (the reference default, METHOD §3).

    Args:
        model: A loaded CLIP ViT model (or its ``.visual``), or a name/path for
            :func:`clipasso.models.load_clip`. A name is loaded lazily on the first call, on the
            target's device, and kept.
        temperature: τ of the softmax over ``M``.
        use_xdog: Multiply the relevance by ``1 − XDoG`` edges (off: ``M = relevance``).
        num_segments: k cubic segments per stroke (P = 3k + 1 points).
        radius: Random-walk step size in canvas units.
        width: Stroke half-width in pixels.
        color: RGBA of every stroke.
        cache_dir: Weights cache for ``load_clip`` when ``model`` is a name.
        fallback: When ``model`` is a model NAME whose weights cannot be found or downloaded (an
            offline machine), warn and use the weights-free saliency instead
            (:func:`~clipasso.init.weights_free.weights_free_relevance`; :attr:`weights_free` is
            then True). A weights *path* that does not exist is always an error.

    Raises (on call):
        InputError: If fewer than N pixels have positive probability (no fallback: use fewer
            strokes, a larger mask, or ``use_xdog=False``).
    """

    def __init__(
        self,
        *,
        model: nn.Module | str | Path = "ViT-B/32",
        temperature: float = 0.3,
        use_xdog: bool = True,
        num_segments: int | None = None,
        radius: float = 0.05,
        width: float | None = None,
        color: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
        cache_dir: str | Path | None = None,
        fallback: bool = True,
    ) -> None:
        self.fixed = frozenset(
            k for k, v in (("num_segments", num_segments), ("width", width)) if v is not None
        )
        num_segments = 1 if num_segments is None else num_segments
        width = 1.5 if width is None else width
        validate_walk_options(num_segments, radius, width)
        if not temperature > 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        if not isinstance(model, (nn.Module, str, Path)):
            raise InputError(f"model must be a CLIP ViT module or a name/path, got {type(model).__name__}")
        self.model = model if isinstance(model, (str, Path)) else "<module>"
        self._model: nn.Module | None = model if isinstance(model, nn.Module) else None
        self._owns_model = not isinstance(model, nn.Module)
        self.temperature = float(temperature)
        self.use_xdog = bool(use_xdog)
        self.num_segments = num_segments
        self.radius = float(radius)
        self.width = float(width)
        self.color = tuple(float(c) for c in color)
        self.cache_dir = cache_dir
        self.fallback = bool(fallback)
        #: True once the ViT weights were unavailable and the weights-free saliency took their place.
        self.weights_free = False
        # the maps of the last target: best-of-N draws N times from one target, and the ViT pass
        # and XDoG need to run once, not N times (holding the tensors keeps the identity check sound)
        self._last: tuple[Tensor, int, Tensor | None, int, tuple[Tensor, Tensor | None, Tensor]] | None = None

    def load(self, device: torch.device) -> None:
        """Load the ViT now (see :meth:`Initializer.load`)."""
        self._get_model(device)

    def _get_model(self, device: torch.device) -> nn.Module | None:
        if self.weights_free:
            return None
        if self._model is None:
            from ..errors import WeightsError
            from ..models import CLIP_MODELS, load_clip

            assert isinstance(self.model, (str, Path))
            try:
                self._model = load_clip(
                    str(self.model), device=device, cache_dir=self.cache_dir, role="saliency"
                )
            except WeightsError as exc:
                if not (self.fallback and isinstance(self.model, str) and self.model in CLIP_MODELS):
                    raise
                import warnings

                warnings.warn(
                    f"note: no CLIP {self.model} weights for the saliency map ({str(exc).split('. ')[0]}); "
                    "the strokes start from the weights-free saliency instead (clipasso.init.weights_free). "
                    "Pass --saliency-weights FILE for the paper's initialisation.",
                    UserWarning,
                    stacklevel=3,
                )
                self.weights_free = True
                return None
        elif self._owns_model:
            self._model = self._model.to(device)
        return self._model

    def maps(self, target: Tensor, *, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """The intermediate maps for ``target`` ``[1, 3, H, W]``.

        Returns:
            ``(relevance, edges, distribution)``, each ``[H, W]`` (``edges`` None without XDoG).
        """
        from ..models import normalize

        versions = (target._version, mask._version if mask is not None else 0)
        last = self._last
        if last is not None and last[0] is target and last[2] is mask and (last[1], last[3]) == versions:
            return last[4]
        h, w = check_target(target)
        m = check_mask(mask, (h, w), target.device)
        model = self._get_model(target.device)
        if model is None:
            from .weights_free import weights_free_relevance

            rel = weights_free_relevance(target).to(torch.float32)
        else:
            rel = relevance_map(model, target)[0, 0]
        edges = xdog(normalize(target.detach()))[0, 0] if self.use_xdog else None
        dist = saliency_distribution(rel, edges, temperature=self.temperature, mask=m)
        self._last = (target, versions[0], mask, versions[1], (rel, edges, dist))
        return rel, edges, dist

    def __call__(
        self, target: Tensor, num_strokes: int, *, generator: torch.Generator, mask: Tensor | None = None
    ) -> InitResult:
        h, w = check_target(target)
        n = check_num_strokes(num_strokes)
        rel, edges, dist = self.maps(target, mask=mask)
        pixels = sample_pixels(dist, n, generator)
        starts = torch.stack([pixels[:, 1] / w, pixels[:, 0] / h], dim=1).to(torch.float32)
        pts = random_walk(starts, 3 * self.num_segments + 1, self.radius, generator)
        strokes = make_strokes(pts, (h, w), width=self.width, color=self.color, device=target.device)
        return InitResult(strokes=strokes, relevance=rel, edges=edges, distribution=dist, pixels=pixels)
