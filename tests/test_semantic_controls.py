"""Semantic controls: text prompts (with an image and without), the fidelity axis, and the default
objective left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import clip
import pytest
import torch
from torch import Tensor

from clipasso import Sketcher
from clipasso.cli import main
from clipasso.config import SketchConfig
from clipasso.errors import InputError
from clipasso.init import RandomInitializer, SVGInitializer
from clipasso.losses import (
    CLIPConvLoss,
    CLIPSemanticLoss,
    CLIPViTLayerLoss,
    ComposedLoss,
    LossContext,
    PixelL2Loss,
)
from clipasso.testing import recalibrate_batchnorm, tiny_clip, tiny_clip_file


def _image(size: int = 224) -> Tensor:
    """A dark disc on white, [3, size, size] (as tests/test_sketcher.py)."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    disc = (r < size * 0.3).float()
    return (1 - 0.8 * disc).expand(3, -1, -1).contiguous()


_RUN: dict[str, Any] = dict(num_strokes=4, iterations=3, num_sketches=2, eval_every=2, device="cpu")


@pytest.fixture(scope="module")
def calibrated_resnet() -> torch.nn.Module:
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    return recalibrate_batchnorm(tiny_clip("resnet", seed=0), images)


# --- the default objective does not change -------------------------------------------------------


def test_default_objective_and_its_numbers_are_unchanged(
    calibrated_resnet: torch.nn.Module, tiny_vit: torch.nn.Module
) -> None:
    """The default settings build the reference objective, and it gives the numbers recorded on main
    before text prompts and fidelity existed (commit cc62367). Only ``precision`` is pinned (to fp32):
    its default, ``"auto"``, picks bf16 on CPUs with AMX, so the recorded numbers would depend on the
    machine. The values are the first training step and the first evaluation, before any Adam step
    (Adam would amplify rounding differences between CPUs)."""
    cfg = SketchConfig()
    assert (cfg.text, cfg.fidelity, cfg.canvas_size, cfg.text_model) == (None, None, None, None)
    assert (cfg.loss, cfg.loss_options, cfg.precision) == ("clip_conv", {}, "auto")
    sk = Sketcher(
        clip_model=calibrated_resnet,
        saliency_model=tiny_vit,
        precision="fp32",
        num_strokes=4,
        iterations=1,
        num_sketches=2,
        eval_every=5,
        device="cpu",
    )
    loss = sk.build_loss()
    assert type(loss) is CLIPConvLoss and loss.term_names() == ["conv_layer2", "conv_layer3", "fc"]
    assert (loss.layers, loss.fc_weight, loss.distance) == ({"layer2": 1.0, "layer3": 1.0}, 0.1, "l2")
    assert (loss.augment.num_views, loss.identity_weight) == (4, None)
    result = sk.sketch(_image(224))
    recorded = {  # seed: (training terms of step 0, evaluation at step 0)
        0: (
            {
                "conv_layer2": 1.2771304845809937,
                "conv_layer3": 12.735748291015625,
                "fc": 0.018712803721427917,
            },
            {
                "conv_layer2": 1.9528224468231201,
                "conv_layer3": 19.491737365722656,
                "fc": 0.032901253551244736,
            },
        ),
        1000: (
            {"conv_layer2": 1.4734569787979126, "conv_layer3": 14.62551498413086, "fc": 0.026996199041604996},
            {"conv_layer2": 1.9817661046981812, "conv_layer3": 19.63170051574707, "fc": 0.03342154249548912},
        ),
    }
    for cand in result.candidates:
        train, evaluation = recorded[cand.seed]
        assert sorted(cand.history.train) == sorted([*train, "total"])
        assert sorted(cand.history.eval) == sorted([*evaluation, "total"])
        # fc is 0.1 (1 - cos) of embeddings whose cosine is near 1: fp32 kernels that sum in another
        # order (AMD EPYC against the Xeon the numbers were recorded on) move it by ~7e-7 absolute,
        # 3e-5 of its value, hence an absolute bar for it beside the relative one
        for key, value in train.items():
            assert cand.history.train[key][0] == pytest.approx(value, rel=1e-5, abs=5e-6), key
        for key, value in evaluation.items():
            assert cand.history.eval[key][0] == pytest.approx(value, rel=1e-5, abs=5e-6), key
        assert cand.history.eval["total"][0] == pytest.approx(sum(evaluation.values()), rel=1e-5)


