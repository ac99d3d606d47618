"""Thread settings: the brief-spin default, scoped intra-op threads, the setting and the flag."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from clipasso import SketchConfig, Sketcher
from clipasso.cli import main
from clipasso.errors import InputError
from clipasso.machine import CPU_FEATURES, cpu_info
from clipasso.threads import SPIN_COUNT, intra_op_threads, limit_spinning


def _probe(code: str, env: dict[str, str] | None = None) -> list[str]:
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=full)
    return out.stdout.split()


def test_the_command_line_limits_spinning_before_torch_loads() -> None:
    code = (
        "import os, sys\nfrom clipasso.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ['GOMP_SPINCOUNT'], os.environ['KMP_BLOCKTIME'], 'torch' in sys.modules)"
    )
    assert _probe(code)[-3:] == [str(SPIN_COUNT), "1", "False"]  # after the version line


def test_a_spin_count_the_user_chose_is_kept() -> None:
    code = "import os\nfrom clipasso.threads import limit_spinning\n"
    code += "print(limit_spinning(), os.environ['GOMP_SPINCOUNT'])"
    assert _probe(code, {"GOMP_SPINCOUNT": "INFINITE"}) == ["True", "INFINITE"]
    late = "import torch, os\nfrom clipasso.threads import limit_spinning\nprint(limit_spinning())"
    assert _probe(late) == ["False"]  # torch already loaded its OpenMP runtime: too late, and it says so
    with pytest.raises(ValueError, match="spin_count"):
        limit_spinning(-1)


def test_intra_op_threads_is_scoped() -> None:
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with intra_op_threads(0):
            pass


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_threads_setting_is_validated(bad: object) -> None:
    with pytest.raises(InputError, match="threads"):
        SketchConfig(threads=bad)  # type: ignore[arg-type]


def test_a_run_uses_its_threads_and_restores_them(
    tiny_resnet: torch.nn.Module, tiny_vit: torch.nn.Module
) -> None:
    from clipasso.callbacks import Callback

    seen: list[int] = []

    class Threads(Callback):
        def on_step(self, sketcher: Sketcher, state: object) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    sk = Sketcher(clip_model=tiny_resnet, saliency_model=tiny_vit, num_strokes=2, iterations=2,
                  num_sketches=1, device="cpu", threads=target, callbacks=[Threads()])  # fmt: skip
    sk.sketch(torch.rand(3, 224, 224))
    assert seen == [target, target] and torch.get_num_threads() == before


def test_threads_flag_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sketch", "--print-config", "--threads", "1"]) == 0
    assert "threads = 1" in capsys.readouterr().out
    assert main(["sketch", "x.png", "--threads", "0", "-q"]) == 2
    assert "threads" in capsys.readouterr().err


def test_cpu_info_reads_the_flags(tmp_path: object) -> None:
    from pathlib import Path

    fake = Path(str(tmp_path)) / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 amx_tile avx512_bf16\n")
    info = cpu_info(fake)
    assert info["model"] == "Test CPU 9000" and info["features"] == ["amx_tile", "avx512_bf16", "avx2"]
    assert cpu_info(Path(str(tmp_path)) / "missing")["features"] == []
    assert set(cpu_info()["features"]) <= set(CPU_FEATURES)


def test_importing_clipasso_first_limits_spinning_too() -> None:
    code = "import os, sys\nimport clipasso\nprint(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    assert _probe(code) == [str(SPIN_COUNT), "False"]
