"""The live web demo (``clipasso demo``; ``pip install 'clipasso[demo]'`` for Gradio).

* :mod:`clipasso.demo.jobs`: a sketch run in a worker thread that streams frames (no web code);
* :mod:`clipasso.demo.service`: the page's functions (choices, one job per tab, messages);
* :mod:`clipasso.demo.app`: the Gradio page over them (Gradio is imported only there, when a page
  is built).

Example:
    >>> from clipasso.demo import DemoOptions
    >>> DemoOptions().preview_every
    5
"""

from __future__ import annotations

from .jobs import Frame, SketchJob, StreamCallback
from .service import BACKGROUNDS, OBJECTIVES, Background, DemoError, DemoOptions, DemoService, Update

__all__ = [
    "BACKGROUNDS",
    "OBJECTIVES",
    "Background",
    "DemoError",
    "DemoOptions",
    "DemoService",
    "Frame",
    "SketchJob",
    "StreamCallback",
    "Update",
]
