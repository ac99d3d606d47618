"""The demo's web page: a thin Gradio layer over :class:`~clipasso.demo.service.DemoService`.

Gradio is imported when a page is built (:func:`build_app`), not when this module is imported, so
``import clipasso`` and the rest of the package never need it (``pip install 'clipasso[demo]'``).

The page works offline: analytics are off (``GRADIO_ANALYTICS_ENABLED=False``, set before Gradio
is imported), its fonts and scripts are served by the demo itself, and it binds 127.0.0.1 unless
told otherwise. Runs go through Gradio's queue, one at a time by default (``concurrency``): a
waiting tab sees its position. Each tab has at most one job; the sketch runs in its own thread and
the page gets its strokes every few steps.

Example:
    >>> from clipasso.demo.app import check_gradio
    >>> check_gradio() is None or isinstance(check_gradio(), str)
    True
"""

import os
from collections.abc import Iterator
from typing import Any

from .service import (
    BACKGROUNDS,
    DEFAULT_PRESET,
    OBJECTIVES,
    DemoError,
    DemoOptions,
    DemoService,
    Update,
    presets,
)

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "build_app", "check_gradio", "launch"]

DEFAULT_HOST = "127.0.0.1"
#: The downloads beside the ladder: the rungs side by side, and auto's whole sketch.
_EXTRA = ("ladder", "full_svg")
DEFAULT_PORT = 7860

#: The environment that keeps Gradio from phoning home (set before it is imported).
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_RUN_HISTORY": "False"}

_INTRO = """# clipasso: turn a picture into a line sketch
Upload a picture of an object (or pick a sample), choose the strokes and the objective, then **Run**:
the strokes move as the optimisation goes. **Stop** ends the run and keeps the best sketch so far.
Strokes can be a count (`16`), a ladder (`4,8,16,32`: one run, its first 4, 8, ... strokes) or
`auto` (the count chosen for the **Abstraction**). The `edges` objective needs no CLIP weights."""


def check_gradio() -> str | None:
    """None if Gradio can be imported, else a message saying how to install it."""
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        return f"the web demo needs Gradio ({exc}); install it with: pip install 'clipasso[demo]'"
    return None


