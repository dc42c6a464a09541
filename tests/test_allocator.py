"""blt.allocator: after keep_freed_memory, memory a step freed is reused without page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocate and free a 64 MB tensor, then allocate it again: count the minor page faults of the second time.
_PROBE = """
import resource, sys, torch
from blt import allocator
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.ones(16 * 2**20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(16 * 2**20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults():
    applied, kept = _faults("keep")
    assert applied
    _, default = _faults("default")
    assert default > 10_000  # 64 MB of 4 KiB pages (fewer with transparent huge pages)...
    assert kept < 500  # ... and none of them again when the freed block is kept


def test_blt_malloc_default_leaves_malloc_alone():
    applied, _ = _faults("keep", env={**os.environ, "BLT_MALLOC": "default"})
    assert not applied
