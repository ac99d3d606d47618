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

import collections.abc
import datetime
import fnmatch
import inspect
import re
import types
import typing
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
        """Instantiate the entry ``name`` with keyword arguments.

        Options are bound to the factory's signature first; values of the plain types a settings
        file holds (numbers, strings, booleans, lists, tables) are also checked against the
        factory's type annotations, so a bad value in a config file is an error that names the
        option. Other objects (modules, tensors, ...) are passed as they are.

        Raises:
            InputError: Unknown ``name``, or options the factory does not take (named, with the
                ones it does take) or required ones missing.
        """
        factory = self.get(name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # some builtins have no signature: let the call decide
            signature = None
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                takes = [
                    p.name
                    for p in signature.parameters.values()
                    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
                raise InputError(
                    f"{self.kind} {name!r}: {exc} (its options: {', '.join(takes) or 'none'})"
                ) from None
            hints = _type_hints(factory)
            for key, value in kwargs.items():
                hint = hints.get(key)
                if hint is not None and _is_plain(value) and not _matches(value, hint):
                    raise InputError(
                        f"{self.kind} {name!r}: option {key} must be {_describe(hint)}, got {value!r}"
                    )
        return factory(**kwargs)

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


_PLAIN = (bool, int, float, str, list, tuple, dict, type(None), datetime.date, datetime.time)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is made only of the types a TOML/JSON settings file can hold."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # annotations that do not resolve at runtime: no checks
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """Whether a plain value fits a type annotation (unknown constructs are accepted)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (collections.abc.Sequence, list, tuple, collections.abc.Iterable):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value) if args else True
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            return False
        return all(_matches(v, args[1]) for v in value.values()) if len(args) == 2 else True
    if origin is not None:
        return isinstance(value, origin) if isinstance(origin, type) else True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(hint).replace("NoneType", "None"))
