"""Every code block of the README and docs/ runs, and every docstring example passes.

The blocks run as a reader would run them, with what a reader would have at hand:

* ``python`` blocks run in order, one namespace per page (later blocks use earlier ones' names),
  in a fresh folder holding the images the pages name (``photo.png``, ``house.png``, ``cat.png``,
  ...: the package's drawn samples);
* CLIP weights are tiny random-weight models written through the public loader, reached the way
  the docs say real ones are: the ``CLIPASSO_WEIGHTS_*`` variables and ``~/weights/*.pt``;
* ``bash`` blocks: each ``clipasso ...`` line runs the command line in-process (a ``torchrun ... -m
  clipasso ...`` line runs torch's launcher in a subprocess), ``python -c`` runs
  its code, ``export`` sets the variable, ``>`` redirects; install and test commands (``pip``,
  ``python -m pytest``, ``nox``, ``mkdocs``) are what CI itself runs, and are not run again here;
* every sketch (``sketch`` and ``sketch_many``) is capped at 2 iterations (the docs' settings are
  otherwise kept), and no network is touched (a download attempt fails the test).

Blocks in other languages (``text``, ``toml`` output samples) are not code.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import os
import pkgutil
import re
import shlex
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clipasso

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
#: Shell commands that are CI's own (install, test, lint, docs build): not run again from the docs.
#: ``clipasso demo`` serves until stopped: tests/test_demo_server.py launches it and drives it.
_NOT_RERUN = ("pip ", "python -m pytest", "nox ", "mkdocs ", "cd ", "git ", "clipasso demo")
_IMAGES = {
    "photo.png": "house",
    "house.png": "house",
    "cat.png": "chelsea",
    "dog.jpg": "mug",
    "photo-with-background.jpg": "coffee",
}
MAX_ITERATIONS = 2


def blocks(page: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every fenced block of a Markdown page."""
    text = page.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def _pages_with_code() -> list[Path]:
    return [p for p in PAGES if any(lang in ("python", "bash") for _, lang, _ in blocks(p))]


@pytest.fixture()
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh folder, images, tiny weights where the docs point, capped iterations, no network."""
    from clipasso import Sketcher
    from clipasso.data import load_sample
    from clipasso.models import loading
    from clipasso.testing import tiny_clip_file

    work = tmp_path / "work"
    (home := tmp_path / "home" / "weights").mkdir(parents=True)
    work.mkdir()
    for name, sample in _IMAGES.items():
        load_sample(sample).convert("RGB").save(work / name)
    weights = {"RN101.pt": tiny_clip_file("resnet"), "ViT-B-32.pt": tiny_clip_file("vit")}
    for name, src in weights.items():
        shutil.copy(src, home / name)
    import torch

    from clipasso.matting import U2Net  # random U2Net weights where the backgrounds page points

    torch.manual_seed(0)
    torch.save(U2Net("u2netp").state_dict(), home / "u2netp.pth")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLIPASSO_WEIGHTS_RN101", str(home / "RN101.pt"))
    monkeypatch.setenv("CLIPASSO_WEIGHTS_VIT_B_32", str(home / "ViT-B-32.pt"))
    monkeypatch.setenv("CLIPASSO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(work)

    def offline(url: str, timeout: float) -> Any:
        raise AssertionError(f"the docs' examples must not download anything ({url})")

    monkeypatch.setattr(loading, "_urlopen", offline)
    original = Sketcher.sketch

    def capped(self: Sketcher, *args: Any, iterations: int | None = None, **kwargs: Any) -> Any:
        wanted = iterations if iterations is not None else self.config.iterations
        return original(self, *args, iterations=min(wanted, MAX_ITERATIONS), **kwargs)

    monkeypatch.setattr(Sketcher, "sketch", capped)
    original_many = Sketcher.sketch_many

    def capped_many(self: Sketcher, *args: Any, iterations: int | None = None, **kwargs: Any) -> Any:
        wanted = iterations if iterations is not None else self.config.iterations
        return original_many(self, *args, iterations=min(wanted, MAX_ITERATIONS), **kwargs)

    monkeypatch.setattr(Sketcher, "sketch_many", capped_many)
    # rembg is not a dependency; the matting example gets a stand-in with its `remove` call
    rembg = types.ModuleType("rembg")

    def remove(image: Any, only_mask: bool = False) -> Any:
        return image.convert("L").point(lambda v: 255 if v < 200 else 0)

    rembg.remove = remove  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rembg", rembg)
    # the pages register example components: they leave the registries as they found them
    from clipasso import INITIALIZERS, LOSSES, RASTERIZERS

    before = {reg: set(reg.names()) for reg in (LOSSES, INITIALIZERS, RASTERIZERS)}
    yield work
    for reg, names in before.items():
        for name in set(reg.names()) - names:
            reg.remove(name)


def _run_shell(code: str, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipasso.cli import main

    for raw in code.splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("python -c") else raw.strip()
        if not line or line.startswith("#") or line.startswith(_NOT_RERUN):
            continue
        words = shlex.split(line, comments=True)
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            monkeypatch.setenv(key, os.path.expanduser(value))
            continue
        if words[:2] == ["python", "-c"]:
            exec(compile(words[2], where, "exec"), {})
            continue
        if words[0] == "torchrun":  # several processes: torch's own launcher, in a subprocess
            _run_torchrun(words[1:], where, line)
            continue
        assert words[0] == "clipasso", f"{where}: a shell line the docs test cannot run: {line!r}"
        out_file = None
        if ">" in words:
            k = words.index(">")
            words, out_file = words[:k], words[k + 1]
        argv = [os.path.expanduser(w) for w in words[1:]]
        if argv[:1] == ["sketch"] and "--print-config" not in argv:
            argv += ["--iterations", str(MAX_ITERATIONS), "-q"]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code_ = main(argv)
        if out_file is not None:
            Path(out_file).write_text(buffer.getvalue())
        assert code_ == 0, f"{where}: `{line}` exited {code_}"


def _run_torchrun(argv: list[str], where: str, line: str) -> None:
    """``torchrun ... -m clipasso sketch ...`` on this machine (its rendezvous on loopback), with
    the iteration cap; the processes see the variables the reader set (weights, HOME)."""
    import subprocess

    assert "-m" in argv and argv[argv.index("-m") + 1] == "clipasso", f"{where}: {line!r}"
    argv = [os.path.expanduser(w) for w in argv]
    if "sketch" in argv:
        argv += ["--iterations", str(MAX_ITERATIONS), "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *argv]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{where}: `{line}` exited {run.returncode}: {run.stderr[-2000:]}"


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_code_blocks_run(page: Path, reader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    ran = 0
    for line, lang, code in blocks(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)
        elif lang == "bash":
            _run_shell(code, where, monkeypatch)
        else:
            continue
        ran += 1
    assert ran > 0


def test_readme_examples_leave_their_files(reader: Path) -> None:
    """The README's Python example writes what it says it writes."""
    code = next(c for _, lang, c in blocks(ROOT / "README.md") if lang == "python")
    exec(compile(code, "README.md", "exec"), {})
    assert (reader / "sketch.svg").read_text().startswith("<?xml") or "<svg" in (
        reader / "sketch.svg"
    ).read_text()
    assert (reader / "sketch.png").stat().st_size > 0


def _modules() -> list[str]:
    names = ["clipasso"]
    for info in pkgutil.walk_packages(clipasso.__path__, "clipasso."):
        if info.name != "clipasso.__main__":  # importing it runs the command line
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):  # each with a copy of its module's globals
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) of {name} failed (see above)"
