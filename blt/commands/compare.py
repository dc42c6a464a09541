"""`blt compare`: BLT at patch sizes 4.5, 6 and 8 and the BPE and byte baselines, each trained with the same
training-FLOP budget on the same data; writes a table and a bits-per-byte-vs-FLOPs plot (see `blt.pipelines.compare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.config import BLTConfig
from blt.errors import ConfigError
from blt.pipelines.compare import (
    BASELINES,
    DEFAULT_BUDGET,
    DEFAULT_PATCH_SIZES,
    CompareOptions,
    compare,
    compare_table,
)

PREFIXES = ("blt.", "token.", "train.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="prepared data directory (from `blt data prepare`)")
    p.add_argument("--entropy-model", type=Path, help="entropy-model run (from `blt train-entropy`) that patches the BLT members")
    p.add_argument("--out", required=True, type=Path, help="comparison directory: one run per member, table and plot")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="FLOPS",
                   help="training FLOPs per member (default: %(default).3g, about an hour for all five on 2 CPU cores "
                        "with the tiny presets; on one GPU, an estimate for an hour: --preset small --budget 5e16 "
                        "--precision bf16)")
    p.add_argument("--preset", default="tiny", help=f"BLT preset; the baselines use its global model "
                   f"({', '.join(BLTConfig.preset_names())}; default: %(default)s)")
    p.add_argument("--patch-sizes", type=float, nargs="*", default=list(DEFAULT_PATCH_SIZES), metavar="P",
                   help="target mean patch sizes of the BLT members, calibrated on the training data (default: 4.5 6 8)")
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="token baselines to train (default: bpe byte)")
    p.add_argument("--vocab-size", type=int, metavar="N", help="BPE vocabulary size (default: the preset's)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast or plain fp32 (default: fp32)")
    p.add_argument("--evals", type=int, default=5, metavar="N", help="validation passes per member while training (default: %(default)s)")
    p.add_argument("--warmup-fraction", type=float, metavar="F",
                   help="warm up for this share of each member's steps (e.g. 0.1; default: the preset's fixed "
                        "warmup steps, which the short members of a small budget may not reach)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the BLT members (blt.KEY=V), of the baselines (token.KEY=V) or "
                        "of training (train.KEY=V), e.g. train.batch_size=8 (repeatable)")
    p.add_argument("--force", action="store_true", help="start the comparison in --out over")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def compare_options(args: argparse.Namespace) -> CompareOptions:
    """``--set`` values split by prefix into the BLT, baseline and training overrides."""
    split: dict[str, list[str]] = {prefix: [] for prefix in PREFIXES}
    for item in args.overrides:
        prefix = next((p for p in PREFIXES if item.startswith(p)), None)
        if prefix is None:
            raise ConfigError(f"--set {item}: prefix the key with blt., token. or train. (e.g. blt.global_model.n_layers=2)")
        split[prefix].append(item[len(prefix):])
    return CompareOptions(
        data=args.data, out=args.out, entropy_model=args.entropy_model, budget=args.budget, preset=args.preset,
        patch_sizes=tuple(args.patch_sizes), baselines=tuple(args.baselines), vocab_size=args.vocab_size,
        blt_overrides=split["blt."], token_overrides=split["token."], train_overrides=split["train."],
        precision=args.precision, evals=args.evals,
        warmup_fraction=args.warmup_fraction, force=args.force, progress=not args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    result = compare(compare_options(args))
    print(compare_table(result))
    print(f"-> {args.out}/compare.md, compare.json, bpb_vs_flops.png")
    return 0