# --- text with an image ----------------------------------------------------------------------------


def test_text_with_an_image_replaces_the_semantic_term_and_keeps_the_geometry(
    tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module
) -> None:
    sk = Sketcher(clip_model=tiny_resnet, saliency_model=tiny_vit, text_model=tiny_vit, text="a cat", **_RUN)
    assert sk.config.text == ["a cat"]
    loss = sk.build_loss()
    assert isinstance(loss, ComposedLoss)
    assert loss.term_names() == ["conv_layer2", "conv_layer3", "clip_semantic"]  # fc gave way to the text
    conv, text = loss.terms[0].loss, loss.terms[1].loss
    assert (
        isinstance(conv, CLIPConvLoss) and conv.fc_weight == 0.0 and conv.layers == {"layer2": 1, "layer3": 1}
    )
    assert isinstance(text, CLIPSemanticLoss) and text.prompts == ["a cat"]
    assert text.model.get(torch.device("cpu")) is tiny_vit
    assert (loss.terms[1].weight, loss.terms[1].start) == (1.0, 0)  # the documented defaults
    result = sk.sketch(_image())
    assert set(result.best.history.train) == {"conv_layer2", "conv_layer3", "clip_semantic", "total"}
    # an explicit fc_weight keeps the image's semantic term beside the prompt
    both = Sketcher(
        clip_model=tiny_resnet, text_model=tiny_vit, text="a cat", loss_options={"fc_weight": 0.1}
    )
    assert both.build_loss().term_names() == ["conv_layer2", "conv_layer3", "fc", "clip_semantic"]
    # loss="clip_semantic": the prompt is that term's target, and its options apply
    sem = Sketcher(clip_model=tiny_vit, text="a cat", loss="clip_semantic", loss_options={"num_views": 2})
    only = sem.build_loss()
    assert only.term_names() == ["clip_semantic"]
    part = only.terms[0].loss  # type: ignore[attr-defined]
    assert part.prompts == ["a cat"] and part.augment.num_views == 2
    assert part.model.get(torch.device("cpu")) is tiny_vit  # clip_model, as text_model is unset
    # any other loss keeps all its terms and gains the text term
    edges = Sketcher(
        loss="edges", text_model=tiny_vit, text=["a cat", "a dog"], text_weight=0.5, text_start=7
    )
    built = edges.build_loss()
    assert built.term_names() == ["edge", "clip_semantic"]
    assert (built.terms[1].weight, built.terms[1].start) == (0.5, 7)  # type: ignore[attr-defined]


def test_a_late_text_term_counts_in_every_evaluation(
    tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module
) -> None:
    """Evaluations score the objective with every schedule at its last step's weight: a text term that
    starts at step 4 is part of the score from step 0, so the best strokes are chosen on one measure
    (otherwise the lower scores before it starts would always win)."""
    sk = Sketcher(
        clip_model=tiny_resnet,
        saliency_model=tiny_vit,
        text_model=tiny_vit,
        text="a cat",
        text_start=4,
        **_RUN,
    )
    result = sk.sketch(_image(), iterations=6)
    hist = result.best.history
    assert hist.train["clip_semantic"][:4] == [0.0] * 4 and all(
        v > 0 for v in hist.train["clip_semantic"][4:]
    )
    assert hist.eval_iterations[0] == 0 and hist.eval["clip_semantic"][0] > 0.1  # counted before step 4
    total = [sum(hist.eval[k][i] for k in ("conv_layer2", "conv_layer3", "clip_semantic")) for i in range(2)]
    assert hist.eval["total"][:2] == pytest.approx(total, rel=1e-6)
    # the training step itself still follows the schedule (0 before step 4, as LossContext says)
    late = sk.loss(_image()[None], _image()[None], LossContext(iteration=3, mode="eval"))
    assert float(late["clip_semantic"][0]) == 0.0


# --- text without an image -------------------------------------------------------------------------


