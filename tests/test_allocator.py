"""blt.allocator: after keep_freed_memory, memory a step freed is reused without page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocate and free a 64 MB tensor a few times, then count the minor page faults of 5 more such cycles. One
# cycle alone is not enough: Python objects made after a free may split the freed block, so the next
# allocation can land on fresh pages once; a training step repeats, and so does this probe.
_PROBE = """
import resource, sys, torch
from blt import allocator
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range(3):
    x = torch.ones(16 * 2**20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(16 * 2**20); del x
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
    # measured with 4 KiB pages: 81,925 faults (5 x 64 MB faulted in again) against 0; transparent huge
    # pages, where the kernel uses them for all memory, make the default case ~512x smaller
    assert kept < 2_000
    assert default > 20 * max(kept, 1)


def test_blt_malloc_default_leaves_malloc_alone():
    applied, _ = _faults("keep", env={**os.environ, "BLT_MALLOC": "default"})
    assert not applied
