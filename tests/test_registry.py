"""Registry.create checks options the way a settings file gives them (names, plain-value types)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pytest
import torch

from clipasso.errors import InputError
from clipasso.registry import Registry


class _Thing:
    def __init__(
        self,
        *,
        size: int = 1,
        scale: float = 1.0,
        mode: Literal["a", "b"] = "a",
        weights: Sequence[float] = (1.0,),
        extra: Mapping[str, int] | None = None,
        anything: object = None,
    ) -> None:
        self.size, self.scale, self.weights = size, scale, weights


THINGS: Registry[_Thing] = Registry("thing")
THINGS.add("thing", _Thing)


def test_good_options_pass() -> None:
    t = THINGS.create("thing", size=3, scale=2, mode="b", weights=[1, 2.5], extra={"k": 1}, anything=[1])
    assert (t.size, t.scale, t.weights) == (3, 2, [1, 2.5])  # an int is a fine float


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"sizes": 3}, r"unexpected keyword argument 'sizes' \(its options: size, scale, mode"),
        ({"size": 2.0}, "option size must be int, got 2.0"),
        ({"size": True}, "option size must be int"),
        ({"scale": "big"}, "option scale must be float"),
        ({"mode": "c"}, r"option mode must be Literal\['a', 'b'\]"),
        ({"weights": "abc"}, r"option weights must be Sequence\[float\]"),
        ({"weights": [1, "x"]}, "option weights must be"),
        ({"extra": {"k": "v"}}, "option extra must be"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        THINGS.create("thing", **options)


def test_objects_are_passed_through() -> None:
    """Only plain (file-like) values are type-checked; a tensor for a Sequence is the caller's call."""
    t = THINGS.create("thing", weights=torch.ones(3))
    assert isinstance(t.weights, torch.Tensor)
