"""Callbacks: hooks into a sketch run (defined in :mod:`clipasso.engine.callbacks`, re-exported here).

:class:`SketchState` is the run's live :class:`~clipasso.engine.RunState` (one object: what a callback
reads is what the run uses, and what it changes through the documented fields changes the run).

Example:
    >>> class PrintEval(Callback):
    ...     def on_eval(self, sketcher, state):
    ...         print(state.iteration, state.eval_loss)
"""

from __future__ import annotations

from .engine.callbacks import Callback, ProgressBar
from .engine.state import RunState

#: The state callbacks receive: the run's :class:`~clipasso.engine.RunState`.
SketchState = RunState

__all__ = ["Callback", "ProgressBar", "SketchState"]
