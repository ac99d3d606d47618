"""The web demo as people meet it: `clipasso demo` launched on loopback, driven by gradio_client
and by a browser (Playwright with the system Chromium), and 8 clients at once.

Each run is a few steps at 128 px with tiny random-weight CLIP models or the weights-free `edges`
objective. Timeouts are generous and nothing asserts on timing: a busy 2-core machine only makes it
slower.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web demo needs gradio: pip install 'clipasso[demo]'")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client ships with gradio")

from clipasso.data import save_sample  # noqa: E402
from clipasso.testing import tiny_clip_file  # noqa: E402
from demo_server import Server, launched  # noqa: E402

SIDE = 128  # the server's image_size
WAIT_S = 180.0  # any single job, on a busy machine
#: Chromium: CLIPASSO_CHROMIUM, else Debian's package (`apt-get install chromium`), else on PATH.
CHROMIUM = os.environ.get("CLIPASSO_CHROMIUM") or next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
        if p
    ),
    "",
)
#: Where the browser test also saves its screenshot (the docs' picture: docs/images/demo.png).
SCREENSHOT = os.environ.get("CLIPASSO_DEMO_SCREENSHOT")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("demo")
    args = [
        "--clip-weights",
        str(tiny_clip_file("resnet")),
        "--saliency-weights",
        str(tiny_clip_file("vit")),
        "--max-iterations",
        "20000",
        "--iterations",
        "8",
    ]
    with launched(folder, *args, settings=f"image_size = {SIDE}\nnum_sketches = 1\n") as srv:
        yield srv


def client(server: Server) -> Any:
    return gradio_client.Client(server.url, verbose=False)


def square_image(path: Path, cell: int) -> tuple[Path, tuple[float, float]]:
    """A black square in cell ``cell`` (0..7) of a 3×3 grid without its centre; returns its centre."""
    row, col = divmod(cell if cell < 4 else cell + 1, 3)
    image = np.full((SIDE, SIDE, 3), 255, np.uint8)
    step, size = SIDE // 3, SIDE // 4
    y0, x0 = row * step + (step - size) // 2, col * step + (step - size) // 2
    image[y0 : y0 + size, x0 : x0 + size] = 0
    Image.fromarray(image).save(path)
    return path, ((x0 + size / 2) / SIDE, (y0 + size / 2) / SIDE)


def ink_centre(png: str) -> tuple[float, float]:
    """The centre of the dark pixels of a sketch, as fractions of its side."""
    gray = np.asarray(Image.open(png).convert("L"), np.float64)
    ink = np.clip(255.0 - gray, 0, None)
    assert ink.sum() > 0, f"{png} has no ink"
    ys, xs = np.indices(gray.shape)
    return float((xs * ink).sum() / ink.sum() / gray.shape[1]), float(
        (ys * ink).sum() / ink.sum() / gray.shape[0]
    )


def run_args(image: Any = None, sample: str | None = None, **kw: Any) -> list[Any]:
    o = {"strokes": "6", "preset": "default", "objective": "edges", "background": "keep", "iterations": 4}
    o.update({"abstraction": 0.1, **kw})
    keys = ("strokes", "preset", "objective", "background", "iterations", "abstraction")
    return [image, sample, *(o[k] for k in keys)]


def value(output: Any) -> Any:
    return output.get("value") if isinstance(output, dict) else output


# ------------------------------------------------------------------------------ gradio_client


@pytest.mark.parametrize("objective", ["edges", "CLIP"])
def test_run_returns_the_sketch_and_its_files(server: Server, objective: str) -> None:
    c = client(server)
    job = c.submit(*run_args(sample="house", objective=objective, iterations=6), api_name="/run")
    status, sketch, curve, svg, png, gif, ladder, _ladder_png, _full_svg = job.result(timeout=WAIT_S)
    assert status.startswith("done: best loss"), status
    assert not value(ladder)  # a plain count has no ladder
    assert Image.open(sketch).size == (SIDE, SIDE)
    assert [row[0] for row in curve["data"]] == list(range(6))  # one training loss per step
    root = ET.parse(value(svg)).getroot()
    assert root.tag.endswith("svg") and len(root.findall(".//{*}path")) == 6
    assert Image.open(value(png)).size == (2 * SIDE, 2 * SIDE)
    assert Image.open(value(gif)).format == "GIF"
    streamed = job.outputs()
    assert len(streamed) >= 2 and streamed[0][0].startswith("loading")  # it streamed on the way


def test_auto_shows_its_ladder_and_offers_the_chosen_and_the_full_sketch(server: Server) -> None:
    c = client(server)
    job = c.submit(*run_args(sample="mug", strokes="auto", abstraction=0.2, iterations=4), api_name="/run")
    status, _sketch, _curve, svg, _png, _gif, ladder, ladder_png, full_svg = job.result(timeout=WAIT_S)
    assert "auto chose" in status and "of 32 strokes (abstraction 0.2)" in status, status
    chosen = int(status.split("auto chose ")[1].split()[0])
    captions = [item.get("caption") for item in value(ladder)]
    assert f"{chosen} strokes (chosen)" in captions or f"{chosen} stroke (chosen)" in captions
    assert {"1 stroke", "2 strokes", "4 strokes", "8 strokes", "16 strokes", "32 strokes"} <= {
        caption.replace(" (chosen)", "") for caption in captions
    }
    assert len(ET.parse(value(svg)).getroot().findall(".//{*}path")) == chosen
    assert len(ET.parse(value(full_svg)).getroot().findall(".//{*}path")) == 32
    assert Image.open(value(ladder_png)).size[1] == SIDE


def test_bad_upload_and_missing_image_say_what_is_wrong(server: Server, tmp_path: Path) -> None:
    c = client(server)
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is not a picture")
    with pytest.raises(Exception, match=r"cannot use this image: cannot read image photo.png: not an image"):
        c.predict(*run_args(image=gradio_client.handle_file(str(bad))), api_name="/run")
    with pytest.raises(Exception, match="no image: upload a picture or pick a sample"):
        c.predict(*run_args(), api_name="/run")
    with pytest.raises(Exception, match="iterations must be from 1 to 20000"):
        c.predict(*run_args(sample="mug", iterations=30000), api_name="/run")


def test_stop_keeps_the_best_so_far(server: Server) -> None:
    c = client(server)
    job = c.submit(*run_args(sample="mug", iterations=20000), api_name="/run")
    deadline = time.monotonic() + WAIT_S
    while not any(out[0].startswith("step") for out in job.outputs()):
        assert time.monotonic() < deadline and not job.done(), "the run never showed a step"
        time.sleep(0.2)
    assert c.predict(api_name="/stop").startswith("stopping")
    status, _sketch, curve, svg, *_ = job.result(timeout=WAIT_S)
    assert status.startswith("stopped, kept the best so far"), status
    assert len(curve["data"]) < 20000 and Path(value(svg)).is_file()
    assert c.predict(api_name="/stop") == "nothing is running"


def test_a_sample_fills_the_picture(server: Server) -> None:
    path = client(server).predict("mug", api_name="/sample")
    assert Image.open(path).mode == "RGBA"  # the drawn samples carry their mask as alpha


# ------------------------------------------------------------------------------ 8 at once


_HOLDER = """
import sys, time
from gradio_client import Client
c = Client(sys.argv[1], verbose=False)
job = c.submit(None, "house", "6", "default", "edges", "keep", 20000, 0.1, api_name="/run")
while not any(str(o[0]).startswith("step") for o in job.outputs()):
    time.sleep(0.2)
