"""U²-Net (clipasso.matting): architecture, the weights loader, and the reference's pre/post-processing.

All weights here are random: built, saved with torch.save and reloaded through the same loader real
``u2net.pth`` / ``u2netp.pth`` files go through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from clipasso.errors import WeightsError
from clipasso.image import Matting, prepare_target
from clipasso.matting import (
    U2NET_WEIGHTS_ENV,
    U2Net,
    U2NetMatting,
    load_u2net,
    u2net_input,
    u2net_input_size,
    u2net_matte,
)
from clipasso.models.taps import CLIP_MEAN, CLIP_STD


def _random_state(variant: str, seed: int = 0) -> dict[str, Tensor]:
    """A U2Net state dict with random weights AND random BatchNorm statistics."""
    torch.manual_seed(seed)
    net = U2Net(variant)  # type: ignore[arg-type]
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(mod.weight, 0.5, 1.5)
    return net.state_dict()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("u2") / "u2netp.pth"
    torch.save(_random_state("u2netp"), path)
    return path


def test_parameter_counts_match_the_published_sizes() -> None:
    # the paper / README: U2-Net 44.0 M parameters (176.3 MB), U2-Net† 1.13 M (4.7 MB)
    full = sum(p.numel() for p in U2Net("u2net").parameters())
    small = sum(p.numel() for p in U2Net("u2netp").parameters())
    assert abs(full - 44.0e6) / 44.0e6 < 0.005
    assert abs(small - 1.13e6) / 1.13e6 < 0.005


def test_full_model_forward_shapes() -> None:
    net = U2Net("u2net").eval()
    with torch.no_grad():
        outs = net(torch.rand(1, 3, 32, 40))
    assert len(outs) == 7
    assert all(tuple(o.shape) == (1, 1, 32, 40) for o in outs)
    assert all(bool(((o > 0) & (o < 1)).all()) for o in outs)


@pytest.mark.parametrize("size", [(64, 48), (37, 53)])  # odd sizes: the ceil-mode pools and upsampling
def test_small_model_shapes_any_size(size: tuple[int, int]) -> None:
    net = U2Net("u2netp").eval()
    with torch.no_grad():
        outs = net(torch.rand(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [(2, 1, *size)] * 7


def test_fused_output_is_the_1x1_fusion_of_the_sides() -> None:
    net = U2Net("u2netp").eval()
    with torch.no_grad():
        fused, *sides = net(torch.rand(1, 3, 32, 32))
        logits = torch.cat([torch.logit(s.double()) for s in sides], dim=1)
        w = net.outconv.weight.double().view(1, 6, 1, 1)
        expect = torch.sigmoid((logits * w).sum(1, keepdim=True) + net.outconv.bias.double())
    assert torch.allclose(fused.double(), expect, atol=1e-5)


def test_key_names_follow_the_distributed_layout() -> None:
    keys = set(U2Net("u2net").state_dict())
    for k in (
        "stage1.rebnconvin.conv_s1.weight",
        "stage1.rebnconv7.conv_s1.weight",
        "stage1.rebnconv6d.bn_s1.running_var",
        "stage5.rebnconv4.conv_s1.weight",
        "stage5d.rebnconv3d.conv_s1.bias",
        "stage4d.rebnconv1d.bn_s1.weight",
        "side6.weight",
        "outconv.bias",
    ):
        assert k in keys, k
    assert not any("rebnconv5" in k for k in keys if k.startswith("stage4."))  # RSU-4 stops at 4
    # dilations: RSU-7's bottom 2, RSU-4F's 1, 2, 4, 8
    net = U2Net("u2netp")
    assert net.stage1.rebnconv7.conv_s1.dilation == (2, 2)
    assert [getattr(net.stage6, f"rebnconv{i}").conv_s1.dilation[0] for i in (1, 2, 3, 4)] == [1, 2, 4, 8]


def test_save_reload_is_exact_and_deterministic(small_file: Path) -> None:
    ref = U2Net("u2netp")
    ref.load_state_dict(_random_state("u2netp"))
    ref.eval()
    net = load_u2net(small_file)
    assert net.variant == "u2netp" and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        a, b, c = ref(x)[0], net(x)[0], net(x)[0]
    assert torch.equal(a, b) and torch.equal(b, c)


def test_loader_accepts_old_files_and_dataparallel_prefix(tmp_path: Path) -> None:
    state = _random_state("u2netp")
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        outs = [load_u2net(tmp_path / n)(x)[0] for n in ("old.pth", "dp.pth")]
    assert torch.equal(outs[0], outs[1])


def test_environment_variable(small_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(U2NET_WEIGHTS_ENV, str(small_file))
    assert load_u2net().variant == "u2netp"
    monkeypatch.setenv(U2NET_WEIGHTS_ENV, str(small_file.parent / "nope.pth"))
    with pytest.raises(WeightsError, match=U2NET_WEIGHTS_ENV):
        load_u2net()


def test_missing_weights_say_where_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(U2NET_WEIGHTS_ENV, raising=False)
    for call in (lambda: load_u2net(), lambda: load_u2net(tmp_path / "u2net.pth")):
        with pytest.raises(WeightsError) as info:
            call()
        text = str(info.value)
        assert "u2net.pth" in text and "--u2net-weights" in text and U2NET_WEIGHTS_ENV in text
        assert "xuebinqin/U-2-Net" in text
    with pytest.raises(WeightsError, match="directory"):
        load_u2net(tmp_path)
    # lazy: building the matting model reads nothing; the first call does
    matting = U2NetMatting(tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="not found"):
        matting(torch.rand(1, 3, 32, 32))


def test_wrong_keys_and_shapes_are_named(tmp_path: Path) -> None:
    state = _random_state("u2netp")
    renamed = {k.replace("side3", "side_3"): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(WeightsError, match=r"missing keys: side3\.weight.*unexpected keys: side_3"):
        load_u2net(tmp_path / "renamed.pth")
    shaped = dict(state)
    shaped["outconv.weight"] = torch.zeros(1, 5, 1, 1)
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"wrong shapes: outconv\.weight \(1, 5, 1, 1\)"):
        load_u2net(tmp_path / "shape.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a U2Net state dict"):
        load_u2net(tmp_path / "other.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_u2net(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read U2Net weights"):
        load_u2net(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="u2netp state dict, but variant='u2net'"):
        load_u2net(_save(tmp_path, state), variant="u2net")


def _save(folder: Path, state: dict[str, Tensor]) -> Path:
    path = folder / "good.pth"
    torch.save(state, path)
    return path


def test_code_in_a_pickle_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("ran",))

    torch.save(
        {"stage1.rebnconv1.conv_s1.weight": Evil()},
        tmp_path / "evil.pth",
        _use_new_zipfile_serialization=True,
    )
    with pytest.raises(WeightsError, match="cannot read"):
        load_u2net(tmp_path / "evil.pth")


@pytest.mark.parametrize(
    ("hw", "expect"),
    [((480, 640), (320, 426)), ((640, 480), (426, 320)), ((333, 1000), (320, 960)), ((200, 90), (200, 90))],
)
def test_input_size_is_torchvision_resize_of_the_short_side(
    hw: tuple[int, int], expect: tuple[int, int]
) -> None:
    assert u2net_input_size(*hw) == expect


def test_input_normalisation_by_hand() -> None:
    img = torch.rand(1, 3, 20, 30)  # short side under 320: no resize
    got = u2net_input(img)
    mean = np.array(CLIP_MEAN).reshape(1, 3, 1, 1)
    std = np.array(CLIP_STD).reshape(1, 3, 1, 1)
    assert np.allclose(got.numpy(), (img.numpy() - mean) / std, atol=1e-6)
    big = u2net_input(torch.rand(1, 3, 400, 500))
    assert tuple(big.shape) == (1, 3, 320, 400)


def test_matte_postprocessing_by_hand() -> None:
    # a 2x2 map: min-max → [0, 1/3, 2/3, 1]; threshold 0.5 → [0, 0, 1, 1]
    pred = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    hard = u2net_matte(pred, (4, 4))
    # bilinear 2x2 → 4x4 with half-pixel centres: rows 0-1 follow the top row (0), rows 2-3 the bottom
    # (1) except for the blend at rows 1 and 2: row 1 = 0.25, row 2 = 0.75 → thresholded 0 and 1
    expect = torch.tensor([[0.0] * 4, [0.0] * 4, [1.0] * 4, [1.0] * 4])
    assert torch.equal(hard[0, 0], expect)
    soft = u2net_matte(pred, (2, 2), soft=True)
    assert torch.allclose(soft[0, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert torch.equal(u2net_matte(torch.full((1, 1, 3, 3), 0.7), (3, 3)), torch.zeros(1, 1, 3, 3))


class _Lightness(nn.Module):
    """A stand-in net: its 'fused map' is the sigmoid of the normalised red channel."""

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = torch.sigmoid(x[:, :1])
        return (out,) * 7


def test_whole_pipeline_by_hand() -> None:
    img = torch.zeros(1, 3, 24, 36)
    img[:, 0, 6:18, 9:27] = 1.0  # a red rectangle on black
    matte = U2NetMatting(model=_Lightness())(img)
    # by hand: no resize (short side 24 ≤ 320); red normalised = (r − 0.4815) / 0.2686; sigmoid is
    # monotone, min-max of two values gives 0 and 1: the matte is the rectangle exactly
    expect = torch.zeros(1, 1, 24, 36)
    expect[..., 6:18, 9:27] = 1.0
    assert torch.equal(matte, expect)
    assert isinstance(U2NetMatting(model=_Lightness()), Matting)
    target = prepare_target(img, size=24, matting=U2NetMatting(model=_Lightness()))
    assert target.mask is not None and float(target.mask.mean()) > 0
    outside = target.image[..., :6, :]
    assert torch.allclose(outside, torch.ones_like(outside), atol=1e-5)  # background painted white


def test_matting_is_deterministic_on_random_weights(small_file: Path) -> None:
    m = U2NetMatting(small_file)
    img = torch.rand(1, 3, 48, 64)
    a, b = m(img), m(img)
    assert torch.equal(a, b) and tuple(a.shape) == (1, 1, 48, 64)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    s = U2NetMatting(small_file, soft=True)(img)
    assert float(s.min()) >= 0 and float(s.max()) <= 1 and float(s.max()) > 0.99
