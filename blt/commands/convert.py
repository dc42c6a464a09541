"""`blt convert`: to and from transformers BltForCausalLM directories, and from the reference release.

    blt convert --from-hf DIR --out RUN          transformers directory (save_pretrained) -> blt run
    blt convert --to-hf RUN --out DIR            blt run -> directory BltForCausalLM.from_pretrained loads
    blt convert --from-bytelatent DIR --out RUN  reference bytelatent checkpoint -> blt run

Tensors are converted one at a time by name; a checkpoint that does not match its config (unknown,
missing or mis-shaped tensors) is refused before anything is written. See `blt.interop.convert`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.errors import BLTError
from blt.interop.convert import (
    Conversion,
    convert_from_bytelatent,
    convert_from_hf,
    convert_to_hf,
    describe_patching,
)
from blt.run import ENTROPY_SUBDIR


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-hf", type=Path, metavar="DIR",
                        help="a transformers BltForCausalLM directory (config.json + model.safetensors or shards)")
    source.add_argument("--to-hf", type=Path, metavar="RUN", help="a blt BLT run directory to export for transformers")
    source.add_argument("--from-bytelatent", type=Path, metavar="DIR",
                        help="a reference bytelatent checkpoint (config.json + model.safetensors, or params.json + "
                             "consolidated.pth)")
    p.add_argument("--out", required=True, type=Path, help="the directory to write (a run, or a transformers directory)")
    p.add_argument("--entropy-model", type=Path, metavar="DIR",
                   help="with --from-bytelatent: the reference entropy model's directory (params.json + "
                        "consolidated.pth; default DIR/entropy_model)")
    p.add_argument("--threshold", type=float, metavar="NATS",
                   help="with --to-hf: the patching threshold to export (default: the run's)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def _millions(count: int) -> str:
    return f"{count / 1e6:,.2f}M"


def report(result: Conversion, source: str) -> None:
    print(f"wrote {result.out}: BLT of {_millions(result.parameters)} parameters from {source}")
    if result.entropy_config is not None:
        print(f"  entropy model: {_millions(result.entropy_parameters)} parameters "
              f"({result.entropy_config.n_layers} layers, dim {result.entropy_config.dim}, window {result.entropy_config.window})")
    print(f"  patching: {describe_patching(result.config.patching)}")
    for note in result.notes:
        print(f"note: {note}")


def run(args: argparse.Namespace) -> int:
    if args.entropy_model is not None and args.from_bytelatent is None:
        raise BLTError("--entropy-model is for --from-bytelatent; a blt run carries its own entropy model in "
                       f"{ENTROPY_SUBDIR}/")
    if args.threshold is not None and args.to_hf is None:
        raise BLTError("--threshold is for --to-hf")
    if args.from_hf is not None:
        report(convert_from_hf(args.from_hf, args.out, force=args.force), f"transformers checkpoint {args.from_hf}")
    elif args.to_hf is not None:
        result = convert_to_hf(args.to_hf, args.out, threshold=args.threshold, force=args.force)
        report(result, f"blt run {args.to_hf}")
        print(f"  load it with transformers.BltForCausalLM.from_pretrained({str(args.out)!r})")
    else:
        result = convert_from_bytelatent(args.from_bytelatent, args.out, entropy_dir=args.entropy_model,
                                         force=args.force)
        report(result, f"bytelatent checkpoint {args.from_bytelatent}")
    return 0
