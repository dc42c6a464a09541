"""What `blt patch --data` achieves on a prepared corpus in fp32 and in bf16, and how far apart the two are.

    python benchmarks/patch_precision.py --data data_cache/default --entropy-model runs/scaling/entropy \
        --json benchmarks/results/patch_precision.json

Both precisions precompute the entropies of every document of ``--data`` (a copy of it in a temporary
folder, so that finished entropies there are neither reused nor touched), one after the other in the same
process with the same threads: MB/s of each and their ratio. Then, for each target patch size, the
threshold calibrated on the fp32 entropies of the validation split patches both (entropy mode, a global
threshold): how many patch starts move, against how many patches there are, and the largest difference of
an entropy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blt.allocator import keep_freed_memory
from blt.bench.common import machine_info
from blt.data import PreparedData
from blt.data.entropies import PrecomputedEntropies
from blt.fileio import atomic_write_text
from blt.patching.calibration import calibrate_threshold_from_entropies
from blt.patching.precompute import precompute_entropies, with_precision
from blt.run import load
from blt.train.device import probe_bf16

PRECISIONS = ("fp32", "bf16")


def copy_without_entropies(data: Path, out: Path) -> PreparedData:
    """A copy of the prepared directory ``data`` in ``out``, without the entropies precomputed in it."""
    shutil.copytree(data, out, ignore=shutil.ignore_patterns("entropies"))
    return PreparedData.open(out)


def values(stored: PrecomputedEntropies, split: str) -> list[np.ndarray]:
    docs = stored.split(split)
    return [np.asarray(docs[i], dtype=np.float32) for i in range(len(docs))]


def moved_starts(fp32: list[np.ndarray], bf16: list[np.ndarray], threshold: float) -> tuple[int, int]:
    """(patch starts that differ, patches under fp32) when a byte starts a patch iff the entropy before it
    is above ``threshold`` (entropy mode; a document's first byte always starts one)."""
    moved = patches = 0
    for a, b in zip(fp32, bf16):
        starts_a, starts_b = a[1:-2] > threshold, b[1:-2] > threshold  # entropy at i decides byte i + 1
        moved += int((starts_a != starts_b).sum())
        patches += int(starts_a.sum()) + 1
    return moved, patches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data_cache/default"))
    p.add_argument("--entropy-model", type=Path, default=Path("runs/scaling/entropy"))
    p.add_argument("--json", type=Path)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--target-patch-sizes", type=float, nargs="+", default=[4.5, 6.0, 8.0])
    args = p.parse_args(argv)
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.entropy_model, expect="entropy_model").model
    probe = probe_bf16(torch.device("cpu"))
    record = {"machine": {**machine_info(), "bf16": probe.describe()},
              "data": str(args.data), "entropy_model": str(args.entropy_model),
              "precisions": {}, "patches": []}
    stored = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = copy_without_entropies(args.data, Path(tmp) / "data")
        for precision in PRECISIONS:
            start = time.perf_counter()
            report = precompute_entropies(data, with_precision(model, precision), source=args.entropy_model,
                                          progress=sys.stderr.isatty())
            seconds = time.perf_counter() - start
            record["precisions"][precision] = {"bytes": report.bytes, "seconds": seconds,
                                               "bytes_per_s": report.bytes / seconds, "key": report.key}
            rate = report.bytes / seconds / 1e3
            print(f"{precision}: {report.bytes / 1e6:,.1f} MB in {seconds:,.1f} s, {rate:,.1f} KB/s", flush=True)
            stored[precision] = {split: values(PrecomputedEntropies.open(data, report.key), split)
                                 for split in ("train", "val")}
    speed = record["precisions"]
    record["bf16_speedup"] = speed["bf16"]["bytes_per_s"] / speed["fp32"]["bytes_per_s"]
    a, b = stored["fp32"]["val"], stored["bf16"]["val"]
    record["max_abs_difference_nats"] = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    for size in args.target_patch_sizes:
        threshold = calibrate_threshold_from_entropies([torch.from_numpy(x[:-1]) for x in a], size)
        moved, patches = moved_starts(a, b, threshold)
        record["patches"].append({"target_patch_size": size, "threshold": threshold, "moved_starts": moved,
                                  "patches": patches})
        print(f"patch size {size:g} (threshold {threshold:.3f} nats): {moved:,} of {patches:,} patch starts move")
    print(f"bf16 {record['bf16_speedup']:.2f}x fp32; entropies differ by at most "
          f"{record['max_abs_difference_nats']:.3f} nats")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
