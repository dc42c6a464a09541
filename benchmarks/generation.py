"""Generation speed: the cached engine against full recomputation, ours and transformers' (`blt.bench.generation`).

    .venv/bin/python benchmarks/generation.py                 # 64, 256, 512 new bytes (+1024 engine only)
    .venv/bin/python benchmarks/generation.py --new-bytes 64 256 --threads 2 --json out.json

`blt bench generation` runs the same measurement inside the benchmark suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from blt.allocator import keep_freed_memory
from blt.bench import machine_info
from blt.bench.generation import TABLE_HEADER, bench_generation, format_row

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--new-bytes", type=int, nargs="+", default=[64, 256, 512],
                        help="new bytes per run for all three paths (default: %(default)s)")
    parser.add_argument("--engine-repeats", type=int, default=3,
                        help="engine runs per length, the median (by wall clock) reported (default: %(default)s)")
    parser.add_argument("--engine-only", type=int, nargs="*", default=[1024],
                        help="extra lengths timed for the engine alone (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every path (default: 1)")
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--json", type=Path, default=RESULTS / "generation.json")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as `blt bench` does (blt/allocator.py)
    torch.set_num_threads(args.threads)
    print(f"{args.preset} BLT, entropy patching, prompt 32 bytes, {args.threads} thread(s); "
          "bytes/s by wall clock (by CPU time)")
    print(TABLE_HEADER)
    record = bench_generation(args.preset, tuple(args.new_bytes), tuple(args.engine_only), args.engine_repeats,
                              not args.no_transformers, log=lambda row: print(format_row(row), flush=True))
    record = {"benchmark": "generation",
              "command": " ".join(["python benchmarks/generation.py", *(argv if argv is not None else sys.argv[1:])]),
              **record, "machine": machine_info()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
