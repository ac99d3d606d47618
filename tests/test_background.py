"""Photos with backgrounds (clipasso.background): the mask's sources, its uses and their outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipasso import Sketcher
from clipasso.background import cut_out, source_of, weight_map
from clipasso.cli import main
from clipasso.config import SketchConfig, check_setting
from clipasso.errors import InputError, WeightsError
from clipasso.image import prepare_target
from clipasso.matting import U2Net, U2NetMatting
from clipasso.outputs import save_outputs
from clipasso.testing import tiny_clip_file

SIZE = 64
FAST = {
    "loss": "edges",
    "initializer": "edges",
    "num_strokes": 4,
    "iterations": 2,
    "num_sketches": 1,
    "image_size": SIZE,
    "device": "cpu",
}


def _scene(size: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """An orange square on a grey blotchy texture, and its mask ([3, H, W], [H, W])."""
    g = torch.Generator().manual_seed(0)
    tex = torch.nn.functional.interpolate(
        torch.rand(1, 1, 10, 10, generator=g), size=(size, size), mode="bilinear"
    )
    img = (0.35 + 0.3 * tex[0]).expand(3, size, size).clone()
    mask = torch.zeros(size, size)
    mask[20:60, 16:56] = 1.0
    img = img * (1 - mask) + torch.tensor([0.9, 0.4, 0.1]).view(3, 1, 1) * mask
    return img, mask


@pytest.fixture(scope="module")
def u2net_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("u2") / "u2netp.pth"
    torch.manual_seed(0)
    torch.save(U2Net("u2netp").state_dict(), path)
    return path


def test_weight_map_keeps_the_object_and_falls_off_outside() -> None:
    m = torch.zeros(1, 1, 48, 48)
    m[..., 12:36, 12:36] = 1.0
    w = weight_map(m)
    assert torch.equal(w > 0.5, m > 0.5)  # the object is exactly W > 0.5
    assert float(w[m > 0.5].min()) == 1.0
    row = w[0, 0, 24, 36:48]  # leaving the square to the right
    assert bool((row[1:] <= row[:-1]).all()) and 0.1 < float(row[0]) <= 0.5 and float(row[-1]) < 0.05
    soft = torch.full_like(m, 0.8)
    assert torch.allclose(weight_map(m, soft)[m > 0.5], torch.tensor(0.8))
    assert torch.equal(weight_map(m, margin=0.0), m)
    with pytest.raises(InputError):
        weight_map(m[0])


def test_cut_out_paints_the_background_white() -> None:
    img, mask = _scene()
    out = cut_out(img[None], mask[None, None])
    assert torch.equal(out[0][:, mask > 0.5], img[:, mask > 0.5])
    assert bool((out[0][:, mask < 0.5] == 1.0).all())


def test_mask_argument_names_a_source_or_is_a_mask() -> None:
    assert source_of("u2net", None) == ("u2net", None)
    assert source_of(None, "weights-free") == ("weights-free", None)
    assert source_of("my-mask.png", "u2net") == (None, "my-mask.png")  # a given mask wins
    with pytest.raises(InputError, match="mask_source"):
        check_setting("mask_source", "rembg")
    with pytest.raises(InputError, match="background"):
        SketchConfig(background="blur")
    with pytest.raises(InputError, match="did you mean 'weights-free'"):
        Sketcher(**FAST).sketch(_scene()[0], mask="weights_free")


@pytest.mark.parametrize("background", ["keep", "cutout", "weight"])
def test_each_use_of_a_given_mask(background: str) -> None:
    img, mask = _scene()
    result = Sketcher(background=background, **FAST).sketch(img, mask=mask)
    ref = prepare_target(img, size=SIZE, mask=mask)
    assert ref.mask is not None and result.target.mask is not None
    assert torch.equal(result.target.mask > 0.5, ref.mask > 0.5)  # the starts' mask is the object
    if background == "keep":
        assert torch.equal(result.target.image, ref.image) and torch.equal(result.target.mask, ref.mask)
    elif background == "cutout":  # composited at the image's own resolution, as the reference does
        composite = prepare_target(img * mask + (1 - mask), size=SIZE)
        assert torch.allclose(result.target.image, composite.image, atol=1e-6)
    else:  # one stage: the image whole, the soft weight map for the loss
        assert torch.equal(result.target.image, ref.image)
        assert torch.allclose(result.target.mask, weight_map(ref.mask))
        assert float(result.target.mask[ref.mask < 0.5].max()) > 0.1  # the surroundings keep a weight


def test_cutout_and_weight_need_a_mask() -> None:
    img, _ = _scene()
    for background in ("cutout", "weight"):
        with pytest.raises(InputError, match="needs an object mask"):
            Sketcher(background=background, **FAST).sketch(img)
    Sketcher(background="keep", **FAST).sketch(img)  # keep needs none


def test_weights_free_source() -> None:
    from clipasso.init.weights_free import weights_free_mask

    img, mask = _scene()
    result = Sketcher(mask_source="weights-free", **FAST).sketch(img)
    target = prepare_target(img, size=SIZE)
    assert result.target.mask is not None
    assert torch.equal(result.target.mask, weights_free_mask(target.image))
    small = torch.nn.functional.interpolate(mask[None, None], size=(SIZE, SIZE), mode="nearest") > 0.5
    got = result.target.mask > 0.5
    assert float((got & small).sum() / (got | small).sum()) > 0.7


def test_u2net_source_reproduces_the_reference_cutout(
    u2net_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img, _ = _scene()
    sk = Sketcher(background="cutout", u2net_weights=str(u2net_file), **FAST)
    result = sk.sketch(img, mask="u2net")
    ref = prepare_target(img, size=SIZE, matting=U2NetMatting(u2net_file))  # the reference's pipeline
    assert torch.equal(result.target.image, ref.image)
    assert ref.mask is not None and torch.equal(result.target.mask, ref.mask)
    # the weights come from the environment too; a missing file is a WeightsError saying where to get it
    monkeypatch.setenv("CLIPASSO_U2NET_WEIGHTS", str(u2net_file))
    Sketcher(background="weight", mask_source="u2net", **FAST).sketch(img)
    monkeypatch.delenv("CLIPASSO_U2NET_WEIGHTS")
    with pytest.raises(WeightsError, match=r"u2net\.pth"):
        Sketcher(mask_source="u2net", **FAST).sketch(img)


def test_saliency_source_is_the_vit_relevance(tmp_path: Path) -> None:
    from clipasso.init.saliency import relevance_map
    from clipasso.testing import tiny_clip

    img, _ = _scene(224)
    sk = Sketcher(
        **{**FAST, "image_size": 224, "initializer": "saliency"},
        saliency_model=str(tiny_clip_file("vit")),
        background="weight",
        mask_source="saliency",
    )
    result = sk.sketch(img)
    rel = relevance_map(tiny_clip("vit"), prepare_target(img, size=224).image)
    assert result.target.mask is not None
    assert torch.equal(result.target.mask > 0.5, rel > 0.5)
    assert torch.allclose(result.target.mask, weight_map(rel > 0.5, rel), atol=1e-5)


def test_outputs_hold_the_matte_and_the_weights(tmp_path: Path) -> None:
    img, mask = _scene()
    for background in ("keep", "weight"):
        result = Sketcher(background=background, **FAST).sketch(img, mask=mask)
        written = save_outputs(result, tmp_path / background)
        matte = np.asarray(Image.open(written["mask.png"]).convert("L")) > 127
        assert result.target.mask is not None
        assert np.array_equal(matte, (result.target.mask[0, 0] > 0.5).numpy())
        assert ("weights.png" in written) == (background == "weight")
    weights = np.asarray(Image.open(tmp_path / "weight" / "weights.png").convert("L")) / 255.0
    assert 0.05 < float(weights[~matte].max()) <= 0.51  # the soft surroundings


def _png(path: Path, array: torch.Tensor) -> Path:
    arr = (
        (array.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        if array.dim() == 3
        else (array.numpy() * 255).astype(np.uint8)
    )
    Image.fromarray(arr).save(path)
    return path


def test_cli_mask_sources_and_background(
    tmp_path: Path, u2net_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img, mask = _scene()
    photo = _png(tmp_path / "photo.png", img)
    matte = _png(tmp_path / "matte.png", mask)
    common = ["--loss", "edges", "--iterations", "2", "--num-sketches", "1", "--strokes", "4", "-q"]
    out = tmp_path / "out"
    assert (
        main(["sketch", str(photo), "-o", str(out), "--mask", str(matte), "--background", "weight", *common])
        == 0
    )
    assert (out / "photo" / "mask.png").exists() and (out / "photo" / "weights.png").exists()
    capsys.readouterr()
    args = [
        "sketch",
        str(photo),
        "-o",
        str(tmp_path / "o2"),
        "--mask",
        "weights-free",
        "--background",
        "cutout",
    ]
    assert main([*args, *common]) == 0
    cfg = (tmp_path / "o2" / "photo" / "config.json").read_text()
    assert '"mask_source": "weights-free"' in cfg and '"background": "cutout"' in cfg
    # u2net: the weights by flag; without them a one-line usage error before any output
    args = [
        "sketch",
        str(photo),
        "-o",
        str(tmp_path / "o3"),
        "--mask",
        "u2net",
        "--u2net-weights",
        str(u2net_file),
    ]
    assert main([*args, *common]) == 0
    capsys.readouterr()
    code = main(["sketch", str(photo), "-o", str(tmp_path / "o4"), "--mask", "u2net", *common])
    err = capsys.readouterr().err
    assert code == 2 and "--u2net-weights" in err and not (tmp_path / "o4").exists()
    code = main(
        [
            "sketch",
            str(photo),
            str(photo),
            "-o",
            str(tmp_path / "o5"),
            "--mask",
            "u2net",
            "--mask",
            str(matte),
        ]
    )
    assert code == 2 and "give it once" in capsys.readouterr().err


def test_edge_starts_follow_the_objects_own_edges() -> None:
    """With a mask, the edges initializer reads the target composited onto white by it."""
    from clipasso.init import EdgeInitializer
    from clipasso.xdog import edge_ink

    img, mask = _scene()
    target = img[None]
    w = weight_map(mask[None, None])
    res = EdgeInitializer()(target, 6, generator=torch.Generator().manual_seed(0), mask=w)
    composite = target * w + (1 - w)
    assert res.edges is not None and res.pixels is not None
    assert torch.equal(res.edges, 1.0 - edge_ink(composite)[0, 0])
    assert bool((w[0, 0][res.pixels[:, 0], res.pixels[:, 1]] > 0.5).all())  # every start on the object
    # the texture's own edges, away from the object, are not in the map
    plain = 1.0 - edge_ink(target)[0, 0]
    far = w[0, 0] < 0.01
    assert float((plain[far] == 0).float().mean()) > 0.05 and bool((res.edges[far] == 1).all())
