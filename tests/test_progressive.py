"""Progressive drawing: strokes added one by one where the sketch explains the target least (issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clipasso import Callback, Sketcher
from clipasso.data import sample_tensor
from clipasso.errors import InputError
from clipasso.progressive import ProgressiveDrawing
from clipasso.xdog import edge_ink

SIZE = 96


def _sketcher(**settings: Any) -> Sketcher:
    base: dict[str, Any] = dict(
        loss="edges",
        initializer="random",
        num_strokes=5,
        iterations=16,
        image_size=SIZE,
        num_sketches=2,
        device="cpu",
        schedule="progressive",
        reseed_every=0,
    )
    return Sketcher(**{**base, **settings})


class Watch(Callback):
    def __init__(self) -> None:
        self.drawn: list[list[int]] = []
        self.points: list[torch.Tensor] = []

    def on_step(self, sketcher: Any, state: Any) -> None:
        self.drawn.append((state.strokes.colors.detach()[..., 3] > 0).sum(dim=1).tolist())
        self.points.append(state.strokes.points.detach().clone())


def test_strokes_are_added_one_by_one_until_half_of_the_run() -> None:
    sk = _sketcher()
    sk.callbacks.insert(0, watch := Watch())  # before the schedule's callback: what each step drew
    result = sk.sketch(sample_tensor("house", size=SIZE)[0])
    # 4 strokes to add over 8 steps: one every 2 steps, after steps 1, 3, 5, 7
    assert [d[0] for d in watch.drawn] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5]
    assert bool((result.strokes.colors[..., 3] == 1).all())
    # a hidden stroke does not move before it is drawn
    assert torch.equal(watch.points[0][:, 4], watch.points[6][:, 4])


def test_a_new_stroke_goes_onto_edges_no_stroke_covers() -> None:
    sk = _sketcher(num_sketches=1, iterations=8, num_strokes=3, schedule_options={"start": 1, "every": 2})
    sk.callbacks.insert(0, watch := Watch())
    image = sample_tensor("house", size=SIZE)
    sk.sketch(image[0])
    edges = edge_ink(image)[0, 0] > 0.5
    second = watch.points[2][0, 1]  # placed after step 1
    xs, ys = second[:, 0].round().long().clamp(0, SIZE - 1), second[:, 1].round().long().clamp(0, SIZE - 1)
    near = torch.nn.functional.max_pool2d(edges[None, None].float(), 5, 1, 2)[0, 0] > 0
    assert bool(near[ys[0], xs[0]]) and bool(near[ys[-1], xs[-1]])  # its ends lie on the target's edges


def test_a_progressive_run_resumes_exactly(tmp_path: Path) -> None:
    class Kill(Callback):
        def on_step(self, sketcher: Any, state: Any) -> None:
            if state.iteration == 6:
                raise KeyboardInterrupt

    image = sample_tensor("mug", size=SIZE)[0]
    whole = _sketcher(checkpoint_every=4).sketch(image)
    killed = _sketcher(checkpoint_every=4)
    killed.callbacks.append(Kill())
    with pytest.raises(KeyboardInterrupt):
        killed.sketch(image, checkpoint=tmp_path / "c.ckpt")
    resumed = _sketcher(checkpoint_every=4).sketch(image, checkpoint=tmp_path / "c.ckpt")
    for a, b in zip(whole.candidates, resumed.candidates):
        assert torch.equal(a.strokes.points, b.strokes.points) and a.history.eval == b.history.eval


@pytest.mark.parametrize("bad", [{"start": 0}, {"every": 0}, {"until": 0.0}, {"stages": 3}])
def test_bad_schedule_options_are_refused_before_any_work(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        _sketcher(schedule_options=bad).build_callbacks()


def test_interval() -> None:
    assert ProgressiveDrawing(start=4).interval(2000, 16) == 83
    assert ProgressiveDrawing(every=7).interval(2000, 16) == 7
