"""Resource limits (clipasso.limits): defaults, environment, overrides, and where they are enforced."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from clipasso import Limits, SketchConfig, limits
from clipasso.errors import InputError, LimitError


def test_defaults_are_far_above_real_use() -> None:
    d = Limits()
    assert d.max_image_pixels == 178_956_970  # Pillow's own hard limit
    assert d.max_canvas_side >= 224 * 8 and d.max_strokes >= 256 and d.max_iterations >= 20 * 2000
    cfg = SketchConfig()
    assert cfg.num_strokes <= d.max_strokes and cfg.image_size <= d.max_canvas_side


def test_environment_moves_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPASSO_MAX_STROKES", "2_000")
    assert limits.get_limits().max_strokes == 2000
    limits.check_limit(2000, "max_strokes", "num_strokes")
    with pytest.raises(LimitError):
        limits.check_limit(2001, "max_strokes", "num_strokes")
    monkeypatch.setenv("CLIPASSO_MAX_STROKES", "many")
    with pytest.raises(InputError, match="CLIPASSO_MAX_STROKES='many' is not an integer"):
        limits.get_limits()
    monkeypatch.setenv("CLIPASSO_MAX_STROKES", "0")
    with pytest.raises(InputError, match="positive"):
        limits.get_limits()


def test_override_is_scoped_and_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPASSO_MAX_ITERATIONS", "50")
    seen: list[int] = []
    with limits.override(max_iterations=10) as inside:
        assert inside.max_iterations == 10 and limits.get_limits().max_iterations == 10
        thread = threading.Thread(target=lambda: seen.append(limits.get_limits().max_iterations))
        thread.start()
        thread.join()
        limits.check_limit(10, "max_iterations", "iterations")
        with pytest.raises(LimitError):
            limits.check_limit(11, "max_iterations", "iterations")
    assert seen == [50]  # another thread sees the environment, not this block
    assert limits.get_limits().max_iterations == 50
    with pytest.raises(InputError, match="unknown limit"):
        with limits.override(max_bananas=3):
            pass
    with pytest.raises(InputError, match="positive integer"):
        Limits(max_strokes=0)


def test_limit_errors_say_what_and_how() -> None:
    with pytest.raises(LimitError) as info:
        limits.check_limit(5000, "max_strokes", "num_strokes")
    exc = info.value
    assert (exc.name, exc.value, exc.limit) == ("max_strokes", 5000, 1024)
    assert "num_strokes is 5000, above the limit max_strokes = 1024" in str(exc)
    assert "CLIPASSO_MAX_STROKES" in str(exc) and isinstance(exc, InputError)


def test_every_field_has_an_environment_variable() -> None:
    names = [f.name for f in dataclasses.fields(Limits)]
    env = {limits.env_var(n): "7" for n in names}
    assert all(getattr(Limits.from_env(env), n) == 7 for n in names)
