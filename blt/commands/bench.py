"""`blt bench [CASE] [--suite quick|full] [--against-hf] [--device D]`: speeds next to baselines measured in the same
run (see `blt.bench`). On a GPU the model, patching and training cases and the matmul peaks run there (the
generation case stays on the CPU)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from blt.bench import CASES, SUITES, run_benchmarks, suite_named
from blt.commands._common import add_device_argument
from blt.commands._paths import check_output_file
from blt.errors import BLTError
from blt.train import PRECISIONS, resolve_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", nargs="?", choices=sorted(CASES), metavar="CASE",
                   help="benchmark to run (default: all). model: BLT forward+backward bytes/s in fp32 and bf16, "
                        "as a fraction of the fp32 and bf16 matmul peak measured in the same run. patching: "
                        "entropy-model patching MB/s (entropies + patch boundaries) in fp32 and bf16, one row "
                        "per call and batched, against the same peaks and as a speedup over one row. training: "
                        "a training step (loss + backward) of the tiny and the small (56M) model in fp32 and bf16, "
                        "bytes/s, fraction of peak and peak memory per step, with --against-hf next to "
                        "transformers' BltForCausalLM on the same weights and patches. generation: bytes/s of the "
                        "cached engine against our full recompute and, with --against-hf, transformers' "
                        "generate(use_cache=False). length: training-step time and peak memory at 1k, 4k and 16k "
                        "bytes per row and generation bytes/s after 256, 2k and 16k bytes of context, BLT against the byte "
                        "baseline")
    p.add_argument("--suite", default="quick", choices=sorted(SUITES),
                   help="quick (a few minutes on 2 idle cores) or full (larger batches, more iterations; default: %(default)s)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results (with a description of the machine) as JSON here")
    p.add_argument("--png", type=Path, metavar="PATH",
                   help="draw the length case's curves (cost against length, BLT and byte baseline) here")
    p.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads (default: torch's current setting)")
    p.add_argument("--precisions", metavar="LIST",
                   help="comma-separated precisions to run, e.g. fp32 or fp32,bf16 (default: the suite's, less bf16 "
                        "on a CPU that only emulates it, where bf16 matmuls run ~50x slower than fp32)")
    add_device_argument(p)
    p.add_argument("--against-hf", action="store_true",
                   help="training and generation cases: also time transformers' BltForCausalLM (needs the hf extra)")
    p.add_argument("--compile", action="store_true",
                   help="training case: also time our model under torch.compile (as `blt train --compile` trains); "
                        "compiling takes minutes per precision")


def parse_precisions(text: str) -> tuple[str, ...]:
    """``--precisions``: "fp32", "bf16" or both, comma-separated, in the order given; a `BLTError` otherwise."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in PRECISIONS]
    if not names or unknown:
        raise BLTError(f"--precisions {text!r}: give fp32, bf16 or both, comma-separated")
    return names


def run(args: argparse.Namespace) -> int:
    check_output_file(args.json, "--json", make_parents=True)
    check_output_file(args.png, "--png", make_parents=True)
    suite = suite_named(args.suite)
    if args.against_hf:
        suite = dataclasses.replace(suite, against_hf=True)
    if args.compile:
        suite = dataclasses.replace(suite, compile=True)
    skip_emulated = args.precisions is None
    if args.precisions is not None:
        suite = dataclasses.replace(suite, precisions=parse_precisions(args.precisions))
    device = resolve_device(args.device)
    if device.type == "cuda":  # a GPU finishes a 4096-wide matmul in well under a millisecond: time a larger one
        suite = dataclasses.replace(suite, device=str(device), peak_size=max(suite.peak_size, 8192), peak_repeats=20)
    cases = [args.case] if args.case else None
    result = run_benchmarks(suite, cases=cases, threads=args.threads, log=lambda line: print(line, flush=True),
                            skip_emulated=skip_emulated)
    machine = result["machine"]
    where = f"{machine['gpu']} ({machine['device']}), " if device.type == "cuda" else ""
    print(f"{where}{machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}: "
          f"suite {suite.name} took {result['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.png and result.get("length"):
        from blt.viz.plots import plot_length_scaling

        args.png.parent.mkdir(parents=True, exist_ok=True)
        print(f"drew {plot_length_scaling(result['length'], args.png)}")
    return 0
