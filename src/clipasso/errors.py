"""Exception types raised by clipasso.

Every error a user can cause (bad files, wrong shapes, impossible settings) is an
:class:`InputError`; problems with model weights are :class:`WeightsError`. Both derive
from :class:`ClipassoError`, so ``except clipasso.ClipassoError`` catches everything the
library raises on purpose. ``InputError`` is also a ``ValueError`` so generic code that
expects ``ValueError`` for bad arguments keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ClipassoError",
    "InputError",
    "NonFiniteLossError",
    "SVGError",
    "WeightsError",
]


class ClipassoError(Exception):
    """Base class of every exception clipasso raises deliberately."""


class InputError(ClipassoError, ValueError):
    """Bad user input: an unreadable file, a wrong shape, a NaN, an impossible setting."""


class SVGError(InputError):
    """An SVG document that cannot be turned into strokes (malformed or unsupported)."""


class WeightsError(ClipassoError, RuntimeError):
    """Model weights that cannot be downloaded, found, verified or read."""


class BackendUnavailableError(ClipassoError, RuntimeError):
    """A requested optional backend (e.g. diffvg) is not installed."""


class NonFiniteLossError(ClipassoError, FloatingPointError):
    """The objective became NaN or infinite during optimisation.

    Attributes:
        iteration: The iteration at which it happened.
        term: Name of the first loss term that was not finite.
        result: The best result found before the failure, when one exists.
    """

    def __init__(self, message: str, *, iteration: int, term: str, result: object | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.term = term
        self.result = result


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed (corrupt, or written with other settings)."""
