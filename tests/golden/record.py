"""Record the golden runs: ``python tests/golden/record.py`` (one thread; about a minute)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import SCENARIOS, summarise

from clipasso.machine import cpu_info


def main() -> None:
    torch.set_num_threads(1)
    record = {"machine": cpu_info(), "torch": torch.__version__, "runs": {}}
    for name, run in SCENARIOS.items():
        record["runs"][name] = summarise(run())
        print(name, "done", flush=True)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("engine.pt")
    torch.save(record, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
