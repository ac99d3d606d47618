"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

An interrupted write leaves either the old file or none, never a half-written one. The file gets
the mode a plain ``open(path, "w")`` would give it (``0o666`` less the umask, or the mode of the
file it replaces), not the private ``0o600`` of the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "current_umask", "publish_mode"]


def current_umask() -> int:
    """The process's umask (read from ``/proc/self/status`` where it is there, else set and reset)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike[str], *, directory: bool = False, like: Path | None = None) -> None:
    """Give a freshly made temporary file or folder the mode a plain ``open``/``mkdir`` would have.

    ``tempfile.mkstemp`` and ``mkdtemp`` create private files (``0o600``) and folders (``0o700``);
    outputs renamed from them into place must not stay private. ``like``: an existing path whose
    mode to keep (the file being replaced).
    """
    if like is not None and like.exists() and like.is_dir() == directory:
        mode = stat.S_IMODE(like.stat().st_mode)
    else:
        mode = (0o777 if directory else 0o666) & ~current_umask()
    os.chmod(path, mode)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only when the ``with`` block succeeds.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_open(target, "w") as fh:
        ...     _ = fh.write("hello")
        >>> target.read_text()
        'hello'
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open supports modes 'w' and 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        publish_mode(tmp, like=target)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)