print("running", flush=True)
time.sleep(3600)
"""


def test_eight_clients_queue_stay_apart_and_a_lost_client_frees_its_slot(
    server: Server, tmp_path: Path
) -> None:
    """One client holds the only slot with a long run; 7 more wait with their positions; the first
    one's process dies (its connection closes); the 7 then all finish, each with its own image."""
    rss_before = server.rss_kib()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "running"
        jobs, centres = [], []
        for cell in range(1, 8):
            path, centre = square_image(tmp_path / f"square{cell}.png", cell)
            job = client(server).submit(
                *run_args(image=gradio_client.handle_file(str(path))), api_name="/run"
            )
            jobs.append(job)
            centres.append(centre)
        # all 7 wait behind the long run, each told its place in the queue
        deadline = time.monotonic() + WAIT_S
        ranks: dict[int, int] = {}
        while len(ranks) < len(jobs):
            for k, job in enumerate(jobs):
                st = job.status()
                assert not job.done(), f"job {k} ended while the slot was held: {st}"
                if st.code.name == "IN_QUEUE" and st.rank is not None and st.queue_size:
                    ranks[k] = st.rank
            assert time.monotonic() < deadline, f"not every job saw its queue position: {ranks}"
            time.sleep(0.2)
        assert all(0 <= r < len(jobs) + 1 for r in ranks.values()), ranks
    finally:
        holder.kill()  # the client goes away mid-run: its slot must free
        holder.wait(30)
    for k, job in enumerate(jobs):
        status, _sketch, _curve, _svg, png, *_ = job.result(timeout=WAIT_S)
        assert status.startswith("done"), status
        x, y = ink_centre(value(png))
        nearest = min(range(len(centres)), key=lambda j: (centres[j][0] - x) ** 2 + (centres[j][1] - y) ** 2)
        assert nearest == k, f"job {k} got a sketch of square {nearest}'s image (ink at {x:.2f}, {y:.2f})"
    assert len({value(job.result()[3]) for job in jobs}) == len(jobs)  # each its own files
    log = server.log_text()
    assert log.count(": closed") >= 1, f"the lost client's run did not stop:\n{log}"
    rss_after = server.rss_kib()
    print(f"server RSS before the 8 clients {rss_before} KiB, after {rss_after} KiB")
    if rss_before is not None and rss_after is not None:
        assert rss_after - rss_before < 400 * 1024, f"server memory grew from {rss_before} to {rss_after} KiB"


