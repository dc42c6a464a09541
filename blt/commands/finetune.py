"""`blt finetune RUN --out RUN2`: train a pretrained run briefly on the train split of the character-level
tasks (held-out words are never seen), then compare with `blt eval-char RUN2`."""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.commands._common import add_device_argument
from blt.evaluate.char_tasks import TASKS
from blt.pipelines.finetune import DEFAULT_STEPS, FinetuneOptions, finetune
from blt.train import init_distributed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="pretrained run directory (BLT, entropy model or token-model baseline)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default: {DEFAULT_STEPS}; with --resume: the run's)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), metavar="TASK",
                   help="tasks to train on (default: all)")
    p.add_argument("--examples", type=int, default=400, help="solved examples per task (default: %(default)s)")
    p.add_argument("--shots", type=int, default=3, help="solved questions before each one (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the examples and the data order (default: %(default)s)")
    p.add_argument("--words", type=Path, help="word list, one a line (default: /usr/share/dict/words, else the "
                   "most frequent words of the run's data)")
    p.add_argument("--held-out-fraction", type=float, default=0.2, help="words never trained on (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0, help="seeds the word split (default: %(default)s)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: half the run's pretraining peak)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="train.KEY=VALUE",
                   help="override a training value, e.g. train.batch_size=8 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p)


def run(args: argparse.Namespace) -> int:
    from blt.errors import BLTError

    bad = [o for o in args.overrides if not o.startswith("train.")]
    if bad:
        raise BLTError(f"--set {bad[0]}: finetuning keeps the model config; only train.KEY=VALUE can be set")
    opts = FinetuneOptions(
        init=args.run, out=args.out, steps=args.steps, tasks=list(dict.fromkeys(args.tasks)), examples=args.examples,
        shots=args.shots, seed=args.seed, held_out_fraction=args.held_out_fraction, split_seed=args.split_seed,
        words=args.words, lr=args.lr, train_overrides=[o[len("train."):] for o in args.overrides],
        resume=args.resume, force=args.force, progress=not args.quiet, device=args.device,
    )
    result = finetune(opts)
    if init_distributed().is_main:
        print(result.summary(f"finetuned {args.run}"))
    return 0
