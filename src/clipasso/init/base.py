"""Initializer protocol, result type, registry and the shared sampling helpers.

An initializer turns a target image into the starting strokes of an optimisation::

    init = create_initializer("random")
    result = init(target, 16, generator=torch.Generator().manual_seed(0))
    result.strokes            # StrokeSet, B = 1, points [1, 16, 4, 2] in pixels

Every random number comes from the ``generator`` argument (drawn on the generator's device and
then moved to the target's device), so the same seed gives the same strokes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InputError
from ..registry import Registry
from ..settings import RunSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..strokes import StrokeSet

__all__ = [
    "INITIALIZERS",
    "InitResult",
    "Initializer",
    "check_mask",
    "check_target",
    "create_initializer",
    "list_initializers",
    "make_strokes",
    "random_walk",
    "register_initializer",
    "sample_pixels",
    "sample_spread_pixels",
]


@dataclass
class InitResult:
    """What an initializer returns.

    Attributes:
        strokes: The initial strokes (a ``StrokeSet`` with B = 1, points in pixels).
        relevance: ``[H, W]`` saliency map in ``[0, 1]`` (saliency initializers), else None.
        edges: ``[H, W]`` XDoG map (1 = no edge, 0 = edge), else None.
        distribution: ``[H, W]`` sampling probabilities (sum 1), else None.
        pixels: ``[N, 2]`` long, the chosen start pixels as (row, col), else None.
    """

    strokes: StrokeSet
    relevance: Tensor | None = None
    edges: Tensor | None = None
    distribution: Tensor | None = None
    pixels: Tensor | None = None


class Initializer(abc.ABC):
    """Base class of stroke initializers.

    Subclasses implement :meth:`__call__`; constructors only store options (no model loading,
    no file reading), so building one is cheap.

    Example:
        >>> class Centre(Initializer):  # add @register_initializer("centre") to register it
        ...     def __call__(self, target, num_strokes, *, generator, mask=None):
        ...         h, w = check_target(target)
        ...         starts = torch.full((num_strokes, 2), 0.5)
        ...         pts = random_walk(starts, 4, 0.05, generator)
        ...         return InitResult(strokes=make_strokes(pts, (h, w), device=target.device))
    """

    @abc.abstractmethod
    def __call__(
        self, target: Tensor, num_strokes: int, *, generator: torch.Generator, mask: Tensor | None = None
    ) -> InitResult:
        """Build ``num_strokes`` strokes for ``target``.

        Args:
            target: ``[1, 3, H, W]`` image in ``[0, 1]``; the canvas is ``(H, W)``.
            num_strokes: N, the number of strokes (>= 1).
            generator: Source of every random number.
            mask: Optional object mask ``[1, 1, H, W]`` or ``[H, W]`` (> 0.5 = object).

        Returns:
            An :class:`InitResult`.
        """

    #: The run settings given to the constructor: :meth:`configure` leaves them as they are.
    fixed: frozenset[str] = frozenset()

    def configure(self, settings: RunSettings) -> None:
        """Adopt a run's stroke settings (``num_segments``, ``width``) where this initializer has
        them and its constructor was not given them (:attr:`fixed`). :class:`~clipasso.Sketcher`
        calls it before every run, for initializers built by name and objects alike."""
        if hasattr(self, "num_segments") and "num_segments" not in self.fixed:
            self.num_segments = int(settings.num_segments)
        if hasattr(self, "width") and "width" not in self.fixed:
            self.width = float(settings.width)

    def load(self, device: torch.device) -> None:  # noqa: B027 - optional hook, nothing by default
        """Load any model this initializer reads lazily, now, on ``device`` (default: nothing to
        load). :meth:`clipasso.Sketcher.load` calls it so a missing weights file fails before any
        work."""

    def __repr__(self) -> str:
        opts = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "fixed"
        )
        return f"{type(self).__name__}({opts})"


#: Registry of initializers (name → class or factory).
INITIALIZERS: Registry[Initializer] = Registry("initializer")


def register_initializer(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[..., Initializer]], Callable[..., Initializer]]:
    """Decorator registering an initializer class under ``name`` (see :class:`Initializer`)."""
    return INITIALIZERS.register(name, overwrite=overwrite)


def create_initializer(name: str, **kwargs: Any) -> Initializer:
    """Instantiate the initializer registered as ``name`` with keyword options.

    Example:
        >>> create_initializer("random", radius=0.1)
        RandomInitializer(num_segments=1, radius=0.1, width=1.5, color=(0.0, 0.0, 0.0, 1.0))
    """
    return INITIALIZERS.create(name, **kwargs)


def list_initializers(pattern: str = "*") -> list[str]:
    """Sorted names of the registered initializers matching a glob ``pattern``."""
    return INITIALIZERS.names(pattern)


# ----------------------------------------------------------------------------------------------
# shared helpers


def check_target(target: Tensor) -> tuple[int, int]:
    """Validate a ``[1, 3, H, W]`` floating target and return its canvas size ``(H, W)``."""
    if not isinstance(target, Tensor):
        raise InputError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dim() != 4 or target.shape[0] != 1 or target.shape[1] != 3:
        raise InputError(f"target must have shape [1, 3, H, W], got {tuple(target.shape)}")
    if not torch.is_floating_point(target):
        raise InputError(f"target must be a floating-point tensor, got {target.dtype}")
    if not torch.isfinite(target).all():
        raise InputError("target contains NaN or infinite values")
    return int(target.shape[2]), int(target.shape[3])


def check_num_strokes(num_strokes: int) -> int:
    """Validate N (a positive int)."""
    if isinstance(num_strokes, bool) or not isinstance(num_strokes, int) or num_strokes < 1:
        raise InputError(f"num_strokes must be a positive int, got {num_strokes!r}")
    return num_strokes


def check_mask(mask: Tensor | None, size: tuple[int, int], device: torch.device) -> Tensor | None:
    """Turn an optional mask ``[1, 1, H, W]`` / ``[H, W]`` into a bool ``[H, W]`` (True = object).

    Float masks count as object where ``> 0.5``; bool masks are used as they are.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise InputError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    m = mask
    if m.dim() == 4 and m.shape[0] == 1 and m.shape[1] == 1:
        m = m[0, 0]
    if m.dim() != 2 or tuple(m.shape) != tuple(size):
        raise InputError(
            f"mask must have shape [1, 1, {size[0]}, {size[1]}] or {list(size)}, got {tuple(mask.shape)}"
        )
    m = m.to(device)
    return m if m.dtype == torch.bool else m > 0.5


