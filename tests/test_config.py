"""Settings files: clipasso.config.read_toml / to_toml and SketchConfig's checks, good and hostile."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipasso import SketchConfig, limits
from clipasso.config import check_setting, read_toml, to_toml
from clipasso.errors import InputError, LimitError


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_a_printed_config_reads_back_equal(tmp_path: Path) -> None:
    cfg = SketchConfig(
        num_strokes=8,
        loss_options={"sigmas": [0.0, 2.0], "nested": {"a": 1, "b": None}, "text": 'say "hi"\\\n\t\x01é'},
        initializer_options={"radius": 0.1},
        clip_model="/weights/my RN101.pt",
        lr_schedule="cosine",
        early_stop_delta=math.inf,
    )
    path = _write(tmp_path / "c.toml", cfg.to_toml())
    back = SketchConfig.from_toml(path)
    # a None inside options has no TOML form: it is left out ("default")
    assert back == dataclasses.replace(cfg, loss_options={**cfg.loss_options, "nested": {"a": 1}})
    assert read_toml(path)["num_strokes"] == 8


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("loss_options = 3", "loss_options must be a table"),
        ("[sketch]\ninitializer_options = [1, 2]", "initializer_options must be a table"),
        ("sketch = 3", r"\[sketch\] must be a table"),
        ("num_strokes = 'eight'", "num_strokes must be a positive integer"),
        ("num_strokes = true", "num_strokes must be a positive integer"),
        ("width = nan", "width must be a positive finite number"),
        ("fix_scale = 1", "fix_scale must be true or false"),
        ("precision = 'fp8'", "precision must be"),
        ("device = ''", "device must be a non-empty string"),
        ("seed = 9223372036854775808", "below 2\\*\\*63"),
        ("loss_options = { 'not an identifier' = 1 }", "option names"),
        ("numstrokes = 3", "unknown setting 'numstrokes'"),
        ("num_strokes = [", "invalid TOML"),
        ("a = " + "[" * 5000 + "]" * 5000, "invalid TOML"),
        ("iterations = 1000000000", "max_iterations"),
        ("image_size = 100000000", "max_canvas_side"),
    ],
)
def test_bad_settings_name_the_file_and_the_setting(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(InputError, match=match) as info:
        read_toml(path)
    assert str(info.value).startswith(f"{path}: ")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_toml(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="directory"):
        read_toml(tmp_path)
    binary = _write(tmp_path / "b.toml", bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_toml(binary)
    big = _write(tmp_path / "big.toml", "# " + "x" * 5000 + "\n")
    with limits.override(max_config_bytes=1000), pytest.raises(LimitError, match="max_config_bytes"):
        read_toml(big)
    limited = _write(tmp_path / "l.toml", "num_strokes = 5000")
    with pytest.raises(LimitError, match=r"l\.toml: num_strokes is 5000") as info:
        read_toml(limited)
    assert info.value.limit == 1024


def test_relations_between_settings_are_checked_when_built(tmp_path: Path) -> None:
    path = _write(tmp_path / "race.toml", "prune_tolerance = 0.01")  # needs prune_after (a preset's)
    table = read_toml(path)
    assert SketchConfig.preset("fast", **table).prune_tolerance == 0.01
    with pytest.raises(InputError, match=r"race\.toml: prune_tolerance and prune_until refine a race"):
        SketchConfig.from_toml(path)
    with pytest.raises(InputError, match="seeds are 63-bit"):
        SketchConfig(seed=2**63 - 10, num_sketches=3)


def test_check_setting_knows_every_field() -> None:
    for f in dataclasses.fields(SketchConfig):
        check_setting(f.name, getattr(SketchConfig(), f.name))
    with pytest.raises(InputError, match="unknown setting"):
        check_setting("banana", 1)


@pytest.mark.parametrize(
    ("setting", "value", "limit"),
    [
        ("num_strokes", 1025, "max_strokes"),
        ("num_segments", 65, "max_segments"),
        ("num_sketches", 65, "max_sketches"),
        ("num_views", 1025, "max_views"),
        ("target_pool", 1025, "max_views"),
        ("iterations", 100_001, "max_iterations"),
        ("image_size", 10**9, "max_canvas_side"),
    ],
)
def test_settings_are_bounded(setting: str, value: int, limit: str) -> None:
    with pytest.raises(LimitError, match=limit):
        SketchConfig(**{setting: value})
    with limits.override(**{limit: value}):
        assert getattr(SketchConfig(**{setting: value}), setting) == value


def test_a_limit_error_names_the_setting() -> None:
    with pytest.raises(LimitError, match="num_strokes is 5000, above the limit max_strokes = 1024") as info:
        SketchConfig(num_strokes=5000)
    assert (info.value.name, info.value.value, info.value.limit) == ("max_strokes", 5000, 1024)


# ---------------------------------------------------------------------------------------- fuzzing

_FIELDS = [f.name for f in dataclasses.fields(SketchConfig)]
_KEYS = st.one_of(st.sampled_from(_FIELDS), st.sampled_from(["sketch", "unknown", "num strokes"]))
_SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.booleans(),
    st.dates(),
    st.times(),
    st.datetimes(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_GOOD_VALUES: dict[str, Any] = {
    "num_strokes": st.integers(1, 1024),
    "num_segments": st.integers(1, 64),
    "width": st.floats(1e-3, 1e3),
    "iterations": st.integers(0, 100_000),
    "lr": st.floats(1e-6, 1e3),
    "num_sketches": st.integers(1, 64),
    "seed": st.integers(0, 2**40),
    "image_size": st.integers(16, 4096),
    "fix_scale": st.booleans(),
    "loss": st.text(min_size=1, max_size=10).filter(str.strip),
    "loss_options": st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
        st.one_of(
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=5),
            st.lists(st.integers(), max_size=3),
        ),
        max_size=3,
    ),
    "clip_model": st.one_of(st.none(), st.text(min_size=1, max_size=12).filter(str.strip)),
    "precision": st.sampled_from(["fp32", "bf16", "auto"]),
    "identity_weight": st.one_of(st.none(), st.floats(0, 1)),
    "device": st.sampled_from(["cpu", "auto", "cuda:1"]),
}


@settings(max_examples=200, deadline=None)
@given(table=st.dictionaries(_KEYS, _VALUES, max_size=5), wrap=st.booleans())
def test_fuzz_generated_tables(
    tmp_path_factory: pytest.TempPathFactory, table: dict[str, Any], wrap: bool
) -> None:
    """Any TOML table: read_toml and SketchConfig give a config or an InputError, nothing else; and a
    config that builds prints and reads back to itself."""
    try:
        text = to_toml(table) if wrap else to_toml(table).removeprefix("[sketch]\n")
    except InputError:
        return  # only values TOML cannot hold (e.g. a time zone on a time)
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = SketchConfig.from_toml(path)
    except InputError:
        return
    path.write_text(cfg.to_toml(), encoding="utf-8")
    assert SketchConfig.from_toml(path) == cfg


@settings(max_examples=200, deadline=None)
@given(table=st.fixed_dictionaries({}, optional=_GOOD_VALUES))
def test_fuzz_good_tables_round_trip(tmp_path_factory: pytest.TempPathFactory, table: dict[str, Any]) -> None:
    cfg = SketchConfig(**table)
    path = tmp_path_factory.mktemp("toml") / "good.toml"
    path.write_text(cfg.to_toml(), encoding="utf-8")
    assert SketchConfig.from_toml(path) == cfg


@settings(max_examples=200, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 255)), min_size=1, max_size=10),
    cut=st.integers(0, 10**5),
)
def test_fuzz_mutated_files(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(SketchConfig(loss_options={"a": [1, 2]}).to_toml().encode())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    path = tmp_path_factory.mktemp("toml") / "m.toml"
    path.write_bytes(bytes(data[: len(data) - cut % 7]))
    try:
        SketchConfig.from_toml(path)
    except InputError:
        pass
