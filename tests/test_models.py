"""CLIP loading (names, files, errors) and feature taps by layer name."""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import pytest
import torch

from clipasso.errors import WeightsError
from clipasso.models import (
    CLIP_MODELS,
    RESNET_LAYERS,
    available_models,
    is_resnet,
    is_vit,
    load_clip,
    loading,
    normalize,
    resnet_features,
    vit_features,
    weights_env_var,
)
from clipasso.testing import _build, save_tiny_clip, tiny_clip, tiny_clip_file

KINDS = ["resnet", "vit"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return normalize(torch.rand(2, 3, 224, 224, generator=g))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_round_trip_outputs_equal_original(kind: str, fmt: str, images: torch.Tensor) -> None:
    original = _build(kind, seed=3)
    loaded = load_clip(tiny_clip_file(kind, 3, fmt))
    with torch.no_grad():
        expected = original.encode_image(images)
        got = loaded.encode_image(images)
    assert torch.equal(expected, got)
    text = torch.randint(0, 49408, (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(original.encode_text(text), loaded.encode_text(text))


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_model_is_frozen_eval_float32_cpu(kind: str) -> None:
    model = tiny_clip(kind)
    assert not model.training
    params = list(model.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)


def test_tiny_models_are_deterministic() -> None:
    a = _build("vit", 7).state_dict()
    b = _build("vit", 7).state_dict()
    c = _build("vit", 8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="neither an existing file nor a known model name"):
        load_clip(tmp_path / "nope.pt")


def test_directory_given(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is a directory"):
        load_clip(tmp_path)


@pytest.mark.parametrize("payload", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_file(tmp_path: Path, payload: bytes) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(payload)
    with pytest.raises(WeightsError, match=r"could not read CLIP weights from .*bad\.pt"):
        load_clip(bad)


def test_truncated_file(tmp_path: Path) -> None:
    good = tiny_clip_file("resnet", 0).read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(WeightsError, match="could not read CLIP weights"):
        load_clip(bad)


def test_not_a_clip_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="not a CLIP checkpoint: missing"):
        load_clip(path)


def test_wrong_shapes(tmp_path: Path) -> None:
    sd = _build("resnet", 0).state_dict()
    sd["visual.layer2.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "wrong.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="do not fit a CLIP model"):
        load_clip(path)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("text_projection", torch.zeros(3), "shapes do not describe a CLIP model"),  # 1-D: no shape[1]
        ("visual.attnpool.positional_embedding", torch.zeros(0, 8), "shapes do not describe"),
        ("positional_embedding", torch.zeros(100_000, 1), "text context of 100000 tokens"),  # a 40 GB mask
    ],
)
def test_shapes_no_clip_has(tmp_path: Path, key: str, value: torch.Tensor, match: str) -> None:
    """A damaged or hostile state dict is a WeightsError, and its shapes cannot make the model allocate
    more than the file holds."""
    sd = _build("resnet", 0).state_dict()
    sd[key] = value
    path = tmp_path / "odd.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=match):
        load_clip(path)


def test_unknown_name() -> None:
    with pytest.raises(WeightsError, match="RN101"):
        load_clip("RN9000")


def _fail(url: str, timeout: float) -> io.BytesIO:
    raise urllib.error.URLError("Temporary failure in name resolution")


def test_offline_error_names_model_url_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "_urlopen", _fail)
    monkeypatch.setattr(loading.Path, "home", lambda: tmp_path / "home")
    monkeypatch.delenv(weights_env_var("RN101"), raising=False)
    with pytest.raises(WeightsError) as info:
        load_clip("RN101", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "'RN101'" in message
    assert CLIP_MODELS["RN101"][0] in message
    assert "CLIPASSO_WEIGHTS_RN101" in message and "--clip-weights" in message
    assert "--loss edges" in message  # the weights-free mode, for those who have no weights at all
    assert not list((tmp_path / "cache").glob("*")), "a failed download must leave nothing behind"


@pytest.mark.parametrize(
    ("role", "flag", "other"),
    [("saliency", "--saliency-weights", "--clip-weights"), ("loss", "--clip-weights", "--saliency-weights")],
)
def test_offline_error_names_the_flag_of_the_models_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str, flag: str, other: str
) -> None:
    monkeypatch.setattr(loading, "_urlopen", _fail)
    monkeypatch.setattr(loading.Path, "home", lambda: tmp_path / "home")
    monkeypatch.delenv(weights_env_var("ViT-B/32"), raising=False)
    with pytest.raises(WeightsError) as info:
        load_clip("ViT-B/32", cache_dir=tmp_path / "cache", role=role)
    message = str(info.value)
    assert flag in message and other not in message
    assert "CLIPASSO_WEIGHTS_VIT_B_32" in message and "--loss edges` needs none" in message


def _fake_network(payload: bytes, calls: list[str]):  # type: ignore[no-untyped-def]
    def opener(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(payload)

    return opener


def test_download_checks_sha_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = tiny_clip_file("vit", 0).read_bytes()
    sha = loading.hashlib.sha256(payload).hexdigest()
    url = f"https://example.invalid/clip/{sha}/Tiny.pt"
    monkeypatch.setitem(CLIP_MODELS, "Tiny", (url, sha))
    calls: list[str] = []
    monkeypatch.setattr(loading, "_urlopen", _fake_network(payload, calls))
    model = load_clip("Tiny", cache_dir=tmp_path)
    assert is_vit(model) and calls == [url]
    assert (tmp_path / "Tiny.pt").read_bytes() == payload
    load_clip("Tiny", cache_dir=tmp_path)
    assert calls == [url], "a cached, verified file must not be downloaded again"


def test_download_with_bad_checksum_saves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CLIP_MODELS, "Tiny", ("https://example.invalid/Tiny.pt", "0" * 64))
    monkeypatch.setattr(loading, "_urlopen", _fake_network(b"tampered", []))
    monkeypatch.setattr(loading.Path, "home", lambda: tmp_path / "home")
    with pytest.raises(WeightsError, match="SHA-256"):
        load_clip("Tiny", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))


