"""A tiny typed registry used for rasterizers, losses and initializers.

Example:
    >>> from clipasso.registry import Registry
    >>> COLOURS: Registry[type] = Registry("colour")
    >>> @COLOURS.register("red")
    ... class Red:
    ...     pass
    >>> COLOURS.create("red").__class__.__name__
    'Red'
    >>> COLOURS.names()
    ['red']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import InputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → factory mapping with a decorator to add entries.

    Args:
        kind: What the registry holds, used in error messages ("loss", "rasterizer", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(
        self, name: str, *, overwrite: bool = False
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a class or factory function under ``name``.

        Args:
            name: The registry key. Case-sensitive.
            overwrite: Replace an existing entry instead of raising.

        Raises:
            InputError: If ``name`` is taken and ``overwrite`` is False.
        """

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, overwrite=overwrite)
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., T], *, overwrite: bool = False) -> None:
        """Register ``factory`` under ``name`` (non-decorator form)."""
        if not name or not isinstance(name, str):
            raise InputError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite and self._entries[name] is not factory:
            raise InputError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = factory

    def remove(self, name: str) -> None:
        """Remove an entry (mostly for tests that register temporary components)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory registered under ``name``.

        Raises:
            InputError: Naming the unknown key and listing the known ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise InputError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Instantiate the entry ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a glob ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
