"""A torchrun worker for tests/test_batch_torchrun.py: the command line, except that rank 1 dies
(``os._exit``, as a killed process would) during step 2 of its second image."""

from __future__ import annotations

import os
import sys
from typing import Any

from clipasso.callbacks import Callback
from clipasso.cli import main
from clipasso.sketcher import Sketcher


class Die(Callback):
    def on_step(self, sketcher: Any, state: Any) -> None:
        if state.iteration == 2:
            os._exit(17)


if os.environ.get("RANK") == "1":
    original = Sketcher.sketch
    images: list[Any] = []

    def sketch(self: Sketcher, image: Any = None, **kwargs: Any) -> Any:
        images.append(image)
        if len(images) == 2:
            self.callbacks = [*self.callbacks, Die()]
        return original(self, image, **kwargs)

    Sketcher.sketch = sketch  # type: ignore[method-assign]

sys.exit(main(sys.argv[1:]))
