"""`blt eval RUN`: validation bits-per-byte, mean patch size and global steps per byte.

An entropy-patched BLT run is patched by the entropies precomputed for its entropy model beside the data
(`blt patch --data DIR --entropy-model RUN`) when there are usable ones, as in training and its validation
passes, so the same rows get the same patches and bits per byte; else its entropy model runs on each row.
A run trained in bf16 is evaluated under bf16 autocast, as its validation passes were (``--precision``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blt.commands._common import add_device_argument
from blt.commands._paths import check_output_file
from blt.data import PreparedData
from blt.errors import BLTError
from blt.evaluate import evaluate_run
from blt.evaluate.bpb import recorded_data, recorded_train
from blt.run import load
from blt.train import resolve_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory (BLT or entropy model)")
    p.add_argument("--data", type=Path, help="prepared data directory (default: the one the run trained on)")
    p.add_argument("--split", default="val", choices=["val", "train"], help="data split (default: val)")
    p.add_argument("--seq-len", type=int, help="bytes per sequence (default: the run's training length)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default: %(default)s)")
    p.add_argument("--batches", type=int, help="evaluate only the first N batches")
    p.add_argument("--no-precomputed", action="store_true",
                   help="run the entropy model on each row even where its entropies were precomputed beside the data")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="fp32, or bf16 autocast (default: the precision the run trained in, as its validation passes)")
    add_device_argument(p)
    p.add_argument("--json", type=Path, help="also write the result as JSON here")


def run(args: argparse.Namespace) -> int:
    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--seq-len", args.seq_len, 2),
                               ("--batches", args.batches, 1)):
        if value is not None and value < least:
            raise BLTError(f"{flag} must be at least {least}, got {value}")
    check_output_file(args.json, "--json")
    device = resolve_device(args.device)
    run_ = load(args.run, device=device)
    data_dir = args.data or recorded_data(run_.info, args.run)
    if data_dir is None:
        raise BLTError(f"{args.run} does not record its data; pass --data DIR")
    recorded = recorded_train(run_.info, args.run)
    seq_len = args.seq_len or recorded.get("seq_len") or 512
    print(f"{args.run} ({run_.kind}) on {data_dir} [{args.split}]")
    result = evaluate_run(run_, PreparedData.open(Path(data_dir)), seq_len=seq_len, batch_size=args.batch_size,
                          max_batches=args.batches, split=args.split, precomputed=not args.no_precomputed,
                          precision=args.precision, log=lambda message: print(f"  {message}"))
    print(f"  bits per byte         {result.bits_per_byte:.4f}  over {result.bytes:,} bytes ({result.precision})")
    if result.mean_patch_size is not None:
        print(f"  mean patch size       {result.mean_patch_size:.2f} bytes")
        print(f"  global steps per byte {result.global_steps_per_byte:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0