def test_a_sketch_of_a_prompt_without_an_image(
    tiny_vit: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenised: list[list[str]] = []
    real = clip.tokenize
    monkeypatch.setattr(clip, "tokenize", lambda t, *a, **k: tokenised.append(list(t)) or real(t, *a, **k))
    sk = Sketcher(text="a drawing of a cat", text_model=tiny_vit, canvas_size=160, text_start=50, **_RUN)
    result = sk.sketch()
    assert result.target.image.shape == (1, 3, 160, 160) and bool((result.target.image == 1).all())
    assert result.strokes.canvas_size == (160, 160) and result.strokes.num_strokes == 4
    assert set(result.best.history.train) == {"clip_semantic", "total"}
    assert all(v > 0 for v in result.best.history.train["clip_semantic"])  # on from step 0 (no image)
    assert all(c.init is not None and c.init.relevance is None for c in result.candidates)  # random strokes
    assert isinstance(sk._blank_initializer, RandomInitializer)
    again = sk.sketch(seed=5)  # the Sketcher keeps the text term: tokenised and embedded once
    assert {c.seed for c in again.candidates} == {5, 1005} and tokenised == [["a drawing of a cat"]]
    fresh = Sketcher(text="a drawing of a cat", text_model=tiny_vit, canvas_size=160, **_RUN).sketch()
    torch.testing.assert_close(fresh.candidates[0].strokes.points, result.candidates[0].strokes.points)


def test_a_prompt_sketch_can_start_from_an_svg(tiny_vit: torch.nn.Module) -> None:
    start = Sketcher(text="a cat", text_model=tiny_vit, **{**_RUN, "num_sketches": 1}).sketch()
    sk = Sketcher(
        text="a cat",
        text_model=tiny_vit,
        initializer="svg",
        initializer_options={"source": start.svg()},
        **{**_RUN, "num_sketches": 1, "num_strokes": 6, "iterations": 0},
    )
    result = sk.sketch()
    init = sk._blank_initializer
    assert isinstance(init, SVGInitializer) and init.top_up == "random"  # 2 more strokes, drawn at random
    assert result.strokes.num_strokes == 6
    torch.testing.assert_close(result.strokes.points[0, :4], start.strokes.points[0], atol=1e-3, rtol=0)


def test_runs_without_an_image_are_validated(tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="nothing to sketch"):
        Sketcher(clip_model=tiny_resnet, **_RUN).sketch()
    for bad in (8, 0, -224, 4097, True, 100.5, "224"):  # 4097: above the max_canvas_side limit
        with pytest.raises(InputError, match="canvas_size"):
            Sketcher(text="a cat", canvas_size=bad)
    with pytest.raises(InputError, match="canvas_size is the canvas of a run without an image"):
        Sketcher(clip_model=tiny_resnet, saliency_model=tiny_vit, canvas_size=160, **_RUN).sketch(_image())
    with pytest.raises(InputError, match="needs an image"):
        Sketcher(text="a cat", text_model=tiny_vit, fidelity=1, **_RUN).sketch()
    with pytest.raises(InputError, match="mask needs an image"):
        Sketcher(text="a cat", text_model=tiny_vit, **_RUN).sketch(mask=torch.ones(1, 224, 224))
    for bad_text in ([], [""], ["  "], [3], "", ["ok", None]):
        with pytest.raises(InputError, match="text"):
            SketchConfig(text=bad_text)  # type: ignore[arg-type]
    for key, value in (
        ("text_weight", 0),
        ("text_weight", float("inf")),
        ("text_start", -1),
        ("text_model", ""),
    ):
        with pytest.raises(InputError, match=key):
            SketchConfig(**{key: value})


def test_a_given_loss_object_gets_the_text_term(tiny_vit: torch.nn.Module) -> None:
    own = PixelL2Loss()
    sk = Sketcher(loss=own, text="a cat", text_model=tiny_vit, initializer="random", **_RUN)
    assert sk.loss.term_names() == ["pixel_l2", "clip_semantic"]
    assert sk.build_blank_loss().term_names() == ["pixel_l2", "clip_semantic"]
    assert Sketcher(loss=own, **_RUN).loss is own  # without text: the object itself


# --- fidelity ---------------------------------------------------------------------------------------


def test_fidelity_selects_the_vit_block_of_the_geometric_term(tiny_vit: torch.nn.Module) -> None:
    sk = Sketcher(clip_model=tiny_vit, saliency_model=tiny_vit, fidelity=2, **_RUN)
    loss = sk.build_loss()
    assert isinstance(loss, CLIPViTLayerLoss)
    assert (
        loss.layers == {"block2": 1.0}
        and loss.fc_weight == 0.1
        and loss.term_names() == ["vit_block2", "vit_fc"]
    )
    assert loss.augment.num_views == 4  # the config's views reach it
    result = sk.sketch(_image())
    assert set(result.best.history.eval) == {"vit_block2", "vit_fc", "total"}
    # with text: the prompt replaces the embedding term
    with_text = Sketcher(clip_model=tiny_vit, text_model=tiny_vit, fidelity=0, text="a cat").build_loss()
    assert with_text.term_names() == ["vit_block0", "clip_semantic"]
    # loss="clip_vit_layer": its options apply, fidelity sets the block
    opts = Sketcher(clip_model=tiny_vit, fidelity=1, loss="clip_vit_layer", loss_options={"distance": "cos"})
    built = opts.build_loss()
    assert isinstance(built, CLIPViTLayerLoss) and built.distance == "cos" and built.layers == {"block1": 1.0}
    for bad in (dict(fidelity=-1), dict(fidelity=True), dict(fidelity=1.5)):
        with pytest.raises(InputError, match="fidelity"):
            SketchConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cannot go with"):
        SketchConfig(fidelity=2, loss="edges")
    with pytest.raises(InputError, match="loss_options would not apply"):
        SketchConfig(fidelity=2, loss_options={"fc_weight": 0.0})
    with pytest.raises(InputError, match="not both"):
        SketchConfig(fidelity=2, loss="clip_vit_layer", loss_options={"layers": 3})
    with pytest.raises(InputError, match="3 blocks"):  # ViT-B/32's block 11; the tiny ViT has 3
        Sketcher(clip_model=tiny_vit, saliency_model=tiny_vit, fidelity=11).load()


# --- the command line -------------------------------------------------------------------------------


_FAST = ["--iterations", "2", "--num-sketches", "1", "--strokes", "3", "-q", "--device", "cpu"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("clipasso: error:")
    return err[0]


def test_cli_sketches_a_prompt_without_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vit = str(tiny_clip_file("vit"))
    args = ["sketch", "--text", "a drawing of a cat", "--text", "a cat", "--text-model", vit]
    code = main([*args, "--canvas-size", "128", "-o", str(tmp_path / "out"), *_FAST])
    assert code == 0
    folder = tmp_path / "out" / "a_drawing_of_a_cat"
    assert (folder / "sketch.svg").read_text().count("<path") == 3
    assert 'width="128"' in (folder / "sketch.svg").read_text()
    assert not (folder / "saliency.png").exists()  # random strokes: no saliency map
    config = json.loads((folder / "config.json").read_text())
    assert config["image"] is None and config["config"]["text"] == ["a drawing of a cat", "a cat"]
    line = capsys.readouterr().out.strip()
    assert line.startswith("'a drawing of a cat | a cat': best loss")


def test_cli_semantic_flags_round_trip_through_print_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--text", "a drawing of a cat", "--text", 'a "quoted" dog', "--text-weight", "0.5"]
    flags += ["--text-start", "100", "--text-model", "ViT-B/16", "--canvas-size", "320", "--fidelity", "7"]
    assert main(["sketch", "--print-config", *flags]) == 0
    text = capsys.readouterr().out
    assert 'text = ["a drawing of a cat", "a \\"quoted\\" dog"]' in text
    for line in ("text_weight = 0.5", "text_start = 100", 'text_model = "ViT-B/16"', "canvas_size = 320"):
        assert line in text
    assert "fidelity = 7" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["sketch", "--print-config", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out == text
    assert main(["sketch", "--print-config"]) == 0
    assert "text =" not in capsys.readouterr().out  # None settings are left out: no text by default


def test_cli_semantic_usage_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "disc.png"
    from PIL import Image

    Image.fromarray((_image(64).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(image)
    out = ["-o", str(tmp_path / "out")]
    assert main(["sketch", "--text", "a cat", "--canvas-size", "8", *out]) == 2
    assert "canvas_size" in _one_line_error(capsys)
    assert main(["sketch", "--text", "a cat", "--canvas-size", "99999", *out]) == 2
    assert "max_canvas_side" in _one_line_error(capsys)
    assert main(["sketch", str(image), "--canvas-size", "128", *out]) == 2
    assert "--canvas-size" in _one_line_error(capsys)
    assert main(["sketch", "--text", "a cat", "--fidelity", "2", *out]) == 2
    assert "needs an IMAGE" in _one_line_error(capsys)
    assert main(["sketch", *out]) == 2
    assert "--text PROMPT" in _one_line_error(capsys)
    assert main(["sketch", str(image), "--fidelity", "-2", *out]) == 2
    assert "fidelity" in _one_line_error(capsys)
    assert main(["sketch", "--text", "", *out]) == 2
    assert "text" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()
