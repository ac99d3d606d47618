"""Free evaluations: an evaluation taken from the training step's own view 0 (issue 25)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from clipasso import Sketcher
from clipasso.losses import EdgeLoss, LossContext, PixelL2Loss, SketchLoss

SIZE = 96


def _image() -> torch.Tensor:
    img = torch.ones(3, SIZE, SIZE)
    img[:, 20:76, 24:70] = 0.25
    img[:, 36:56, 38:56] = 0.95
    return img


class Counting(Sketcher):
    """Counts the objective's evaluation-mode calls (the second forwards free evaluations save)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_calls = 0

    def compute_loss(
        self, sketch: torch.Tensor, target: Any, context: LossContext
    ) -> dict[str, torch.Tensor]:
        self.eval_calls += context.mode == "eval"
        return super().compute_loss(sketch, target, context)


def _pair(**settings: Any) -> tuple[Any, Any, Counting, Counting]:
    base: dict[str, Any] = dict(
        num_strokes=5, iterations=11, num_sketches=2, device="cpu", early_stop_patience=0
    )
    plain = Counting(**{**base, **settings})
    free = Counting(**{**base, **settings, "free_evaluations": True})
    return plain.sketch(_image()), free.sketch(_image()), plain, free


def _histories(result: Any) -> list[tuple[list[int], list[float], list[float]]]:
    return [
        (c.history.eval_iterations, c.history.eval["total"], c.history.train["total"])
        for c in result.candidates
    ]


def test_free_evaluations_of_the_edge_objective_are_bit_for_bit() -> None:
    """The edge term does not depend on the mode: its training value is its evaluation (any CPU)."""
    plain, free, p, f = _pair(loss="edges", initializer="random")
    assert _histories(plain) == _histories(free)
    assert all(
        torch.equal(a.strokes.points, b.strokes.points) for a, b in zip(plain.candidates, free.candidates)
    )
    assert (p.eval_calls, f.eval_calls) == (3, 1)  # steps 0 and 10 free; the final strokes' evaluation not


def test_free_evaluations_of_the_clip_objective(
    tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module
) -> None:
    """View 0's features come from the training batch, where the conv kernels see a larger batch than
    an evaluation's; the values agree to their rounding (on the AMX Xeon this was written on: bit for
    bit), and training is untouched (evaluations never feed back into it, only the early stop)."""
    from clipasso.testing import recalibrate_batchnorm, tiny_clip

    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    resnet = recalibrate_batchnorm(tiny_clip("resnet"), images)  # its own copy: the fixture stays as it is
    plain, free, p, f = _pair(clip_model=resnet, saliency_model=tiny_vit, precision="fp32", image_size=224)
    assert (p.eval_calls, f.eval_calls) == (3, 1)
    for a, b in zip(plain.candidates, free.candidates):
        assert a.history.train["total"] == b.history.train["total"]
        assert a.history.eval["total"] == pytest.approx(b.history.eval["total"], rel=1e-5)
        for term in a.history.eval:
            assert a.history.eval[term] == pytest.approx(b.history.eval[term], rel=1e-5)


class NoViews(SketchLoss):
    """A loss that cannot give its evaluation from a training step (depends on the mode)."""

    name = "modal"

    def compute(self, sketch: torch.Tensor, target: torch.Tensor, context: LossContext) -> torch.Tensor:
        per = ((sketch - target) ** 2).mean((1, 2, 3))
        return per * (1.5 if context.train else 1.0)


def test_any_term_without_a_free_evaluation_falls_back_to_a_second_forward() -> None:
    plain, free, p, f = _pair(loss=EdgeLoss() + NoViews(), initializer="random")
    assert f.eval_calls == p.eval_calls == 3
    assert _histories(plain) == _histories(free)


def test_weights_and_schedules_of_composed_terms_are_the_evaluations() -> None:
    """A term weighted 0.5 and one switched on at step 8: before step 8 the late term is not computed
    in training, so that evaluation falls back; after, both come free with the evaluation's weights."""
    loss = 0.5 * EdgeLoss() + (2.0 * PixelL2Loss()).after(8)
    plain, free, p, f = _pair(loss=loss, initializer="random")
    assert (p.eval_calls, f.eval_calls) == (3, 2)  # step 0 falls back; 10 is free; the final one is not
    assert _histories(plain) == _histories(free)


def test_nested_runs_fall_back() -> None:
    plain, free, p, f = _pair(loss="edges", initializer="random", nested=[2])
    assert f.eval_calls == p.eval_calls
    assert _histories(plain) == _histories(free)
