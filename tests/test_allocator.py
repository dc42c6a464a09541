"""blt.allocator: after keep_freed_memory, memory a step freed is reused without page faults."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys

import pytest

# Allocate and free a 64 MB tensor 16 times and count the minor page faults of each cycle. The first cycle
# faults its pages in; several of the next ones may fault again (seen up to cycle 8: objects that torch and
# Python allocate lazily after the first free can split the freed block, so the next tensor lands on fresh
# pages). After that a training step repeats, and so does this probe, so the test compares the steady state:
# the median of the last 8 cycles.
_PROBE = """
import resource, sys, torch
from blt import allocator
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20); del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[bool, list[int]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    applied, *faults = out.stdout.split()
    return applied == "True", [int(f) for f in faults]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults():
    applied, kept = _faults("keep")
    assert applied
    _, default = _faults("default")
    kept_median, default_median = statistics.median(kept[-8:]), statistics.median(default[-8:])
    # measured with 4 KiB pages: 16,384 faults per cycle (64 MB faulted in again) against 0 from the 2nd-4th
    # cycle on; transparent huge pages, where the kernel uses them for all memory, make the default ~512x smaller
    # (~32 faults per cycle, hence the floor of 16)
    assert kept_median < 200, kept
    assert default_median >= 16 and default_median > 8 * kept_median, (kept, default)


def test_blt_malloc_default_leaves_malloc_alone():
    applied, _ = _faults("keep", env={**os.environ, "BLT_MALLOC": "default"})
    assert not applied
