"""`blt train-baseline`: train a token baseline, a Llama-style decoder over byte-level BPE tokens or raw bytes."""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.baselines.model import TokenModelConfig
from blt.baselines.tokenization import DEFAULT_BPE_TRAIN_BYTES
from blt.commands._common import add_training_arguments, run_options
from blt.pipelines.recipes import TOKENIZER_KINDS, train_token_model
from blt.train import init_distributed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", required=True, choices=TOKENIZER_KINDS,
                   help="bpe: over byte-level BPE tokens learned from the training split; byte: over raw bytes")
    add_training_arguments(p)
    p.add_argument("--vocab-size", type=int, metavar="N", help="BPE vocabulary size (default: the preset's, "
                   + ", ".join(f"{name} {TokenModelConfig.preset(name).vocab_size:,}" for name in TokenModelConfig.preset_names()) + ")")
    p.add_argument("--tokenizer", type=Path, metavar="FILE",
                   help="use this tokenizer.json (e.g. from another BPE baseline run) instead of learning one")
    p.add_argument("--bpe-train-bytes", type=int, default=DEFAULT_BPE_TRAIN_BYTES, metavar="N",
                   help="learn the BPE merges from up to N bytes of the training split (default: %(default)s)")
    p.epilog = ("Presets (the global model of the BLT preset of the same name): " + ", ".join(TokenModelConfig.preset_names())
                + ". Validation bits per byte are the token NLL over the same bytes as BLT's; see blt.train.objectives.TokenObjective.")


def run(args: argparse.Namespace) -> int:
    result = train_token_model(run_options(args), tokenizer=args.kind, vocab_size=args.vocab_size,
                               tokenizer_file=args.tokenizer, bpe_train_bytes=args.bpe_train_bytes)
    if init_distributed().is_main:
        print(result.summary(f"{args.kind} baseline"))
    return 0
