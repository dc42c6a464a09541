"""`python -m blt` is the `blt` command (for a checkout on PYTHONPATH, as on a GPU machine's own Python)."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_blt_runs_the_command_and_passes_its_exit_code(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "blt", "flops", "--preset", "tiny"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "FLOP" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "blt", "eval", str(tmp_path)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "not a blt run directory" in bad.stderr
