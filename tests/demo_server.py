"""A `clipasso demo` server launched as users launch it, on loopback, for the demo's tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Generous: two cores shared with other work import torch and gradio slowly.
START_TIMEOUT_S = 120.0


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def rss_kib(self) -> int | None:
        """The server's resident memory (Linux /proc), or None where it cannot be read."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def launched(folder: Path, *args: str, settings: str = "") -> Iterator[Server]:
    """``python -m clipasso demo --port P ARGS`` with ``settings`` as its --config TOML."""
    config = folder / "demo.toml"
    config.write_text("[sketch]\n" + settings)
    port = free_port()
    log = folder / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        "CLIPASSO_CACHE": str(folder / "cache"),  # no weights there: nothing is found by accident
    }
    cmd = [sys.executable, "-m", "clipasso", "demo", "--port", str(port), "--config", str(config), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    server = Server(url, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the demo server exited ({process.returncode}):\n{server.log_text()}")
            try:
                with urllib.request.urlopen(url + "/config", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the demo server did not start in {START_TIMEOUT_S} s:\n{server.log_text()}"
                )
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
