"""The pictures of docs/losses.md's recipes, made on the proxies this project has (not a test).

There are no pretrained CLIP weights here, so every picture comes from a proxy, and the page says
what each can and cannot show:

* the weights-free ``edges`` objective (XDoG outline of the target, no CLIP);
* random-weight CLIP models built through the public loader: the tiny ResNet of
  :mod:`clipasso.testing` with its BatchNorm recalibrated on the target (content-sensitive), and a
  random ViT/32 with ViT-B/32's depth (12 blocks; width 128, so it runs on a CPU), for the
  semantic, text and fidelity terms.

Every run starts from the same random strokes (``initializer="random"``, seed 0, 16 strokes, one
candidate, 300 steps), so the objective alone makes the differences. Beside each picture the script
measures one number a proxy can honestly give: the share of the sketch's ink that lies within 3 px
of the target's edges (the XDoG outline the ``edges`` term uses), a measure of geometric fidelity.
It also measures, on the random ViT, how much of each patch's own content its token keeps at each
block (the cosine to its block-0 token). It writes ``docs/images/recipes-proxy.png``,
``docs/images/fidelity-proxy.png`` and ``benchmarks/results/recipe-pictures.json``.

Usage:
    python benchmarks/recipe_pictures.py [--iterations 300] [--sample house] [--blocks 0,2,5,8,11]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from clipasso import Sketcher
from clipasso.data import sample_tensor
from clipasso.losses import CLIPConvLoss, CLIPSemanticLoss, SketchLoss
from clipasso.models import load_clip, normalize, vit_tokens
from clipasso.testing import recalibrate_batchnorm, tiny_clip
from clipasso.xdog import xdog

ROOT = Path(__file__).resolve().parents[1]
TILE = 160


def random_vit12(seed: int = 0) -> torch.nn.Module:
    """A random CLIP ViT/32 with ViT-B/32's 12 blocks (width 128), through the public loader."""
    from clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(
            embed_dim=64,
            image_resolution=224,
            vision_layers=12,
            vision_width=128,
            vision_patch_size=32,
            context_length=77,
            vocab_size=49408,
            transformer_width=64,
            transformer_heads=1,
            transformer_layers=1,
        ).float()
    path = Path(tempfile.mkdtemp(prefix="clipasso-vit12-")) / "vit12.pt"
    torch.save(model.state_dict(), path)
    return load_clip(path)


def edge_band(target: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """``[H, W]`` bool: pixels within ``radius`` px of the target's XDoG outline (as EdgeLoss's)."""
    ink = 1 - xdog(target)  # [1, 1, H, W], 1 on dark filled regions
    outline = (F.max_pool2d(ink, 3, 1, 1) + F.max_pool2d(-ink, 3, 1, 1)) > 0.5
    band = F.max_pool2d(outline.float(), 2 * radius + 1, 1, radius) > 0.5
    return band[0, 0]


def ink_on_edges(sketch: torch.Tensor, band: torch.Tensor) -> float:
    """Share of a sketch's ink ``1 - grey`` inside the edge band."""
    ink = 1 - sketch[0].mean(dim=0)
    return float((ink * band).sum() / ink.sum().clamp_min(1e-8))


def run(
    name: str, target: torch.Tensor | None, settings: dict[str, Any], band: torch.Tensor
) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        num_strokes=16, num_sketches=1, seed=0, initializer="random", device="cpu", precision="fp32"
    )
    t0 = time.perf_counter()
    result = Sketcher(**{**base, **settings}).sketch(None if target is None else target[0])
    with torch.no_grad():
        image = result.render()
    out = {
        "name": name,
        "best_loss": result.best_loss,
        "best_iteration": result.best_iteration,
        "ink_on_edges": ink_on_edges(image, band),
        "seconds": time.perf_counter() - t0,
        "terms": sorted(result.best.history.eval),
        "image": image,
    }
    share, best, seconds = out["ink_on_edges"], out["best_loss"], out["seconds"]
    print(f"{name:28s} ink on edges {share:.3f}  best {best:.4g}  {seconds:.0f} s")
    return out


