"""A Griffe extension that lets mkdocstrings render clipasso's docstrings as intended.

The docstrings are Google style with a few reStructuredText habits that Griffe's Google parser
and Markdown do not understand. Before parsing, each docstring is rewritten (the source is not
touched):

* ``a, b: Text.`` entries of an ``Args:`` section become one entry per parameter;
* an ``Example:`` section header becomes ``Examples:`` (Griffe only knows the plural; the singular
  would be an admonition in which ``>>>`` lines render as nested block quotes);
* Sphinx roles such as ``:class:`~clipasso.losses.SketchLoss``` become optional cross-references
  (a link when the target is documented, plain code otherwise) and ``:math:`x``` becomes
  ``$x$``;
* ``.. math::`` blocks become ``$$ ... $$`` display math, and ``text::`` literal blocks become
  fenced code blocks.

Used from ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:\s*$")
_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_GROUPED_PARAMS = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+):\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _blocks(lines: list[str]) -> list[str]:
    """Turn ``.. math::`` and ``text::`` literal blocks into Markdown."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        is_math = stripped == ".. math::"
        is_literal = stripped.endswith("::") and not stripped.startswith("..") and not is_math
        if not (is_math or is_literal):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        body: list[str] = []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
            body.append(lines[j])
            j += 1
        while body and not body[-1].strip():
            body.pop()
            j -= 1
        content = [b for b in body if b.strip()]
        if not content:  # "::" with nothing indented after it: leave the line alone
            out.append(line)
            i += 1
            continue
        inner = min(_indent(b) for b in content)
        text = [b[inner:] if b.strip() else "" for b in body]
        while text and not text[0]:
            text.pop(0)
        pad = " " * base
        if is_math:
            out += [pad + "$$", *(pad + t for t in text), pad + "$$"]
        else:
            lead = stripped[:-2].rstrip()
            if lead:
                out += [pad + lead + ":", ""]
            out += [pad + "```python", *(pad + t if t else "" for t in text), pad + "```"]
        i = j
    return out


def _split_grouped_params(lines: list[str]) -> list[str]:
    """``a, b, c: Text.`` in an ``Args:`` section becomes one entry per parameter."""
    out: list[str] = []
    in_args = False
    for line in lines:
        section = _SECTION.match(line)
        if section:
            in_args = section.group(2) in ("Args", "Arguments", "Parameters", "Keyword Args")
        grouped = _GROUPED_PARAMS.match(line) if in_args else None
        if grouped:
            pad, names, desc = grouped.groups()
            out += [f"{pad}{name.strip()}: {desc}" for name in names.split(",")]
        else:
            out.append(line)
    return out


def rewrite(text: str, scope: str) -> str:
    """A docstring ``text`` rewritten for Griffe and Markdown.

    ``scope`` is the dotted path that bare role targets are relative to (the class for a class or a
    method, else the module): ``:meth:`sketch``` in ``Sketcher`` links to ``Sketcher.sketch``.
    """

    def role(match: re.Match[str]) -> str:
        kind, short, target = match.groups()
        target = target.strip()
        title = target.rsplit(".", 1)[-1] if short else target
        if kind in ("func", "meth") and not title.endswith(")"):
            title += "()"
        identifier = target if target.startswith("clipasso") else f"{scope}.{target}"
        code = f"<code>{html.escape(title)}</code>"
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    lines = [_EXAMPLE_HEADER.sub(r"\1Examples:", line) for line in text.splitlines()]
    result = "\n".join(_blocks(_split_grouped_params(lines)))
    result = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", result)
    return _ROLE.sub(role, result)


class ClipassoDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded package as described in the module docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        if obj.is_module or obj.is_class:
            scope = obj.path
        elif obj.parent is not None and obj.parent.is_class:
            scope = obj.parent.path
        else:
            scope = obj.module.path
        obj.docstring.value = rewrite(obj.docstring.value, scope)
