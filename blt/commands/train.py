"""`blt train`: train a BLT on prepared data, patched by an entropy model (or a fixed scheme, or a BPE's token
starts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.commands._common import add_training_arguments, run_options
from blt.config import PATCHING_MODES, BLTConfig
from blt.pipelines.recipes import PATCHING_BPE_VOCAB_SIZE, train_blt
from blt.train import init_distributed


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_training_arguments(p)
    p.add_argument("--entropy-model", type=Path, help="entropy-model run (from `blt train-entropy`); needed by "
                   "the entropy, monotonic and combined patching modes")
    p.add_argument("--patching", choices=PATCHING_MODES, help="patching scheme (default: the preset's, entropy)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--target-patch-size", type=float, metavar="BYTES",
                      help="calibrate the entropy threshold on the training data to this mean patch size (e.g. 4.5, 6, 8)")
    size.add_argument("--threshold", type=float, help="entropy threshold in nats (θ_g; θ_r for monotonic)")
    p.add_argument("--max-patch-length", type=int, help="split patches longer than this")
    p.add_argument("--patch-size", type=int, help="bytes per patch for --patching static")
    p.add_argument("--tokenizer", type=Path, metavar="FILE", help="byte-level BPE (tokenizer.json, e.g. from a "
                   "`blt train-baseline --kind bpe` run) for --patching bpe (default: learn one from the training split)")
    p.add_argument("--vocab-size", type=int, default=PATCHING_BPE_VOCAB_SIZE,
                   help="tokens of the BPE learned for --patching bpe without --tokenizer (default: %(default)s)")
    p.epilog = "Presets: " + ", ".join(BLTConfig.preset_names())


def patching_changes(args: argparse.Namespace) -> dict:
    changes = {}
    if args.patching:
        changes["mode"] = args.patching
    if args.threshold is not None:
        changes.update(threshold=args.threshold, target_patch_size=None)
    if args.target_patch_size is not None:
        changes.update(target_patch_size=args.target_patch_size, threshold=None)
    if args.max_patch_length is not None:
        changes["max_patch_length"] = args.max_patch_length
    if args.patch_size is not None:
        changes["patch_size"] = args.patch_size
    return changes


def run(args: argparse.Namespace) -> int:
    result = train_blt(run_options(args), patching_changes(args), args.entropy_model, tokenizer_file=args.tokenizer,
                       bpe_vocab_size=args.vocab_size)
    if init_distributed().is_main:
        print(result.summary("BLT"))
    return 0