def test_env_var_points_to_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "_urlopen", _fail)
    local = save_tiny_clip(tmp_path / "my-rn.pt", "resnet", 1)
    monkeypatch.setenv(weights_env_var("RN50"), str(local))
    assert is_resnet(load_clip("RN50", cache_dir=tmp_path / "cache"))


def test_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPASSO_CACHE", str(tmp_path / "c"))
    assert loading.default_cache_dir() == tmp_path / "c"


def test_available_models_lists_reference_models() -> None:
    names = available_models()
    for name in ("RN50", "RN101", "RN50x4", "ViT-B/32", "ViT-B/16"):
        assert name in names
        url, sha = CLIP_MODELS[name]
        assert sha in url and len(sha) == 64


# --- taps ---------------------------------------------------------------------------------------


def test_resnet_taps_shapes_and_attnpool(tiny_resnet: torch.nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        feats = resnet_features(tiny_resnet, images)
        emb = tiny_resnet.encode_image(images)
    assert list(feats) == list(RESNET_LAYERS)
    assert feats["stem"].shape == (2, 8, 56, 56)
    assert feats["layer1"].shape == (2, 32, 56, 56)
    assert feats["layer2"].shape == (2, 64, 28, 28)
    assert feats["layer3"].shape == (2, 128, 14, 14)
    assert feats["layer4"].shape == (2, 256, 7, 7)
    assert torch.equal(feats["attnpool"], emb)


def test_resnet_taps_stop_early_and_match(tiny_resnet: torch.nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        full = resnet_features(tiny_resnet, images)
        part = resnet_features(tiny_resnet.visual, images, ["layer2"])
    assert list(part) == ["layer2"]
    assert torch.equal(part["layer2"], full["layer2"])


def test_resnet_taps_survive_relu_renaming(images: torch.Tensor) -> None:
    model = _build("resnet", 0)
    with torch.no_grad():
        before = resnet_features(model, images, ["stem"])["stem"]
        for i in (1, 2, 3):
            delattr(model.visual, f"relu{i}")
        model.visual.relu = torch.nn.ReLU()  # the older CLIP naming
        after = resnet_features(model, images, ["stem"])["stem"]
    assert torch.equal(before, after)


def test_resnet_taps_reject_bad_input(tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module) -> None:
    x = torch.zeros(1, 3, 224, 224)
    with pytest.raises(ValueError, match="unknown ResNet layer"):
        resnet_features(tiny_resnet, x, ["layer5"])
    with pytest.raises(ValueError, match="ResNet tower"):
        resnet_features(tiny_vit, x)
    with pytest.raises(ValueError, match="ViT tower"):
        vit_features(tiny_resnet, x)


def test_vit_taps(tiny_vit: torch.nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        feats = vit_features(tiny_vit, images)
        emb = tiny_vit.encode_image(images)
    assert len(feats.tokens) == 3 and len(feats.attention) == 3
    assert all(t.shape == (2, 50, 128) for t in feats.tokens)
    assert all(a.shape == (2, 2, 50, 50) for a in feats.attention)
    for a in feats.attention:
        assert (a >= 0).all()
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 50), rtol=0, atol=1e-5)
    assert feats.embedding is not None
    torch.testing.assert_close(feats.embedding, emb, rtol=1e-5, atol=1e-6)


def test_vit_attention_matches_torch_mha_weights(tiny_vit: torch.nn.Module, images: torch.Tensor) -> None:
    """Our recomputed probabilities equal nn.MultiheadAttention's own (need_weights=True) ones."""
    visual = tiny_vit.visual
    with torch.no_grad():
        feats = vit_features(visual, images, blocks=1)
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], 1) + visual.positional_embedding
        x = visual.ln_pre(x).permute(1, 0, 2)
        block = visual.transformer.resblocks[0]
        h = block.ln_1(x)
        _, weights = block.attn(h, h, h, need_weights=True, average_attn_weights=False)
    assert feats.embedding is None
    torch.testing.assert_close(feats.attention[0], weights, rtol=1e-5, atol=1e-6)


def test_vit_wrong_resolution(tiny_vit: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="resize to 224"):
        vit_features(tiny_vit, torch.zeros(1, 3, 256, 256))