def own_token_cosines(vit: torch.nn.Module, target: torch.Tensor, blocks: list[int]) -> dict[str, float]:
    """Mean cosine between each patch's token at a block and its token at block 0, on the target:
    how much of a patch's own content the residual stream still carries at that depth."""
    tokens = vit_tokens(vit, normalize(target), sorted({0, *blocks}))
    first = tokens["block0"][0, 1:]
    return {name: float(F.cosine_similarity(t[0, 1:], first, dim=-1).mean()) for name, t in tokens.items()}


def strip(tiles: list[tuple[str, torch.Tensor]], path: Path) -> None:
    """Tiles ``[1, 3, H, W]`` in a row with a caption under each, as a small PNG."""
    gap, caption = 6, 16
    canvas = Image.new("RGB", (len(tiles) * (TILE + gap) - gap, TILE + caption), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(tiles):
        small = F.interpolate(image.float(), size=(TILE, TILE), mode="bilinear", antialias=True)[0]
        array = (small.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        x = i * (TILE + gap)
        canvas.paste(Image.fromarray(array), (x, 0))
        draw.rectangle([x, 0, x + TILE - 1, TILE - 1], outline=(200, 200, 200))
        draw.text((x + 2, TILE + 2), label, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--sample", default="house")
    parser.add_argument("--prompt", default="a drawing of a house")
    parser.add_argument("--blocks", default="0,2,5,8,11")
    args = parser.parse_args()
    torch.set_num_threads(1)

    target = sample_tensor(args.sample, size=224)  # [1, 3, 224, 224]
    band = edge_band(target)
    resnet = recalibrate_batchnorm(tiny_clip("resnet"), target)  # content-sensitive random ResNet
    vit = random_vit12()
    it = dict(iterations=args.iterations)
    conv = dict(clip_model=resnet, text_model=vit, **it)

    def semantic(**kw: Any) -> SketchLoss:
        return CLIPSemanticLoss(vit, **kw)

    recipes = [
        ("edges (no weights)", target, dict(loss="edges", **it)),
        ("faithful", target, dict(loss=CLIPConvLoss(resnet), **it)),
        (
            "loose",
            target,
            dict(loss=CLIPConvLoss(resnet, layer_weights={"layer3": 0.1}, fc_weight=0.0) + semantic(), **it),
        ),
        ("text-guided", target, dict(text=args.prompt, **conv)),
        ("text only", None, dict(text=args.prompt, text_model=vit, **it)),
    ]
    results = [run(name, tgt, settings, band) for name, tgt, settings in recipes]
    strip(
        [("target", target)] + [(r["name"], r["image"]) for r in results],
        ROOT / "docs/images/recipes-proxy.png",
    )

    blocks = [int(b) for b in args.blocks.split(",")]
    cosines = own_token_cosines(vit, target, blocks)
    print("cosine of each patch's token to its block-0 token:", {k: round(v, 3) for k, v in cosines.items()})
    ladder = [run(f"fidelity {b}", target, dict(fidelity=b, clip_model=vit, **it), band) for b in blocks]
    strip(
        [("target", target)] + [(f"block {b}", r["image"]) for b, r in zip(blocks, ladder)],
        ROOT / "docs/images/fidelity-proxy.png",
    )

    start = Sketcher(
        num_strokes=16, num_sketches=1, seed=0, initializer="random", iterations=0, loss="edges", device="cpu"
    ).sketch(target[0])
    with torch.no_grad():
        start_share = ink_on_edges(start.render(), band)
    print(f"{'random start':28s} ink on edges {start_share:.3f}")
    report = {
        "sample": args.sample,
        "prompt": args.prompt,
        "iterations": args.iterations,
        "random_start_ink_on_edges": start_share,
        "edge_band_share_of_canvas": float(band.float().mean()),
        "runs": [{k: v for k, v in r.items() if k != "image"} for r in results + ladder],
        "own_token_cosine_to_block0": cosines,
        "torch": torch.__version__,
    }
    out = ROOT / "benchmarks/results/recipe-pictures.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
