"""The ``clipasso`` command line (a thin shell over the library; the library never imports it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipasso",
        description="Turn a picture of an object into an abstract line sketch (CLIPasso).",
    )
    parser.add_argument("--version", action="version", version=f"clipasso {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
