"""The ``clipasso`` command line: a thin shell over the library (the library never imports it).

Commands:
    clipasso sketch IMAGE [IMAGE ...] -o OUTDIR [options]
    clipasso sketch --text PROMPT -o OUTDIR [options]     (a sketch of the prompt, no image)
    clipasso demo [--host 127.0.0.1] [--port 7860] [--share] [options]   (the web demo; needs [demo])
    clipasso info

Exit codes: 0 success, 2 bad input or usage (one-line message; ``--debug`` for the traceback),
1 internal error.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command-line problem (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit itself
        raise UsageError(message)


def _counts(text: str) -> list[int]:
    counts = _strokes(text)
    if isinstance(counts, str):
        raise argparse.ArgumentTypeError(f"expected stroke counts like 4,8 (got {text!r})")
    return counts


def _strokes(text: str) -> list[int] | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--strokes takes a number or a list like 4,8,16 (got {text!r})"
        ) from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"--strokes values must be positive (got {text!r})")
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clipasso", description="Turn a picture of an object into an abstract line sketch (CLIPasso)."
    )
    parser.add_argument("--version", action="version", version=f"clipasso {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    sk = sub.add_parser("sketch", help="sketch one or more images", description="Sketch images (best of N).")
    sk.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="input images (PNG, JPEG, ...)")
    sk.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("clipasso-out"),
        help="output folder (default: clipasso-out)",
    )
    sk.add_argument(
        "--strokes",
        type=_strokes,
        default=None,
        help="number of strokes; a ladder such as 4,8,16,32 (one nested run: its prefixes; --separate: "
        "one run per count); or auto (the count chosen by --abstraction)",
    )
    sk.add_argument(
        "--separate",
        action="store_true",
        help="a ladder as separate runs (the paper's way) instead of one nested run",
    )
    sk.add_argument(
        "--nested",
        type=_counts,
        metavar="K,K",
        help="nested training: the first K strokes must also be a K-stroke sketch (e.g. 4,8)",
    )
    sk.add_argument(
        "--nested-mode",
        choices=("auto", "all", "sample", "spread"),
        help="every prefix each step (all), one drawn (sample), the CLIP views spread over them (spread);"
        " auto (default): spread for the CLIP losses, sample (half the weight on the full sketch) otherwise",
    )
    sk.add_argument(
        "--abstraction",
        type=float,
        metavar="EPS",
        help="with --strokes auto: the share of the full sketch's gain one gives up for fewer strokes (0.1)",
    )
    sk.add_argument(
        "--max-strokes", type=int, metavar="N", help="with --strokes auto: strokes optimised (32)"
    )
    sk.add_argument(
        "--schedule",
        choices=("progressive",),
        help="progressive: add the strokes one by one, each where the sketch explains the target least",
    )
    sk.add_argument(
        "--order",
        action="store_true",
        help="reorder the strokes by importance (greedy removal) before saving",
    )
    sk.add_argument(
        "--preset",
        help="start from named settings: reference (the paper's exact recipe: fp32, Adam lr 1, "
        "2000 iterations) or fast (the candidates raced from step 50, 2 random views per step, 1400 "
        "steps at lr 1 decaying to 0 over the last 420: about 4x fewer, cheaper sketch-steps); --config "
        "and the other flags apply on top",
    )
    sk.add_argument("--iterations", type=int, help="optimisation steps (reference: 2000)")
    sk.add_argument("--num-sketches", type=int, help="best-of-N candidates (reference: 3)")
    sk.add_argument(
        "--prune-after",
        type=int,
        help="race the candidates: after this many steps only the best one goes on (reference: off)",
    )
    sk.add_argument(
        "--prune-tolerance",
        type=float,
        metavar="T",
        help="with a race: candidates within T (relative, e.g. 0.005) of the leader's evaluation loss "
        "go on too, until --prune-until",
    )
    sk.add_argument(
        "--prune-until",
        type=int,
        metavar="N",
        help="with --prune-tolerance: from step N only the best candidate goes on",
    )
    sk.add_argument("--seed", type=int, help="seed of the first candidate")
    sk.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps, ...")
    sk.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads (default: one per core; idle threads spin only briefly, so a busy machine "
        "does not stall them: see docs/performance.md)",
    )
    sk.add_argument(
        "--mask",
        type=Path,
        action="append",
        metavar="FILE|u2net|saliency|weights-free",
        help="the object mask: a file (one per image, in order), or where to get it for every image: "
        "u2net (the matting net, needs --u2net-weights), saliency (the CLIP ViT relevance map), "
        "weights-free (a classical saliency, no weights); --background says how it is used",
    )
    sk.add_argument(
        "--background",
        choices=("keep", "cutout", "weight"),
        help="how the mask is used: keep (default, the reference's: the image as it is, the mask only "
        "places the starts), cutout (the reference's two-stage --mask_object: the object composited "
        "onto white) or weight (one stage: the image kept, the mask a soft weight inside the loss)",
    )
    sk.add_argument(
        "--u2net-weights",
        metavar="PATH",
        help="u2net.pth or u2netp.pth for --mask u2net (or set CLIPASSO_U2NET_WEIGHTS); clipasso does "
        "not download them",
    )
    sk.add_argument("--fix-scale", action="store_true", default=None, help="pad to a white square first")
    sk.add_argument("--width", type=float, help="stroke half-width r in pixels (reference: 1.5)")
    sk.add_argument(
        "--loss",
        help="objective: clip_conv (default), clip_semantic, or edges (needs no CLIP weights: with it the "
        "initializer defaults to edges unless --initializer or --saliency-weights is given)",
    )
    sk.add_argument(
        "--text",
        action="append",
        metavar="PROMPT",
        help='a text prompt as the semantic target, e.g. "a drawing of a cat" (repeat for several, '
        "averaged); with IMAGEs it replaces the image in the semantic term, the geometric terms stay; "
        "without IMAGE it is a sketch of the prompt alone",
    )
    sk.add_argument("--text-weight", type=float, metavar="W", help="weight of the text term (1.0)")
    sk.add_argument(
        "--text-start", type=int, metavar="N", help="with IMAGEs: the step the text term starts at (0)"
    )
    sk.add_argument(
        "--text-model", help="full CLIP weights for the text term: a file or a model name (ViT-B/32)"
    )
    sk.add_argument(
        "--canvas-size",
        type=int,
        metavar="S",
        help="without IMAGE: side of the blank square canvas in pixels, from 16 up to the "
        "max_canvas_side limit (224)",
    )
    sk.add_argument(
        "--fidelity",
        type=int,
        metavar="LAYER",
        help="match the image at CLIP ViT block LAYER (0-based; ViT-B/32: 0..11) instead of clip_conv: "
        "shallow follows the image closely, deep loosely (CLIPascene)",
    )
    sk.add_argument("--initializer", help="saliency (default), edges, random, svg")
    sk.add_argument(
        "--init-svg", type=Path, help="warm start from this SVG's strokes (topped up by saliency)"
    )
    sk.add_argument("--rasterizer", help="torch (default) or diffvg")
    sk.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="CLIP arithmetic: auto (bf16 where fast and accurate enough, default) or fp32 (the reference's)",
    )
    sk.add_argument(
        "--fold-batchnorm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fold CLIP's BatchNorms into its convolutions (about 10 %% less per step; the same "
        "function, rounded differently; on in --preset fast, off in the default and the reference)",
    )
    sk.add_argument(
        "--prepack-weights",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on a CPU, keep CLIP's convolution weights reordered for oneDNN instead of reordering "
        "them on every call, forward and backward (the same sums; on in --preset fast, off in the default "
        "and the reference)",
    )
    sk.add_argument(
        "--fuse-activations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --fold-batchnorm and --prepack-weights, run CLIP's ReLUs and residual additions "
        "inside its convolutions (oneDNN post-ops, CPU; one rounding fewer per block in bf16; off "
        "in the default and the reference)",
    )
    sk.add_argument(
        "--target-pool",
        type=int,
        metavar="K",
        help="draw the random views from a fixed pool of K whose target features are computed once "
        "(about 30 %% less per step; a deviation from the reference; 0: off, the default)",
    )
    sk.add_argument(
        "--views",
        type=int,
        metavar="V",
        help="random views per sketch and step (the reference: 4; fewer: a cheaper, noisier step)",
    )
    sk.add_argument(
        "--identity-weight",
        type=float,
        metavar="W",
        help="share of the un-augmented view 0 in the loss's mean over the views (default: the plain "
        "mean; 0.2 keeps the reference's objective in expectation with fewer views)",
    )
    sk.add_argument(
        "--reseed-every",
        type=int,
        metavar="K",
        help="every K steps move dead strokes onto uncovered edges (default: 50 with --loss edges, else off)",
    )
    sk.add_argument("--clip-weights", help="CLIP weights for the loss: a file or a model name")
    sk.add_argument(
        "--saliency-weights", help="CLIP ViT weights for the saliency map: a file or a model name"
    )
    sk.add_argument("--checkpoint", action="store_true", help="write checkpoints (OUTDIR/.checkpoints/)")
    sk.add_argument(
        "--resume", action="store_true", help="resume from existing checkpoints (implies --checkpoint)"
    )
    sk.add_argument(
        "--batch-images",
        type=int,
        default=1,
        metavar="K",
        help="optimise K images' candidates as one batch (B = K x num-sketches), for devices one image "
        "does not fill; the same outputs as one at a time (default 1: one at a time; no checkpoints, "
        "nested or automatic stroke counts with K > 1)",
    )
    sk.add_argument("--config", type=Path, help="a TOML file of settings (see --print-config)")
    sk.add_argument(
        "--print-config", action="store_true", help="print the effective settings as TOML and exit"
    )
    sk.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sk.add_argument("--debug", action="store_true", help="show tracebacks")

    _add_demo_parser(sub)

    info = sub.add_parser("info", help="versions, devices, rasterizer backends, weights cache")
    info.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def _add_demo_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="the live web demo in a browser (pip install 'clipasso[demo]')",
        description="Serve the web demo: upload a picture, watch the strokes move, download the sketch.",
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    demo.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    demo.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    demo.add_argument("--clip-weights", help="CLIP weights for the loss: a file or a model name")
    demo.add_argument(
        "--saliency-weights", help="CLIP ViT weights for the saliency map: a file or a model name"
    )
    demo.add_argument(
        "--config", type=Path, help="a TOML file of settings applied to every run (see sketch --print-config)"
    )
    demo.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps, ...")
    demo.add_argument("--threads", type=int, metavar="N", help="CPU threads per run")
    demo.add_argument("--iterations", type=int, default=300, help="the page's default number of steps (300)")
    demo.add_argument("--max-iterations", type=int, default=2000, help="the most steps a run may take (2000)")
    demo.add_argument(
        "--preview-every", type=int, default=5, metavar="K", help="show the strokes every K steps (5)"
    )
    demo.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="runs at a time; the others queue (1)"
    )
    demo.add_argument("--debug", action="store_true", help="show tracebacks")


# ---------------------------------------------------------------------------------------------- config


def _read_toml(path: Path) -> dict[str, Any]:
    from .config import read_toml  # checks the file and each setting; errors name the file

    return read_toml(path)


def to_toml(settings: dict[str, Any]) -> str:
    """Settings as a TOML ``[sketch]`` table (None values are left out: they mean "default")."""
    from .config import to_toml as settings_to_toml

    return settings_to_toml(settings)


def _one_line(exc: BaseException) -> str:
    """An error message on one line (a message from a dependency may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _mask_source(masks: Sequence[Path] | None) -> str | None:
    """The mask source named by ``--mask NAME`` (one flag, for every image), else None (files)."""
    from .config import MASK_SOURCES

    names = [str(m) for m in masks or [] if str(m) in MASK_SOURCES]
    if not names:
        return None
    if len(masks or []) != 1:
        raise UsageError(f"--mask {names[0]} names the mask's source for every image: give it once, alone")
    return names[0]


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from .config import SketchConfig
    from .errors import InputError

    try:
        base = SketchConfig.preset(args.preset) if args.preset else SketchConfig()
    except InputError as exc:
        raise UsageError(str(exc)) from None
    data: dict[str, Any] = base.to_dict()
    if args.config is not None:
        data.update(_read_toml(args.config))
    flags = {
        "iterations": args.iterations,
        "num_sketches": args.num_sketches,
        "prune_after": args.prune_after,
        "prune_tolerance": args.prune_tolerance,
        "prune_until": args.prune_until,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "fix_scale": args.fix_scale,
        "width": args.width,
        "loss": args.loss,
        "initializer": args.initializer,
        "precision": args.precision,
        "target_pool": args.target_pool,
        "fold_batchnorm": args.fold_batchnorm,
        "prepack_weights": args.prepack_weights,
        "fuse_activations": args.fuse_activations,
        "num_views": args.views,
        "identity_weight": args.identity_weight,
        "reseed_every": args.reseed_every,
        "rasterizer": args.rasterizer,
        "clip_model": args.clip_weights,
        "saliency_model": args.saliency_weights,
        "text": args.text,
        "text_weight": args.text_weight,
        "text_start": args.text_start,
        "text_model": args.text_model,
        "canvas_size": args.canvas_size,
        "fidelity": args.fidelity,
        "background": args.background,
        "u2net_weights": args.u2net_weights,
        "mask_source": _mask_source(args.mask),
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if data.get("loss") == "edges" and args.initializer is None and args.saliency_weights is None:
        if args.init_svg is None and (args.config is None or "initializer" not in _read_toml(args.config)):
            data["initializer"] = "edges"  # the weights-free mode stays weights-free
    if args.init_svg is not None:
        data["initializer"] = "svg"
        data["initializer_options"] = {**data.get("initializer_options", {}), "source": str(args.init_svg)}
    for key, value in (
        ("nested", args.nested),
        ("nested_mode", args.nested_mode),
        ("abstraction", args.abstraction),
        ("auto_max_strokes", args.max_strokes),
        ("schedule", args.schedule),
    ):
        if value is not None:
            data[key] = value
    if args.strokes == "auto":
        data["auto_strokes"] = True
        data["num_strokes"] = data.get("auto_max_strokes", SketchConfig().auto_max_strokes)
    elif args.strokes is not None:
        counts = sorted(args.strokes)
        data["num_strokes"] = counts[-1] if len(counts) > 1 and not args.separate else args.strokes[0]
        if len(counts) > 1 and not args.separate:  # one nested run: the ladder is its prefixes
            data["nested"] = counts[:-1]
    return data


# ---------------------------------------------------------------------------------------------- sketch


def _progress(quiet: bool, label: str, total: int, position: int | None = None) -> Any:
    from .engine import ProgressBar

    return ProgressBar(total, label, disable=quiet, position=position)


def _prompt_name(prompts: Sequence[str]) -> str:
    """The output folder of a sketch without an image: its first prompt, made a safe file name.

    Example:
        >>> _prompt_name(["a drawing of a cat!", "a cat"])
        'a_drawing_of_a_cat'
    """
    first = prompts[0] if prompts else ""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", first).strip("_.")[:60] or "text"


def _sketch(args: argparse.Namespace) -> int:
    from .batch import BatchItem, plan, sketch_folders, sketch_items
    from .config import SketchConfig
    from .distributed import World, local_device
    from .errors import ClipassoError, InputError
    from .sketcher import Sketcher

    settings = _settings(args)
    try:
        world = World.from_env()  # torchrun's variables, or one process
        if "device" in settings:
            settings["device"] = local_device(settings["device"], world)  # one GPU per local rank
        config = SketchConfig.from_dict(settings)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if args.print_config:
        print(to_toml(config.to_dict()), end="")
        return EXIT_OK
    if not args.images and not config.text:
        raise UsageError(
            "no IMAGE given (usage: clipasso sketch IMAGE|DIR [...] -o OUTDIR, or --text PROMPT "
            "-o OUTDIR for a sketch of a prompt)"
        )
    masks = [] if config.mask_source is not None and _mask_source(args.mask) else (args.mask or [])
    if config.mask_source == "u2net":  # a missing weights file is reported before any work
        from .matting import resolve_u2net_weights

        try:
            resolve_u2net_weights(config.u2net_weights)
        except ClipassoError as exc:
            raise UsageError(str(exc)) from None
    if masks and len(masks) != len(args.images):
        raise UsageError(f"got {len(masks)} --mask for {len(args.images)} images; give one mask per image")
    if args.images and config.canvas_size is not None:
        raise UsageError("--canvas-size is the canvas of a sketch without IMAGE; images use image_size")
    if not args.images and config.fidelity is not None:
        raise UsageError("--fidelity sets how closely a sketch follows its image: it needs an IMAGE")
    nested_ladder = isinstance(args.strokes, list) and len(args.strokes) > 1 and not args.separate
    counts = [config.num_strokes] if not isinstance(args.strokes, list) or nested_ladder else args.strokes
    for n in counts:  # every count of a ladder is checked before any work
        config.replace(num_strokes=n)
    _check_batch_images(args, config, nested_ladder)
    # a folder among the inputs, or several processes: a batch (summary.json, exit 1 on failures)
    batch = world.distributed or any(p.is_dir() for p in args.images)
    resume = args.resume or world.restart_count > 0  # torchrun restarted the group: go on
    hooks = _hooks(args, world, config.iterations)
    sketcher = Sketcher(config)  # one Sketcher: models load once and serve every image
    try:
        if args.images:
            world.init()
            _on_sigterm_interrupt(world)
            try:
                summary = sketch_folders(
                    sketcher,
                    args.images,
                    args.output,
                    strokes=counts,
                    masks=masks or None,
                    resume=resume,
                    checkpoint=args.checkpoint,
                    summary=batch,
                    world=world,
                    hooks=hooks,
                    ladder=sorted(args.strokes) if nested_ladder else None,
                    order=args.order,
                    batch_images=args.batch_images,
                )
            finally:
                world.close()
            records = summary.records
        else:  # one sketch of the prompt(s), in a folder named after the first prompt
            if world.distributed:
                raise UsageError(
                    "torchrun shares images over its processes; a sketch of a prompt without IMAGE "
                    "runs in one process (run it without torchrun)"
                )
            item = BatchItem(None, _prompt_name(config.text or []))
            pending, skipped = plan([item], args.output, config=config, strokes=counts, resume=resume)
            sketcher.load(with_image=False)  # weights errors surface now, before any output
            hooks.on_plan(pending, skipped)
            records = sketch_items(
                sketcher,
                pending,
                args.output,
                strokes=counts,
                checkpoint=args.checkpoint,
                resume=resume,
                hooks=hooks,
                ladder=sorted(args.strokes) if nested_ladder else None,
                order=args.order,
            )
    except ClipassoError as exc:
        if not (isinstance(exc, InputError) or _is_user_error(exc)):
            raise
        raise UsageError(str(exc)) from None
    failed = [r for r in records if r.status == "failed"]
    if batch:
        return EXIT_INTERNAL if failed and world.rank == 0 else EXIT_OK
    return max([EXIT_OK, *(EXIT_USAGE if r.kind == "input" else EXIT_INTERNAL for r in failed)])


def _check_batch_images(args: argparse.Namespace, config: Any, nested_ladder: bool) -> None:
    """``--batch-images`` with flags a batch of images does not take: a usage error before any work."""
    k = args.batch_images
    if k < 1:
        raise UsageError(f"--batch-images must be >= 1, got {k}")
    if k == 1:
        return
    flag = f"--batch-images {k}"
    unsupported = "a batch of images does not support nested or automatic stroke counts"
    if not args.images:
        raise UsageError(f"{flag} batches IMAGEs; a sketch of --text alone is one run (leave it out)")
    if args.strokes == "auto" or config.auto_strokes:
        where = "--strokes auto" if args.strokes == "auto" else "auto_strokes in --config"
        raise UsageError(f"{flag} with {where}: {unsupported}; use --batch-images 1")
    if nested_ladder:
        ladder = ",".join(str(n) for n in args.strokes)
        raise UsageError(
            f"{flag} with --strokes {ladder} (one nested run): {unsupported}; add --separate (one run "
            "per count) or use --batch-images 1"
        )
    if config.nested is not None:
        where = "--nested" if args.nested is not None else "nested in --config"
        raise UsageError(f"{flag} with {where}: {unsupported}; use --batch-images 1")
    if args.checkpoint:
        raise UsageError(
            f"{flag} with --checkpoint: a batch of images writes no checkpoints; use --batch-images 1 "
            "(--resume still skips the finished images)"
        )


def _on_sigterm_interrupt(world: Any) -> None:
    """Under torchrun, SIGTERM (how it stops the other ranks when one dies) interrupts like Ctrl-C,
    so the image being written leaves no temporary folder behind."""
    import signal

    if not world.distributed:
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _hooks(args: argparse.Namespace, world: Any, iterations: int) -> Any:
    """Progress bars over images and steps, and one line per image (rank 0 draws the bars)."""
    from tqdm.auto import tqdm

    from .batch import BatchHooks

    quiet = args.quiet or world.rank != 0

    class Hooks(BatchHooks):
        bar: Any = None

        def on_plan(self, items: Sequence[Any], skipped: Sequence[Any]) -> None:
            if skipped:
                print(f"{len(skipped)} image(s) finished before: skipped (--resume)")
            if len(items) > 1 or world.distributed:
                where = f" (rank {world.rank} of {world.size})" if world.distributed else ""
                self.bar = tqdm(
                    total=len(items),
                    desc="images" + where,
                    disable=quiet,
                    unit="image",
                    position=0,
                    dynamic_ncols=True,
                )

        def callbacks(self, item: Any, num_strokes: int) -> list[Any]:
            name = item.source.name if item.source is not None else item.name
            label = f"{name} ({num_strokes} strokes)"
            return [_progress(quiet, label, iterations, position=1 if self.bar is not None else None)]

        def group_callbacks(self, items: Sequence[Any], num_strokes: int) -> list[Any]:
            first = items[0].source.name if items[0].source is not None else items[0].name
            label = f"{first} + {len(items) - 1} more ({num_strokes} strokes)"
            return [_progress(quiet, label, iterations, position=1 if self.bar is not None else None)]

        def on_error(self, item: Any, exc: BaseException) -> None:
            if args.debug:
                traceback.print_exc()

        def on_record(self, record: Any) -> None:
            if self.bar is not None and record.output is not None:
                self.bar.update(1)
            if record.status == "failed":
                print(f"clipasso: error: {record.source}: {record.reason}", file=sys.stderr)
                return
            # the one-line summary is printed even with --quiet
            print(
                f"{record.source}: best loss {record.best_loss:.5g} at iteration {record.best_iteration} "
                f"(seed {record.best_seed}, {record.candidates} candidates), "
                f"{record.seconds:.1f} s -> {record.folder}/"
            )

        def on_end(self, summary: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return Hooks()


def _is_user_error(exc: BaseException) -> bool:
    from .errors import BackendUnavailableError, WeightsError

    return isinstance(exc, (WeightsError, BackendUnavailableError))


# ---------------------------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    from .errors import InputError

    for name in ("port", "iterations", "max_iterations", "preview_every", "concurrency"):
        value = getattr(args, name)
        if value < (0 if name == "port" else 1) or (name == "port" and value > 65535):
            raise UsageError(
                f"--{name.replace('_', '-')} must be {'0..65535' if name == 'port' else '>= 1'}, got {value}"
            )
    if args.iterations > args.max_iterations:
        raise UsageError(f"--iterations {args.iterations} is above --max-iterations {args.max_iterations}")
    settings: dict[str, Any] = _read_toml(args.config) if args.config is not None else {}
    settings.update({k: v for k, v in (("device", args.device), ("threads", args.threads)) if v is not None})
    from .config import SketchConfig

    try:
        SketchConfig.from_dict({**SketchConfig().to_dict(), **settings})  # bad settings fail now
    except InputError as exc:
        raise UsageError(str(exc)) from None
    from .demo.app import check_gradio

    problem = check_gradio()
    if problem is not None:
        raise UsageError(problem)
    from .demo.app import launch
    from .demo.service import DemoOptions

    options = DemoOptions(
        settings=settings,
        clip_weights=args.clip_weights,
        saliency_weights=args.saliency_weights,
        preview_every=args.preview_every,
        iterations=args.iterations,
        max_iterations=args.max_iterations,
    )
    import logging

    logging.basicConfig(level=logging.INFO, format="clipasso demo: %(message)s")  # one line per job
    logging.getLogger("httpx").setLevel(logging.WARNING)
    where = f"http://{args.host}:{args.port}"
    print(f"clipasso demo on {where} (Ctrl+C to stop)", file=sys.stderr, flush=True)
    launch(
        options, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency, quiet=True
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    import torch
    import torchvision

    from .models import available_models, default_cache_dir
    from .models.loading import CLIP_MODELS, _file_name
    from .render import list_rasterizers
    from .sketcher import resolve_device

    try:
        from importlib.metadata import version

        clip_version = version("clip-anytorch")
    except Exception:  # pragma: no cover - metadata missing
        clip_version = "unknown"
    cache = default_cache_dir()
    cached = [n for n in available_models() if (cache / _file_name(n)).is_file()]
    print(f"clipasso     {__version__}")
    print(f"python       {platform.python_version()} ({sys.executable})")
    print(f"torch        {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    print(f"torchvision  {torchvision.__version__}")
    print(f"clip         {clip_version}")
    from .machine import cpu_info

    cpu = cpu_info()
    features = ", ".join(cpu["features"]) or "none of AMX / AVX-512 BF16"
    print(f"device       {resolve_device('auto')} (auto)")
    print(f"cpu          {cpu['model']} ({cpu['cores']} cores; {features})")
    spin = os.environ.get("GOMP_SPINCOUNT", "libgomp's default")
    print(f"threads      {torch.get_num_threads()} (idle spin: {spin})")
    print(f"rasterizers  {', '.join(list_rasterizers())}")
    print(f"weights      {cache}" + (f" (cached: {', '.join(cached)})" if cached else " (nothing cached)"))
    print(f"models       {', '.join(CLIP_MODELS)}")
    env = {k: v for k, v in os.environ.items() if k.startswith("CLIPASSO_")}
    for k, v in sorted(env.items()):
        print(f"env          {k}={v}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clipasso`` console script; returns the exit code."""
    from .threads import limit_spinning

    limit_spinning()  # before anything imports torch (and with it the OpenMP runtime)
    parser = build_parser()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = parser.parse_args(argv)
        if args.command == "sketch":
            return _sketch(args)
        if args.command == "info":
            return _info(args)
        if args.command == "demo":
            return _demo(args)
        parser.print_help()
        return EXIT_OK
    except UsageError as exc:
        print(f"clipasso: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("clipasso: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal error: one line unless --debug
        from .errors import InputError

        if isinstance(exc, InputError) or _is_user_error(exc):
            print(f"clipasso: error: {_one_line(exc)}", file=sys.stderr)
            if debug:
                traceback.print_exc()
            return EXIT_USAGE
        print(f"clipasso: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        else:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
