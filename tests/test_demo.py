"""The web demo's functions, without a server: the streaming job, the service, the page's wiring."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from clipasso import Sketcher
from clipasso.data import sample_tensor
from clipasso.demo import BACKGROUNDS, OBJECTIVES, DemoError, DemoOptions, DemoService, SketchJob
from clipasso.demo.service import ladder_of, parse_strokes, presets, weights_message
from clipasso.errors import WeightsError
from clipasso.testing import tiny_clip_file

SIDE = 48
RUN = {"strokes": 4, "preset": "default", "objective": "edges", "background": "keep", "iterations": 5}


def edge_sketcher(**settings: Any) -> Sketcher:
    base = {"num_strokes": 4, "iterations": 9, "num_sketches": 2, "image_size": SIDE, "device": "cpu"}
    return Sketcher(loss="edges", initializer="edges", **{**base, **settings})


@pytest.fixture()
def service(tmp_path: Path) -> Any:
    svc = DemoService(
        DemoOptions(settings={"image_size": SIDE, "num_sketches": 1}, workdir=tmp_path / "work")
    )
    yield svc
    svc.close()


# ------------------------------------------------------------------------------ the job


def test_job_streams_frames_of_the_moving_strokes() -> None:
    job = SketchJob(edge_sketcher(), sample_tensor("house", size=SIDE)[0], every=3).start()
    frames = [f for f in job.frames() if f is not None]
    result = job.result(timeout=120)
    assert [f.iteration for f in frames][-1] == 8 and frames[0].iteration == 0  # first and last step
    assert all(f.image.shape == (SIDE, SIDE, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(b.iteration > a.iteration for a, b in itertools.pairwise(frames))
    assert not np.array_equal(frames[0].image, frames[-1].image)  # the strokes moved
    assert [i for i, _ in frames[-1].losses] == list(range(9))  # one training loss per step
    assert frames[-1].best_loss >= result.best_loss  # the final evaluation comes after the last frame
    assert len(result.candidates) == 2 and not job.stopped


def test_job_stop_ends_early_and_keeps_the_best() -> None:
    sketcher = edge_sketcher(iterations=5000, num_sketches=1)
    job = SketchJob(sketcher, sample_tensor("mug", size=SIDE)[0], every=1).start()
    for frame in job.frames():
        if frame is not None and frame.iteration >= 3:
            job.stop()
    result = job.result(timeout=120)
    assert job.stopped and result.best.stop_iteration < 100
    assert result.best_iteration <= result.best.stop_iteration
    assert result.best_loss == min(result.history.eval["total"])  # the best evaluation is what is kept
    assert sketcher.callbacks == []  # the stream was only added for the run


def test_job_hands_over_the_runs_error() -> None:
    job = SketchJob(edge_sketcher(), "/no/such/picture.png").start()
    assert [f for f in job.frames() if f is not None] == []
    with pytest.raises(Exception, match=r"picture\.png"):
        job.result(timeout=60)


def test_job_heartbeat_yields_while_nothing_new() -> None:
    gate = threading.Event()

    class Slow(Sketcher):
        def prepare(self, image: Any, mask: Any = None) -> Any:
            gate.wait(30)
            return super().prepare(image, mask)

    job = SketchJob(
        Slow(
            loss="edges",
            initializer="edges",
            num_strokes=2,
            iterations=2,
            num_sketches=1,
            image_size=SIDE,
            device="cpu",
        ),
        torch.rand(3, SIDE, SIDE),
    ).start()
    frames = job.frames(heartbeat=0.05)
    assert next(frames) is None  # nothing yet: a heartbeat, so the reader can check on its page
    gate.set()
    assert [f for f in frames if f is not None]
    job.result(timeout=60)


# ------------------------------------------------------------------------------ the service


def test_choices_cover_the_registries() -> None:
    from clipasso.config import PRESETS
    from clipasso.losses import list_losses

    assert set(OBJECTIVES.values()) <= set(list_losses())
    assert presets() == ["default", *PRESETS]
    assert "keep" in BACKGROUNDS and BACKGROUNDS["keep"].build_matting() is None


def test_config_layers_preset_server_settings_and_page(tmp_path: Path) -> None:
    svc = DemoService(DemoOptions(settings={"image_size": 64, "iterations": 7}, workdir=tmp_path))
    cfg = svc.config(strokes=9, preset="fast", objective="edges", iterations=11)
    assert (cfg.num_strokes, cfg.iterations, cfg.image_size) == (9, 11, 64)
    assert cfg.prune_after == 50 and cfg.loss == "edges" and cfg.initializer == "edges"  # fast; weights-free
    clip = svc.config(strokes=9, preset="reference", objective="CLIP", iterations=11)
    assert clip.loss == "clip_conv" and clip.initializer == "saliency" and clip.precision == "fp32"
    with_weights = DemoService(DemoOptions(clip_weights="a.pt", saliency_weights="b.pt", workdir=tmp_path))
    cfg = with_weights.config(strokes=4, preset="default", objective="edges", iterations=3)
    assert (cfg.clip_model, cfg.saliency_model, cfg.initializer) == ("a.pt", "b.pt", "saliency")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"preset": "fastest"}, "unknown preset 'fastest'; choose one of default, fast, reference"),
        ({"objective": "pixels"}, "unknown objective 'pixels'; choose one of CLIP, edges"),
        ({"background": "remove"}, "unknown background handling 'remove'; choose one of keep"),
        ({"iterations": 0}, "iterations must be from 1 to 2000, got 0"),
        ({"iterations": 2.5}, "iterations must be a whole number, got 2.5"),
        ({"strokes": 0}, "num_strokes"),
        ({"strokes": "four"}, "strokes: a number (16), a ladder of counts (4,8,16,32) or auto, got 'four'"),
        ({"strokes": "4,x"}, "strokes: a number"),
        ({"strokes": "8,0"}, "nested"),
        ({"strokes": "auto", "abstraction": 1.5}, "abstraction"),
    ],
)
def test_bad_choices_are_refused_clearly(service: DemoService, change: dict[str, Any], message: str) -> None:
    with pytest.raises(DemoError, match=re.escape(message)):
        list(service.run("tab", None, "house", **{**RUN, **change}))


def test_strokes_are_a_count_a_ladder_or_auto() -> None:
    assert parse_strokes("16") == 16 and parse_strokes(12.0) == 12 and parse_strokes(" 7 ") == 7
    assert parse_strokes("16,4, 8") == [4, 8, 16] and parse_strokes("8,8") == 8
    assert parse_strokes("AUTO") == "auto"
    for bad in ("", "auto,4", "4.5", "1e3", None, [4, 8], True):
        with pytest.raises(DemoError, match="strokes"):
            parse_strokes(bad)


def test_a_ladder_and_auto_are_one_nested_run_of_the_library(tmp_path: Path) -> None:
    svc = DemoService(DemoOptions(settings={"auto_max_strokes": 24}, workdir=tmp_path))
    run = {"preset": "default", "objective": "edges", "iterations": 5}
    ladder = svc.config(strokes="4,16,8", **run)
    assert (ladder.num_strokes, ladder.nested, ladder.auto_strokes) == (16, [4, 8], False)
    auto = svc.config(strokes="auto", abstraction=0.3, **run)
    assert (auto.num_strokes, auto.auto_strokes, auto.abstraction) == (24, True, 0.3)
    assert auto.prefix_set() == [1, 2, 4, 8, 16, 24]
    assert svc.config(strokes="auto", **run).abstraction == 0.1 == svc.default_abstraction()
    plain = svc.config(strokes="9", abstraction=0.5, **run)  # the slider only matters for auto
    assert (plain.num_strokes, plain.nested, plain.auto_strokes, plain.abstraction) == (9, None, False, 0.1)


def test_a_ladder_run_shows_its_rungs_and_offers_them(service: DemoService) -> None:
    updates = list(service.run("tab", None, "house", **{**RUN, "strokes": "2,4,6"}))
    assert updates[0].ladder == ()  # a new run clears the last one's ladder
    assert all(u.ladder is None for u in updates[1:-1])
    last = updates[-1]
    assert last.ladder is not None and [r.strokes for r in last.ladder] == [2, 4, 6]
    assert [r.caption for r in last.ladder] == ["2 strokes", "4 strokes", "6 strokes"] and last.chosen is None
    assert all(r.image.shape == (SIDE, SIDE, 3) for r in last.ladder)
    ink = [int((255 - r.image.astype(int)).sum()) for r in last.ladder]
    assert ink[0] < ink[1] < ink[2]  # each rung has more strokes than the last
    np.testing.assert_array_equal(last.ladder[-1].image, last.image)  # the full sketch is shown
    assert "ladder 2, 4, 6 from one nested run" in last.status
    assert last.files is not None and set(last.files) == {"svg", "png", "gif", "ladder"}
    assert last.files["svg"].read_text().count("<path") == 6
    assert Image.open(last.files["ladder"]).size == (3 * SIDE + 2 * 8, SIDE)


def test_auto_shows_the_chosen_count_and_offers_both_sketches(tmp_path: Path) -> None:
    svc = DemoService(
        DemoOptions(settings={"image_size": SIDE, "num_sketches": 1, "auto_max_strokes": 8}, workdir=tmp_path)
    )
    try:
        last = list(svc.run("tab", None, "mug", **{**RUN, "strokes": "auto", "abstraction": 0.3}))[-1]
    finally:
        svc.close()
    assert last.done and last.chosen is not None and 1 <= last.chosen <= 8
    assert last.ladder is not None
    counts = [r.strokes for r in last.ladder]
    assert set(counts) == {1, 2, 4, 8, last.chosen} and counts == sorted(counts)
    assert [r.strokes for r in last.ladder if r.chosen] == [last.chosen]
    assert f"auto chose {last.chosen} of 8 strokes (abstraction 0.3)" in last.status
    assert last.files is not None and set(last.files) == {"svg", "png", "gif", "ladder", "full_svg"}
    assert last.files["svg"].read_text().count("<path") == last.chosen
    assert last.files["full_svg"].read_text().count("<path") == 8
    chosen = next(r for r in last.ladder if r.chosen)
    np.testing.assert_array_equal(chosen.image, last.image)  # the page shows the chosen sketch


def test_ladder_of_a_plain_run_is_empty() -> None:
    result = edge_sketcher(iterations=2, num_sketches=1).sketch(sample_tensor("house", size=SIDE)[0])
    assert ladder_of(result) == []


def test_bad_uploads_and_no_image_say_what_to_do(service: DemoService, tmp_path: Path) -> None:
    text = tmp_path / "holiday.png"
    text.write_text("not a picture")
    with pytest.raises(
        DemoError, match=r"^cannot use this image: cannot read image holiday.png: not an image"
    ):
        list(service.run("tab", str(text), None, **RUN))
    with pytest.raises(DemoError, match="no image: upload a picture or pick a sample"):
        list(service.run("tab", None, None, **RUN))
    with pytest.raises(DemoError, match="is gone; upload it again"):
        list(service.run("tab", str(tmp_path / "vanished.png"), None, **RUN))
    with pytest.raises(DemoError, match="unknown sample 'cow'"):
        list(service.run("tab", None, "cow", **RUN))
    assert service.running() == []


def test_missing_weights_point_to_the_flags(tmp_path: Path) -> None:
    svc = DemoService(
        DemoOptions(
            settings={"image_size": SIDE},
            clip_weights=str(tmp_path / "RN101.pt"),
            saliency_weights=str(tiny_clip_file("vit")),
            workdir=tmp_path / "w",
        )
    )
    with pytest.raises(DemoError) as caught:
        list(svc.run("tab", None, "house", **{**RUN, "objective": "CLIP"}))
    said = str(caught.value)
    assert said.startswith("CLIP weights are missing: CLIP weights ") and "RN101.pt" in said
    assert "clipasso demo --clip-weights FILE --saliency-weights FILE" in said and "'edges'" in said
    assert svc.running() == []
    assert weights_message(WeightsError("x\n  y.")).startswith("CLIP weights are missing: x y. Start")


def test_run_streams_then_hands_over_the_downloads(service: DemoService) -> None:
    updates = list(service.run("tab", None, "house", **RUN))
    assert updates[0].image is None and not updates[0].done
    shown = [u for u in updates if u.image is not None]
    assert len(shown) >= 2 and all(u.image.shape == (SIDE, SIDE, 3) for u in shown)
    last = updates[-1]
    assert last.done and last.status.startswith("done: best loss")
    assert last.files is not None and set(last.files) == {"svg", "png", "gif"}
    assert last.files["svg"].read_text().count("<path") == 4
    assert Image.open(last.files["png"]).size == (2 * SIDE, 2 * SIDE)
    assert Image.open(last.files["gif"]).format == "GIF"
    assert [i for i, _ in last.losses or ()] == list(range(5))
    assert service.running() == []


def test_one_job_per_tab_and_stop_by_tab(service: DemoService) -> None:
    long = service.run("tab-a", None, "house", **{**RUN, "iterations": 2000})
    assert next(long).status.startswith("loading")
    next(long)  # the job has started
    assert service.running() == ["tab-a"]
    with pytest.raises(DemoError, match="this tab already has a sketch running"):
        list(service.run("tab-a", None, "mug", **RUN))
    other = list(service.run("tab-b", None, "mug", **RUN))  # another tab is not blocked by it
    assert other[-1].done
    assert service.stop("tab-b") is False and service.stop("tab-a") is True
    rest = list(long)
    assert rest[-1].done and rest[-1].status.startswith("stopped, kept the best so far")
    assert service.running() == []


def test_closing_the_stream_stops_the_run(service: DemoService) -> None:
    stream = service.run("tab", None, "house", **{**RUN, "iterations": 2000})
    next(stream)
    next(stream)
    job = service._jobs["tab"]
    stream.close()  # what a closed browser tab does to the generator
    assert job.done and job.stopped and service.running() == []
    assert list(service.run("tab", None, "house", **RUN))[-1].done  # the tab can run again


def test_samples_are_written_once_with_their_mask(service: DemoService) -> None:
    path = service.sample_path("house")
    assert Image.open(path).mode == "RGBA" and path.stat().st_size > 0
    assert service.sample_path("house") == path
    assert {"house", "mug"} <= set(service.samples())


def test_old_outputs_are_removed(tmp_path: Path) -> None:
    svc = DemoService(
        DemoOptions(settings={"image_size": SIDE, "num_sketches": 1}, keep_jobs=2, workdir=tmp_path)
    )
    folders = [
        list(svc.run("t", None, "house", **{**RUN, "iterations": 1}))[-1].files["svg"].parent
        for _ in range(3)
    ]
    assert not folders[0].exists() and folders[1].exists() and folders[2].exists()


def test_the_service_reuses_its_sketcher(service: DemoService) -> None:
    list(service.run("tab", None, "house", **RUN))
    list(service.run("tab", None, "mug", **RUN))
    assert len(service._sketchers) == 1  # same settings: the models stay loaded


def test_importing_clipasso_and_the_demo_does_not_import_gradio() -> None:
    code = (
        "import sys, clipasso, clipasso.demo, clipasso.demo.app, clipasso.cli; print('gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ the page


class _Request:
    def __init__(self, session: str) -> None:
        self.session_hash = session


def test_the_page_wires_the_service(service: DemoService) -> None:
    pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'clipasso[demo]'")
    import os

    from clipasso.demo.app import build_app

    page = build_app(service, concurrency=1)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    names = {fn.api_name: fn for fn in page.fns.values()}
    assert set(names) >= {"run", "stop", "sample"}
    run = names["run"]
    assert run.concurrency_limit == 1 and run.trigger_mode == "once" and not run.preprocess
    ids = [getattr(c, "elem_id", None) for c in run.inputs]
    assert ids[2] == "strokes" and ids[-1] == "abstraction"
    assert [getattr(c, "elem_id", None) for c in run.outputs][-3:] == [
        "ladder",
        "download-ladder",
        "download-full-svg",
    ]
    # the page's function turns the service's updates into the components' values
    outputs = list(run.fn(None, "house", "2,4", "default", "edges", "keep", 3, 0.1, _Request("page")))
    first, last = outputs[0], outputs[-1]
    assert first[6] == {"__type__": "update", "value": None, "visible": False}  # the old ladder goes
    assert last[0].startswith("done") and "ladder 2, 4" in last[0]
    gallery = last[6]
    assert gallery["visible"] and [caption for _, caption in gallery["value"]] == ["2 strokes", "4 strokes"]
    assert Path(last[7]["value"]).name == "ladder.png" and last[7]["visible"]
    assert last[8] == {"__type__": "update", "visible": False}  # no full SVG: not an automatic count
    assert names["stop"].queue is False


def test_cli_demo_refuses_bad_flags_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    from clipasso.cli import EXIT_USAGE, main

    assert main(["demo", "--port", "70000"]) == EXIT_USAGE
    assert "--port must be 0..65535" in capsys.readouterr().err
    assert main(["demo", "--iterations", "50", "--max-iterations", "10"]) == EXIT_USAGE
    assert "--iterations 50 is above --max-iterations 10" in capsys.readouterr().err
    assert main(["demo", "--config", "/no/such/settings.toml"]) == EXIT_USAGE
    assert "settings.toml" in capsys.readouterr().err
    assert main(["demo", "--threads", "0"]) == EXIT_USAGE  # a bad setting fails before the server starts
    assert "threads" in capsys.readouterr().err
