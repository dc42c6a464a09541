"""Fixtures of the interop tests."""

from __future__ import annotations

import pytest

from blt.cli import main


@pytest.fixture
def convert(capsys):
    """Run `blt convert ARGS...`; returns (exit code, stdout, stderr)."""

    def run(*args: object) -> tuple[int, str, str]:
        code = main(["convert", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return run
