"""The example notebooks run, and the documentation site builds with warnings as errors.

Both use the same entry points as the nox sessions (``examples/run_notebooks.py`` and
``mkdocs build --strict``), so CI keeps notebooks and docs from going stale.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_five_example_notebooks_exist() -> None:
    names = {p.stem for p in NOTEBOOKS}
    for expected in ("quickstart", "custom_loss", "abstraction_ladder", "batch_of_images", "diffvg_backend"):
        assert any(expected in n for n in names), f"no notebook about {expected} in {sorted(names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert all(not c.outputs and c.execution_count is None for c in code), (
        "strip the outputs before committing"
    )
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "real clip weights" in text, "say what changes with real CLIP weights"
    assert "torch.set_num_threads(" in code[0].source


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    runner = _load(EXAMPLES / "run_notebooks.py", "clipasso_run_notebooks")
    # The kernel inherits the environment. One torch thread unless CLIPASSO_TEST_THREADS says
    # otherwise: on a 2-core machine that other jobs share, 2 threads made these notebooks ~10x
    # slower (measured 512 s vs 59 s for all five), while 1 thread costs little on an idle one.
    monkeypatch.setenv("CLIPASSO_TEST_THREADS", os.environ.get("CLIPASSO_TEST_THREADS", "1"))
    nb = runner.run_notebook(path, timeout=240, workdir=tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook shows no picture"


# ---------------------------------------------------------------------------------------------- docs


def test_docstring_rewriter_fixes_what_griffe_and_markdown_do_not_understand() -> None:
    ext = _load(ROOT / "docs" / "griffe_docstrings.py", "clipasso_griffe_docstrings")
    text = (
        "Summary with :class:`~clipasso.losses.SketchLoss` and :meth:`sketch` and :math:`x^2`.\n\n"
        "Args:\n    a, b: Shared text.\n    c: Own text.\n\n"
        "Example:\n    >>> 1 + 1\n    2\n\n"
        "Subclass it::\n\n    class A:\n        pass\n"
    )
    out = ext.rewrite(text, "clipasso.sketcher.Sketcher")
    assert (
        '<autoref identifier="clipasso.losses.SketchLoss" optional><code>SketchLoss</code></autoref>' in out
    )
    assert 'identifier="clipasso.sketcher.Sketcher.sketch" optional><code>sketch()</code>' in out
    assert "$x^2$" in out
    assert "    a: Shared text.\n    b: Shared text.\n    c: Own text." in out
    assert "Examples:\n    >>> 1 + 1" in out and "Example:" not in out
    assert "Subclass it:\n\n```python\nclass A:\n    pass\n```" in out


def test_docs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module)
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    api = (site / "api" / "sketcher" / "index.html").read_text(encoding="utf-8")
    assert 'id="clipasso.sketcher.Sketcher"' in api  # the API reference comes from the docstrings
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    first_entry = next(
        line[2:].strip()
        for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("- ")
    )
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", first_entry)[:3]
    assert len(words) == 3 and all(w in changelog for w in words), words  # not a stale copy
