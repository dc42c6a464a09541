"""Options shared by the training commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.pipelines.recipes import RunOptions


def add_training_arguments(p: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    p.add_argument("--data", required=True, type=Path, help="prepared data directory (from `blt data prepare`)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--preset", default=default_preset, help="named model size (default: %(default)s)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast or plain fp32 (default: fp32)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. global_model.n_layers=6 or train.lr=1e-3 (repeatable)")
    add_device_argument(p)
    p.add_argument("--fsdp", action="store_true", help="under torchrun, shard the model with FSDP2 instead of DDP")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward: the first steps take minutes to compile, later ones "
                        "run faster (on a Xeon, about 1.1x in fp32 and 1.4x in bf16 on the small preset)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest valid checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto: a GPU when torch sees one, else "
                   "the CPU; under torchrun each training process takes GPU LOCAL_RANK (default: %(default)s)")


def run_options(args: argparse.Namespace) -> RunOptions:
    """``train.x=v`` overrides go to the training config, the rest to the model config."""
    train = [o[len("train."):] for o in args.overrides if o.startswith("train.")] + (["parallel=fsdp"] if args.fsdp else [])
    train += ["compile=true"] if args.compile else []
    model = [o for o in args.overrides if not o.startswith("train.")]
    return RunOptions(data=args.data, out=args.out, preset=args.preset, model_overrides=model, train_overrides=train,
                      steps=args.steps, precision=args.precision, resume=args.resume, force=args.force,
                      progress=not args.quiet, device=args.device)
