"""Write the files people look at for a sketch run (used by the CLI, usable from notebooks).

:func:`save_outputs` fills a folder with ``sketch.svg`` (the winner), ``sketch.png`` (rendered at
2×), ``candidates/`` (every best-of-N sketch plus ``scores.json``), ``progress.gif`` (snapshots up
to the best iteration), ``saliency.png``, ``loss.png`` (needs matplotlib; Agg backend only) and
``config.json``. Every file is written atomically; :func:`save_outputs_atomic` additionally builds
the whole folder aside and moves it into place, so an interrupted run leaves the old folder or none.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ._io import atomic_write_bytes, atomic_write_text, publish_mode
from ._version import __version__
from .errors import InputError
from .render import create_rasterizer
from .result import SketchResult, save_png, to_uint8

__all__ = [
    "check_output_folder",
    "drawing_svg",
    "save_curve_plot",
    "save_drawing_gif",
    "save_ladder",
    "save_loss_plot",
    "save_outputs",
    "save_outputs_atomic",
    "save_progress_gif",
]


def save_progress_gif(result: SketchResult, path: str | os.PathLike[str], *, frame_ms: int = 100) -> Path:
    """An animation of the winner's snapshots (every evaluation) up to its best iteration."""
    from .strokes import StrokeSet

    best = result.best
    frames = []
    for it, points in best.snapshots:
        if it > best.best_iteration:
            break
        strokes = StrokeSet(
            points[None], best.strokes.widths, best.strokes.colors, canvas_size=best.strokes.canvas_size
        )
        with torch.no_grad():
            frames.append(Image.fromarray(to_uint8(strokes.render(backend=result.rasterizer)[0])))
    if not frames:
        with torch.no_grad():
            frames.append(Image.fromarray(to_uint8(best.strokes.render(backend=result.rasterizer)[0])))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return atomic_write_bytes(path, buffer.getvalue())


def save_drawing_gif(result: SketchResult, path: str | os.PathLike[str], *, frame_ms: int = 250) -> Path:
    """An animation that draws the winner's strokes one by one, in their order (the importance order
    after :meth:`~clipasso.Sketcher.order_strokes` or a nested run), from the blank canvas."""
    strokes = result.strokes
    ks = list(range(strokes.num_strokes + 1))
    rasterizer = create_rasterizer(result.rasterizer)
    with torch.no_grad():
        renders = rasterizer.render_prefixes(
            strokes.points, strokes.widths, strokes.colors, strokes.canvas_size, ks, 1.0
        )[0]
    frames = [Image.fromarray(to_uint8(im)) for im in renders]
    buffer = io.BytesIO()
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]  # the finished sketch stays a while
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return atomic_write_bytes(path, buffer.getvalue())


def drawing_svg(result: SketchResult, *, seconds_per_stroke: float = 0.25) -> str:
    """The winner as an SVG that draws its strokes one by one in their order (SMIL ``<set>``: each
    path appears at ``i * seconds_per_stroke`` s in a browser; where animation is off, as in
    rsvg-convert or print, it shows the finished sketch)."""
    import re

    text = result.svg()
    count = 0

    def appear(m: re.Match[str]) -> str:
        nonlocal count
        begin = count * seconds_per_stroke
        count += 1
        if begin == 0:
            return m.group(0)
        # hidden from the start until its turn; without animation (rsvg, print) the whole sketch shows
        return (
            f'{m.group(1)}><set attributeName="visibility" to="hidden" begin="0s" end="{begin:g}s"/></path>'
        )

    return re.sub(r"(<path\b[^>]*?)\s*/>", appear, text)


