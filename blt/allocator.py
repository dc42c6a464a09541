"""Keep freed CPU memory inside the process, so that training steps stop paying for page faults.

glibc's malloc serves big blocks (from 128 KiB, adaptively up to 32 MiB) straight from ``mmap`` and unmaps
them on free, and it trims the top of its heap when a lot is free there. A training step allocates and frees
its activations every time, so every step maps them afresh and the kernel zero-fills each 4 KiB page on first
touch: tens of thousands of page faults per step of the small preset (benchmarks/README.md).

`keep_freed_memory` tells glibc (``mallopt``) to serve every size from its heap and never to hand the heap
back, so from the second step on, allocations reuse pages that are already mapped. The price is that the
process keeps its peak memory until it exits, which a training or benchmark process does anyway. It is
process-wide; the `blt` command calls it for every subcommand unless ``BLT_MALLOC=default`` is set, and
library users may call it themselves. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV_VAR = "BLT_MALLOC"  # "default": leave malloc as it is
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int)

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no ``mmap`` for big blocks, no trimming). Returns whether it is
    in effect: False off glibc, when ``BLT_MALLOC=default``, or when glibc refused."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_VAR, "").strip().lower() == "default" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter is linked with
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc falls back to the main (brk) heap when a thread's arena cannot grow, so no size is ever refused
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _applied


def describe() -> str:
    """How CPU memory is allocated in this process, for benchmark records."""
    return "glibc, freed memory kept (blt.allocator)" if _applied else "default"
