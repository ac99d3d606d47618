"""Execute the example notebooks with nbclient, so they never go stale.

Used by ``nox -s examples`` and by ``tests/test_examples.py``. Every notebook runs in a fresh
kernel, in a temporary working directory (nothing is written into the repository), and fails on
the first cell that raises.

Usage::

    python examples/run_notebooks.py                      # every examples/*.ipynb
    python examples/run_notebooks.py 01_quickstart        # some of them (name or path)
    python examples/run_notebooks.py --save executed/     # also keep the executed copies
    python examples/run_notebooks.py --threads 1          # on a machine other jobs share
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

EXAMPLES = Path(__file__).resolve().parent

#: Per-cell time limit in seconds (each notebook is meant to run in well under a minute).
DEFAULT_TIMEOUT = 300


def notebooks(folder: Path = EXAMPLES) -> list[Path]:
    """The example notebooks, in name order."""
    return sorted(folder.glob("*.ipynb"))


def run_notebook(
    path: str | Path, *, timeout: int = DEFAULT_TIMEOUT, workdir: str | Path | None = None
) -> nbformat.NotebookNode:
    """Execute one notebook and return it with its outputs.

    Args:
        path: The ``.ipynb`` file.
        timeout: Per-cell time limit in seconds.
        workdir: Working directory of the kernel (default: a fresh temporary directory).

    Raises:
        nbclient.exceptions.CellExecutionError: A cell raised; the message shows the cell and the
            traceback.
    """
    nb = nbformat.read(str(path), as_version=4)
    with tempfile.TemporaryDirectory(prefix="clipasso-nb-") as tmp:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir or tmp)}},
        )
        client.execute()
    return nb


def _resolve(names: Sequence[str]) -> list[Path]:
    if not names:
        return notebooks()
    found = []
    for name in names:
        path = Path(name)
        if not path.suffix:
            path = EXAMPLES / f"{name}.ipynb"
        if not path.is_file():
            raise SystemExit(f"run_notebooks: no notebook {name!r} (known: {[p.stem for p in notebooks()]})")
        found.append(path)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the notebooks named in ``argv`` (default: all); return 0 if all ran, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="names (01_quickstart) or paths; default: all")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="per-cell limit in seconds")
    parser.add_argument("--save", type=Path, help="write the executed notebooks into this folder")
    parser.add_argument(
        "--threads", type=int, help="torch threads in the notebooks (default 2; use 1 on a busy machine)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:  # the notebooks read it; kernels inherit this environment
        os.environ["CLIPASSO_TEST_THREADS"] = str(args.threads)
    failed = []
    for path in _resolve(args.notebooks):
        start = time.perf_counter()
        try:
            nb = run_notebook(path, timeout=args.timeout)
        except CellExecutionError as exc:
            failed.append(path.name)
            print(f"FAILED {path.name} after {time.perf_counter() - start:.1f} s\n{exc}", file=sys.stderr)
            continue
        print(f"ok     {path.name} ({time.perf_counter() - start:.1f} s)")
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(args.save / path.name))
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
