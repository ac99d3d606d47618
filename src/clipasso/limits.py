"""Resource limits on everything that comes in from a file or a setting.

Every number a file can carry that makes clipasso allocate memory or spend time (an image's
pixel count, a canvas side, the number of strokes, an SVG's size, depth and element count, the
iterations of a run, ...) is checked against a limit *before* the work starts, and a value above
it raises :class:`~clipasso.errors.LimitError` (an :class:`~clipasso.errors.InputError`) that
names the value, the limit and how to move it. The defaults are far above real use; they exist
so that a hostile or broken file fails fast instead of exhausting the machine.

The limits are the fields of :class:`Limits`. Where a check needs them it calls
:func:`get_limits`, which returns, in order of precedence:

1. the limits set by an enclosing :func:`override` block (in this thread or task),
2. else the defaults below, each replaced by the environment variable ``CLIPASSO_<FIELD>`` when
   it is set (``CLIPASSO_MAX_IMAGE_PIXELS=400000000``), read at each call.

So a command-line user moves a limit with the environment, and a program with a ``with`` block:

Example:
    >>> from clipasso import limits
    >>> limits.get_limits().max_svg_depth
    256
    >>> with limits.override(max_svg_depth=8):
    ...     limits.get_limits().max_svg_depth
    8
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import InputError, LimitError

__all__ = ["ENV_PREFIX", "Limits", "check_limit", "env_var", "get_limits", "override"]

#: Prefix of the environment variables that move the limits (``CLIPASSO_MAX_STROKES``, ...).
ENV_PREFIX = "CLIPASSO_"


@dataclass(frozen=True)
class Limits:
    """The resource limits (all inclusive: a value equal to the limit is accepted).

    Attributes:
        max_image_pixels: Pixels (width × height) of an image or mask file, checked from its header
            before any pixel is decoded. The default is Pillow's own hard limit
            (``2 × PIL.Image.MAX_IMAGE_PIXELS``); clipasso's check replaces Pillow's, so raising it
            here is enough.
        max_canvas_side: Side in pixels of the sketch canvas (``SketchConfig.image_size``,
            ``prepare_target(size=...)``).
        max_strokes: Strokes per sketch (``SketchConfig.num_strokes``, each count of a ladder).
        max_segments: Cubic segments per stroke (``SketchConfig.num_segments``, the strokes of a
            warm-start SVG).
        max_sketches: Candidates optimised together (``SketchConfig.num_sketches``).
        max_views: Random views per step and size of the target pool (``SketchConfig.num_views``,
            ``SketchConfig.target_pool``).
        max_iterations: Optimisation steps of a run (``SketchConfig.iterations``).
        max_svg_bytes: Size of an SVG document (file or text).
        max_svg_elements: XML elements of an SVG document, counted while it is parsed (so entity
            expansion cannot hide them), plus the elements ``<use>`` references instantiate.
        max_svg_depth: Nesting depth of an SVG's elements (the root is depth 1), counted the same way.
        max_svg_segments: Cubic segments read from one SVG document, all paths and shapes together.
        max_config_bytes: Size of a TOML configuration file.
    """

    max_image_pixels: int = 178_956_970
    max_canvas_side: int = 4096
    max_strokes: int = 1024
    max_segments: int = 64
    max_sketches: int = 64
    max_views: int = 1024
    max_iterations: int = 100_000
    max_svg_bytes: int = 32 * 1024 * 1024
    max_svg_elements: int = 100_000
    max_svg_depth: int = 256
    max_svg_segments: int = 100_000
    max_config_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"limit {f.name} must be a positive integer, got {value!r}")

    def replace(self, **changes: Any) -> Limits:
        """A copy with some limits changed (unknown names are an :class:`InputError`)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown limit(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """The defaults, each replaced by its environment variable (``CLIPASSO_<FIELD>``) when set.

        Args:
            environ: The environment to read (default ``os.environ``).

        Raises:
            InputError: A variable that is not a positive integer (the message names it).
        """
        env = os.environ if environ is None else environ
        changes: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            var = env_var(f.name)
            text = env.get(var)
            if text is None or not text.strip():
                continue
            try:
                value = int(text.strip().replace("_", ""))
            except ValueError:
                raise InputError(f"{var}={text!r} is not an integer") from None
            if value < 1:
                raise InputError(f"{var}={text!r} must be a positive integer")
            changes[f.name] = value
        return cls(**changes)


def env_var(name: str) -> str:
    """The environment variable of limit ``name``.

    Example:
        >>> env_var("max_image_pixels")
        'CLIPASSO_MAX_IMAGE_PIXELS'
    """
    return ENV_PREFIX + name.upper()


_OVERRIDE: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("clipasso_limits", default=None)


def get_limits() -> Limits:
    """The limits in force here: an enclosing :func:`override`, else the defaults and environment."""
    current = _OVERRIDE.get()
    return current if current is not None else Limits.from_env()


@contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Move some limits inside a ``with`` block (this thread or asyncio task only).

    Args:
        **changes: New values for fields of :class:`Limits`, on top of the limits in force.

    Yields:
        The limits in force inside the block.

    Raises:
        InputError: An unknown limit or a value that is not a positive integer.
    """
    new = get_limits().replace(**changes)
    token = _OVERRIDE.set(new)
    try:
        yield new
    finally:
        _OVERRIDE.reset(token)


def check_limit(value: int, name: str, what: str) -> None:
    """Raise :class:`~clipasso.errors.LimitError` when ``value`` is above the limit ``name``.

    Args:
        value: The size of the input.
        name: A field of :class:`Limits`.
        what: The input, for the message (e.g. ``"image photo.png (20000x20000 px)"``).

    Raises:
        LimitError: With ``name``, ``value`` and ``limit`` as attributes.

    Example:
        >>> check_limit(10, "max_strokes", "num_strokes")  # within the limit: nothing happens
        >>> try:
        ...     check_limit(10**6, "max_strokes", "num_strokes")
        ... except LimitError as exc:
        ...     exc.limit
        1024
    """
    limit = getattr(get_limits(), name)
    if value > limit:
        raise LimitError(
            f"{what} is {value}, above the limit {name} = {limit} "
            f"(set {env_var(name)} or use clipasso.limits.override({name}=...) to raise it)",
            name=name,
            value=value,
            limit=limit,
        )
