"""The optimisation engine: a loop with hooks that any program (the :class:`~clipasso.Sketcher`)
plugs into. It never imports the Sketcher; it drives the :class:`SketchProgram` protocol.

* :mod:`~clipasso.engine.state`: :class:`RunState`, the public state of a run.
* :mod:`~clipasso.engine.loop`: :class:`Engine`, the loop, one step, the evaluation, the NaN guard.
* :mod:`~clipasso.engine.candidates`: the early-stop rule, the race, best-of-N, results.
* :mod:`~clipasso.engine.checkpoint`: checkpoint files and :class:`Checkpointer`.
* :mod:`~clipasso.engine.schedule`: learning-rate schedules.
* :mod:`~clipasso.engine.callbacks`: :class:`Callback` with every hook, :class:`ProgressBar`.
"""

from .callbacks import Callback, ProgressBar
from .candidates import (
    candidates_from_state,
    early_stop_update,
    race_round,
    race_stops,
    race_survivors,
    select_best,
)
from .checkpoint import CHECKPOINT_VERSION, Checkpointer, fingerprint, read_checkpoint, write_checkpoint
from .loop import Engine, LoopSettings, SketchProgram
from .schedule import cosine_lr_factor, cosine_schedule
from .state import RunState

__all__ = [
    "CHECKPOINT_VERSION",
    "Callback",
    "Checkpointer",
    "Engine",
    "LoopSettings",
    "ProgressBar",
    "RunState",
    "SketchProgram",
    "candidates_from_state",
    "cosine_lr_factor",
    "cosine_schedule",
    "early_stop_update",
    "fingerprint",
    "race_round",
    "race_stops",
    "race_survivors",
    "read_checkpoint",
    "select_best",
    "write_checkpoint",
]