def save_curve_plot(result: SketchResult, path: str | os.PathLike[str]) -> Path | None:
    """The loss-vs-strokes curve (:attr:`SketchResult.curve`) as a PNG (matplotlib, Agg), with the
    automatic count marked. None without a curve or without matplotlib."""
    curve = result.curve
    if curve is None:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: curve.png skipped (pip install 'clipasso[plots]')", stacklevel=2
        )
        return None
    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.subplots()
    ax.plot(range(len(curve)), curve, "o-", markersize=3, linewidth=1)
    if result.auto_strokes is not None:
        ax.axvline(result.auto_strokes, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"automatic count: {result.auto_strokes} strokes", fontsize=9)
    ax.set_xlabel("strokes (prefix k)")
    ax.set_ylabel("eval loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def save_loss_plot(result: SketchResult, path: str | os.PathLike[str]) -> Path | None:
    """Train and eval curves per term for every candidate (matplotlib, Agg). None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: loss.png skipped (pip install 'clipasso[plots]')", stacklevel=2
        )
        return None
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_train, ax_eval = fig.subplots(1, 2)
    for i, cand in enumerate(result.candidates):
        style = "-" if i == result.best_index else ":"
        for term, values in cand.history.train.items():
            ax_train.plot(values, style, label=f"{term} (seed {cand.seed})", linewidth=1)
        for term, values in cand.history.eval.items():
            ax_eval.plot(
                cand.history.eval_iterations, values, style, label=f"{term} (seed {cand.seed})", linewidth=1
            )
    for ax, title in ((ax_train, "train (augmented)"), (ax_eval, "eval (view 0)")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    ax_eval.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def save_ladder(results: Sequence[SketchResult], path: str | os.PathLike[str], *, scale: float = 1.0) -> Path:
    """The sketches of an abstraction ladder (e.g. 4, 8, 16, 32 strokes) side by side, as a PNG."""
    images = [to_uint8(r.render(scale)[0]) for r in results]
    h = max(im.shape[0] for im in images)
    gap = 8
    canvas = Image.new("RGB", (sum(im.shape[1] for im in images) + gap * (len(images) - 1), h), "white")
    x = 0
    for im in images:
        canvas.paste(Image.fromarray(im), (x, 0))
        x += im.shape[1] + gap
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_outputs(
    result: SketchResult, folder: str | os.PathLike[str], *, extra_config: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write every output of one sketch into ``folder`` (created if needed). Returns name → path."""
    from .init.figure import save_saliency_figure

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["sketch.svg"] = result.save_svg(out / "sketch.svg")
    written["sketch.png"] = result.save_png(out / "sketch.png", scale=2.0)
    cand_dir = out / "candidates"
    cand_dir.mkdir(exist_ok=True)
    for cand in result.candidates:
        atomic_write_text(cand_dir / f"seed{cand.seed}.svg", cand.strokes.to_svg())
        with torch.no_grad():
            save_png(cand.strokes.render(backend=result.rasterizer)[0], cand_dir / f"seed{cand.seed}.png")
    written["candidates/scores.json"] = atomic_write_text(
        cand_dir / "scores.json", json.dumps(result.summary(), indent=2)
    )
    written["progress.gif"] = save_progress_gif(result, out / "progress.gif")
    init = result.init
    if init is not None and init.relevance is not None:
        save_saliency_figure(out / "saliency.png", result.target.image, init)
        written["saliency.png"] = out / "saliency.png"
    mask = result.target.mask
    if mask is not None:  # the matte (issue 21: mask.png), and the loss's weight map in "weight" mode
        written["mask.png"] = save_png((mask[0] > 0.5).float().expand(3, -1, -1), out / "mask.png")
        if getattr(result.config, "background", "keep") == "weight":
            written["weights.png"] = save_png(
                mask[0].float().clamp(0, 1).expand(3, -1, -1), out / "weights.png"
            )
    plot = save_loss_plot(result, out / "loss.png")
    if plot is not None:
        written["loss.png"] = plot
    if result.curve is not None:
        curve_plot = save_curve_plot(result, out / "curve.png")
        if curve_plot is not None:
            written["curve.png"] = curve_plot
    if result.stroke_order is not None or result.curve is not None:  # strokes in a meaningful order
        written["drawing.gif"] = save_drawing_gif(result, out / "drawing.gif")
        written["drawing.svg"] = atomic_write_text(out / "drawing.svg", drawing_svg(result))
    config = {
        "clipasso_version": __version__,
        "config": result.config.to_dict(),
        "seeds": [c.seed for c in result.candidates],
        "rasterizer": type(result.rasterizer).__name__
        if not isinstance(result.rasterizer, str)
        else result.rasterizer,
        **(extra_config or {}),
    }
    written["config.json"] = atomic_write_text(out / "config.json", json.dumps(config, indent=2, default=str))
    return written


def check_output_folder(folder: str | os.PathLike[str]) -> Path:
    """Check, before any work, that ``folder`` can become an output folder; return it as a Path.

    It may exist (as a folder: it is replaced when the new outputs are complete, so its parent
    must be writable) or not (then its nearest existing ancestor must be a writable folder).

    Raises:
        InputError: ``folder`` or an ancestor is a file, or the place is not writable.

    Example:
        >>> import tempfile, pathlib
        >>> base = pathlib.Path(tempfile.mkdtemp())
        >>> check_output_folder(base / "new" / "run") == base / "new" / "run"
        True
        >>> (base / "file").write_text("x") and None
        >>> check_output_folder(base / "file" / "run")
        Traceback (most recent call last):
        ...
        clipasso.errors.InputError: cannot write outputs to .../file/run: .../file is a file, not a folder
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise InputError(f"cannot write outputs to {target}: it is a file, not a folder")
    ancestor = target
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise InputError(f"cannot write outputs to {target}: {ancestor} is a file, not a folder")
    writable = ancestor if ancestor != target else target.parent if target.parent.exists() else target
    if writable.exists() and not os.access(writable, os.W_OK | os.X_OK):
        raise InputError(f"cannot write outputs to {target}: {writable} is not writable")
    return target


def save_outputs_atomic(write: Any, folder: str | os.PathLike[str]) -> Path:
    """Build an output folder aside with ``write(tmp_folder)`` and move it into place at the end.

    An existing folder is replaced only once the new one is complete; on any error the temporary
    folder is removed and the old one left as it was.
    """
    target = check_output_folder(folder)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise InputError(f"cannot create the output folder {target}: {exc.strerror or exc}") from exc
    try:
        write(tmp)
        publish_mode(tmp, directory=True, like=target)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
