"""The scripts report errors a user can cause as the `blt` command does: one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blt.cli import STOPPED, run_reporting_errors
from blt.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_run_is_one_line_and_exit_code_2(tmp_path):
    done = subprocess.run([sys.executable, "scripts/char_evidence.py", "--phases", "curve", "--blt",
                           str(tmp_path / "no-run"), "--runs", str(tmp_path / "runs"), "--results",
                           str(tmp_path / "results")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"char_evidence: error: run directory {tmp_path / 'no-run'} does not exist\n"


def raise_(err: BaseException):
    raise err


@pytest.mark.parametrize("err, line, code", [
    (CheckpointError("run directory r does not exist"), "job: error: run directory r does not exist", 2),
    (FileNotFoundError(2, "No such file or directory", "data/x"), "job: error: No such file or directory: data/x", 2),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes"),
     "job: error: not enough memory: an allocation of 1 GiB failed; choose a smaller model, batch or sequence "
     "length", 2),
    (KeyboardInterrupt(), f"job: {STOPPED}", 130),
])
def test_user_errors_become_one_line(err, line, code, capsys):
    assert run_reporting_errors("job", lambda: raise_(err), interrupted=STOPPED) == code
    assert capsys.readouterr().err == line + "\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_reporting_errors("job", lambda: raise_(RuntimeError("shape mismatch")))


def test_the_job_s_result_is_the_exit_code():
    assert run_reporting_errors("job", lambda: None) == 0
    assert run_reporting_errors("job", lambda: 3) == 3