def _offline_env() -> None:
    """Analytics and hub look-ups off, before Gradio is imported (unless the caller set them)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    problem = check_gradio()
    if problem is not None:
        raise DemoError(problem)


def _upload_path(payload: Any) -> str | None:
    """The file of an upload as Gradio hands it over unprocessed (its own checks have passed)."""
    if isinstance(payload, dict):
        return payload.get("path") or None
    return str(payload) if payload else None


def _session(request: Any) -> str:
    return str(getattr(request, "session_hash", None) or "local")


def build_app(
    service: DemoService | None = None, *, concurrency: int = 1, max_queue: int | None = 64
) -> Any:  # a gradio.Blocks
    """The demo's page as a Gradio ``Blocks`` (queue set up; call ``.launch`` or use :func:`launch`).

    Args:
        service: The :class:`DemoService` (a default one if None).
        concurrency: Runs at a time; the others wait in the queue with their position.
        max_queue: The most runs waiting (None: no limit).
    """
    _offline_env()
    import gradio as gr  # the annotations below are evaluated now: gr.Request is how Gradio injects it

    service = service or DemoService()
    opts = service.options
    samples = service.samples()

    def pick_sample(name: str | None) -> Any:
        if not name:
            return gr.skip()
        try:
            return str(service.sample_path(name))
        except DemoError as exc:
            raise gr.Error(str(exc)) from None

    def view(update: Update) -> tuple[Any, ...]:
        import pandas as pd

        image = update.image if update.image is not None else gr.skip()
        if update.losses is not None:
            points = pd.DataFrame(list(update.losses), columns=["iteration", "loss"])
        else:
            points = gr.skip()
        files = update.files or {}
        downloads = [
            gr.update(value=str(files[k]), visible=True) if k in files else gr.skip()
            for k in ("svg", "png", "gif")
        ]
        if update.ladder is None:  # no change
            rungs: Any = gr.skip()
            extra = [
                gr.update(value=str(files[k]), visible=True) if k in files else gr.skip() for k in _EXTRA
            ]
        elif not update.ladder:  # a new run: the last run's ladder goes
            rungs = gr.update(value=None, visible=False)
            extra = [gr.update(value=None, visible=False) for _ in _EXTRA]
        else:
            rungs = gr.update(value=[(r.image, r.caption) for r in update.ladder], visible=True)
            extra = [
                gr.update(value=str(files[k]), visible=True) if k in files else gr.update(visible=False)
                for k in _EXTRA
            ]
        return (update.status, image, points, *downloads, rungs, *extra)

    def run(
        image: dict[str, Any] | str | None,
        sample: str | None,
        strokes: str,
        preset: str,
        objective: str,
        background: str,
        iterations: float,
        abstraction: float,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        try:
            updates = service.run(
                _session(request),
                _upload_path(image),
                sample,
                strokes=strokes,
                preset=preset,
                objective=objective,
                background=background,
                iterations=iterations,
                abstraction=abstraction,
            )
            for update in updates:
                yield view(update)
        except DemoError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def stop(request: gr.Request) -> str:
        if service.stop(_session(request)):
            return "stopping: the best sketch so far is kept…"
        return "nothing is running"

    with gr.Blocks(title="clipasso demo", analytics_enabled=False, delete_cache=(900, 3600)) as page:
        gr.Markdown(_INTRO)
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Picture",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id="picture",
                    height=300,
                )
                sample = gr.Dropdown(
                    choices=samples,
                    value=None,
                    label="…or a sample",
                    elem_id="sample",
                    allow_custom_value=False,
                )
                strokes = gr.Textbox(
                    value=str(opts.strokes),
                    label="Strokes",
                    info="a count (16), a ladder from one run (4,8,16,32) or auto",
                    lines=1,
                    max_lines=1,
                    elem_id="strokes",
                )
                abstraction = gr.Slider(
                    0,
                    1,
                    value=service.default_abstraction(),
                    step=0.05,
                    label="Abstraction (auto)",
                    info="with auto: the share of the whole sketch's gain given up for fewer strokes",
                    elem_id="abstraction",
                )
                preset = gr.Dropdown(
                    choices=presets(), value=DEFAULT_PRESET, label="Preset", elem_id="preset"
                )
                objective = gr.Radio(
                    choices=list(OBJECTIVES),
                    value="CLIP",
                    label="Objective (edges: no weights)",
                    elem_id="objective",
                )
                background = gr.Dropdown(
                    choices=list(BACKGROUNDS), value="keep", label="Background", elem_id="background"
                )
                iterations = gr.Slider(
                    1,
                    opts.max_iterations,
                    value=opts.iterations,
                    step=1,
                    label="Iterations",
                    elem_id="iterations",
                )
                with gr.Row():
                    run_button = gr.Button("Run", variant="primary", elem_id="run")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column():
                status = gr.Markdown("ready", elem_id="status")
                sketch = gr.Image(
                    label="Sketch",
                    format="png",
                    type="numpy",
                    interactive=False,
                    elem_id="sketch",
                    height=300,
                )
                curve = gr.LinePlot(
                    x="iteration", y="loss", title="Training loss", elem_id="loss", height=220
                )
                with gr.Row():
                    svg = gr.DownloadButton("SVG", visible=False, elem_id="download-svg")
                    png = gr.DownloadButton("PNG", visible=False, elem_id="download-png")
                    gif = gr.DownloadButton("progress GIF", visible=False, elem_id="download-gif")
                ladder = gr.Gallery(
                    label="Ladder: the first k strokes of the same run",
                    show_label=False,  # the label would cover the top of the thumbnails
                    visible=False,
                    columns=4,
                    fit_columns=False,
                    height=200,
                    object_fit="contain",
                    interactive=False,
                    elem_id="ladder",
                )
                with gr.Row():
                    ladder_png = gr.DownloadButton("ladder PNG", visible=False, elem_id="download-ladder")
                    full_svg = gr.DownloadButton("full SVG", visible=False, elem_id="download-full-svg")
        sample.change(pick_sample, sample, image, api_name="sample", queue=False)
        run_button.click(
            run,
            [image, sample, strokes, preset, objective, background, iterations, abstraction],
            [status, sketch, curve, svg, png, gif, ladder, ladder_png, full_svg],
            api_name="run",
            trigger_mode="once",
            preprocess=False,  # the upload is checked by clipasso, whose errors say what is wrong
            concurrency_limit=concurrency,
            concurrency_id="sketch",
        )
        stop_button.click(stop, None, status, api_name="stop", queue=False)
    page.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return page


def launch(
    options: DemoOptions | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    share: bool = False,
    concurrency: int = 1,
    block: bool = True,
    quiet: bool = False,
) -> Any:
    """Build the page and serve it on ``host:port`` (``share``: also through a Gradio share link).

    Returns the running ``Blocks`` when ``block`` is False (call ``.close()`` to end it).
    """
    service = DemoService(options)
    page = build_app(service, concurrency=concurrency)
    page.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=True,
        quiet=quiet,
        ssr_mode=False,
        show_error=True,
        enable_monitoring=False,
        run_history=False,
        mcp_server=False,
        footer_links=[],
        allowed_paths=[str(service.workdir)],
    )
    if not block:
        return page
    try:
        page.block_thread()
    finally:
        service.close()
    return None