# ------------------------------------------------------------------------------ the browser


def _chromium_reason() -> str | None:
    if not CHROMIUM or not Path(CHROMIUM).exists():
        return "no Chromium here (apt-get install chromium, or set CLIPASSO_CHROMIUM): .ci/run installs it"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; it is in the dev extra)"
    return None


@pytest.mark.skipif(_chromium_reason() is not None, reason=str(_chromium_reason()))
def test_in_a_browser_upload_run_and_watch_the_sketch_change(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    picture = save_sample("house", tmp_path / "house.png", size=SIDE, alpha=True)
    hosts: set[str] = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]) if "://" in r.url else None)
            page.set_default_timeout(WAIT_S * 1000)
            page.goto(server.url)
            page.locator("#picture input[type=file]").set_input_files(str(picture))
            page.locator("#picture img").wait_for()
            strokes = page.locator("#strokes").locator("input, textarea").first
            strokes.fill("4,8,12")  # a ladder: one nested run, its first 4, 8 and 12 strokes
            strokes.press("Tab")
            page.locator("#iterations input[type=number]").fill("60")
            page.locator("#iterations input[type=number]").press("Enter")
            page.get_by_label("edges").check()
            page.locator("#run").click()
            first = page.locator("#sketch img")
            first.wait_for()
            before = first.get_attribute("src")
            page.wait_for_function(
                "s => { const i = document.querySelector('#sketch img'); return i && i.src !== s; }",
                arg=before,
            )
            page.get_by_text("done: best loss").wait_for()
            page.locator("#download-svg").wait_for()
            page.locator("#download-ladder").wait_for()
            page.wait_for_function("() => document.querySelectorAll('#ladder img').length === 3")
            captions = page.locator("#ladder").inner_text()
            shot = page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            if SCREENSHOT:
                Path(SCREENSHOT).write_bytes(shot)
        finally:
            browser.close()
    assert hosts == {server.url.split("/")[2]}, f"the page fetched from elsewhere: {hosts}"
    assert all(f"{k} strokes" in captions for k in (4, 8, 12)), captions
    assert Image.open(tmp_path / "demo.png").size[0] == 1200
