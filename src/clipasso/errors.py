"""Exception types raised by clipasso.

Every error a user can cause (bad files, wrong shapes, impossible settings) is an
:class:`InputError`, with the subclasses :class:`SVGError`, :class:`CheckpointError` and
:class:`LimitError` (a value above a resource limit, see :mod:`clipasso.limits`); problems with
model weights are :class:`WeightsError`. All derive from :class:`ClipassoError`, so
``except clipasso.ClipassoError`` catches everything the library raises on purpose.
``InputError`` is also a ``ValueError`` so generic code that expects ``ValueError`` for bad
arguments keeps working. The command line turns each of them into one line and exit code 2
(docs/limits.md lists them).
"""

from __future__ import annotations

import copy
from typing import TypeVar

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ClipassoError",
    "InputError",
    "LimitError",
    "NonFiniteLossError",
    "SVGError",
    "SVGWarning",
    "WeightsError",
]


class ClipassoError(Exception):
    """Base class of every exception clipasso raises deliberately."""


class InputError(ClipassoError, ValueError):
    """Bad user input: an unreadable file, a wrong shape, a NaN, an impossible setting."""


class SVGError(InputError):
    """An SVG document that cannot be turned into strokes (malformed or unsupported)."""


class SVGWarning(UserWarning):
    """Parts of an SVG that are read only approximately or ignored (fills, text, images, ...)."""


class LimitError(InputError):
    """An input above a resource limit (:class:`clipasso.limits.Limits`).

    Attributes:
        name: The limit's name (a field of :class:`~clipasso.limits.Limits`).
        value: The input's size.
        limit: The limit in force.
    """

    def __init__(self, message: str, *, name: str = "", value: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.name = name
        self.value = value
        self.limit = limit


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


_E = TypeVar("_E", bound=BaseException)


def _with_prefix(exc: _E, prefix: str) -> _E:
    """A copy of ``exc`` (same type and attributes) whose message starts with ``prefix``."""
    new = copy.copy(exc)
    new.args = (prefix + str(exc), *exc.args[1:])
    return new