def sample_pixels(distribution: Tensor, num: int, generator: torch.Generator) -> Tensor:
    """Draw ``num`` distinct pixels from a ``[H, W]`` distribution, without replacement.

    Uses ``torch.multinomial(p.flatten(), num, replacement=False, generator=generator)`` on the
    generator's device.

    Args:
        distribution: ``[H, W]`` non-negative weights (need not sum to 1).
        num: Number of pixels.
        generator: The random source.

    Returns:
        ``[num, 2]`` long (row, col), on ``distribution``'s device.

    Raises:
        InputError: If fewer than ``num`` entries are positive.
    """
    _check_distribution(distribution, num)
    w = distribution.shape[1]
    dtype = torch.float32 if generator.device.type == "mps" else torch.float64  # mps has no float64
    p = distribution.detach().flatten().to(device=generator.device, dtype=dtype)
    idx = torch.multinomial(p, num, replacement=False, generator=generator).to(distribution.device)
    return torch.stack([idx // w, idx % w], dim=1)


def _check_distribution(distribution: Tensor, num: int) -> None:
    if distribution.dim() != 2:
        raise InputError(f"distribution must be [H, W], got {tuple(distribution.shape)}")
    positive = int((distribution > 0).sum())
    if positive < num:
        raise InputError(
            f"cannot draw {num} distinct start pixels: the sampling distribution has only {positive} "
            "positive entries (use fewer strokes, a larger mask, or switch the edge filter off)"
        )


def sample_spread_pixels(
    distribution: Tensor, num: int, generator: torch.Generator, min_distance: float
) -> Tensor:
    """Draw ``num`` distinct pixels from a ``[H, W]`` distribution, kept ``min_distance`` apart.

    One pixel at a time by :func:`sample_pixels` (``num`` draws of 1 from ``generator``); after each
    draw the weights within ``min_distance`` pixels (Euclidean) of it are set to 0, so the pixels
    spread over the distribution's support instead of clustering where it peaks. When the support is
    used up before ``num`` pixels are drawn, the remaining ones are drawn from the original weights
    without the pixels already chosen (closer than ``min_distance``, but still distinct).
    ``min_distance <= 0`` is :func:`sample_pixels` itself.

    Args:
        distribution: ``[H, W]`` non-negative weights (need not sum to 1).
        num: Number of pixels.
        generator: The random source.
        min_distance: Minimum distance between the pixels, in pixels.

    Returns:
        ``[num, 2]`` long (row, col), on ``distribution``'s device.

    Raises:
        InputError: If fewer than ``num`` entries are positive.

    Example:
        >>> d = torch.zeros(8, 64); d[4, :] = 1.0  # a horizontal line
        >>> px = sample_spread_pixels(d, 4, torch.Generator().manual_seed(0), min_distance=10.0)
        >>> cols = px[:, 1].sort().values
        >>> bool((cols.diff() >= 10).all())
        True
    """
    if min_distance <= 0:
        return sample_pixels(distribution, num, generator)
    _check_distribution(distribution, num)
    h, w = distribution.shape
    rows = torch.arange(h, device=distribution.device, dtype=torch.float32)[:, None]
    cols = torch.arange(w, device=distribution.device, dtype=torch.float32)[None, :]
    free = distribution.detach().clamp_min(0).clone()  # the original weights, minus chosen pixels
    spread = free.clone()  # minus the discs around chosen pixels
    chosen = []
    for _ in range(num):
        if not bool((spread > 0).any()):
            spread = free.clone()
        pixel = sample_pixels(spread, 1, generator)[0]
        chosen.append(pixel)
        r, c = float(pixel[0]), float(pixel[1])
        near = (rows - r) ** 2 + (cols - c) ** 2 < float(min_distance) ** 2
        spread = torch.where(near, torch.zeros_like(spread), spread)
        free[pixel[0], pixel[1]] = 0.0
    return torch.stack(chosen)


def random_walk(starts: Tensor, num_points: int, radius: float, generator: torch.Generator) -> Tensor:
    """Control points by a random walk from ``starts`` (unit coordinates).

    ``p_{j+1} = p_j + radius * (u_j - 0.5)`` per axis, ``u_j ~ U[0, 1)``, drawn as one tensor
    ``torch.rand(N, num_points - 1, 2)`` from ``generator``.

    Args:
        starts: ``[N, 2]`` first points ``(x, y)`` in ``[0, 1]`` canvas units.
        num_points: P = 3k + 1 points per stroke (k segments).
        radius: Step size in canvas units (0.05 in CLIPasso).
        generator: The random source.

    Returns:
        ``[N, P, 2]`` in canvas units, on ``starts``' device and dtype.
    """
    if starts.dim() != 2 or starts.shape[1] != 2:
        raise InputError(f"starts must be [N, 2], got {tuple(starts.shape)}")
    if num_points < 2:
        raise InputError(f"num_points must be >= 2, got {num_points}")
    n = starts.shape[0]
    u = torch.rand(n, num_points - 1, 2, generator=generator, device=generator.device, dtype=torch.float32)
    steps = (radius * (u - 0.5)).to(device=starts.device, dtype=starts.dtype)
    return torch.cat([starts[:, None, :], starts[:, None, :] + steps.cumsum(dim=1)], dim=1)


def make_strokes(
    unit_points: Tensor,
    canvas_size: tuple[int, int],
    *,
    width: float = 1.5,
    color: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
    device: torch.device | None = None,
) -> StrokeSet:
    """Wrap ``[N, P, 2]`` unit-coordinate points into a ``StrokeSet`` in pixels (B = 1).

    ``x`` is multiplied by W and ``y`` by H. Every stroke gets half-width ``width`` and RGBA ``color``.
    """
    from ..strokes import StrokeSet

    if len(color) != 4:
        raise InputError(f"color must be RGBA (4 values), got {tuple(color)}")
    h, w = canvas_size
    dev = device if device is not None else unit_points.device
    scale = torch.tensor([float(w), float(h)], device=dev, dtype=torch.float32)
    pts = unit_points.to(device=dev, dtype=torch.float32) * scale
    n = pts.shape[0]
    widths = torch.full((1, n), float(width), device=dev, dtype=torch.float32)
    colors = torch.tensor([float(c) for c in color], device=dev, dtype=torch.float32).expand(1, n, 4).clone()
    return StrokeSet(pts[None], widths=widths, colors=colors, canvas_size=(h, w))


def validate_walk_options(num_segments: int, radius: float, width: float) -> None:
    """Shared option checks for the walk-based initializers."""
    if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
        raise InputError(f"num_segments must be a positive int, got {num_segments!r}")
    if not radius >= 0:
        raise InputError(f"radius must be >= 0, got {radius}")
    if not width > 0:
        raise InputError(f"width must be > 0, got {width}")
