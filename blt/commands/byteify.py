"""`blt byteify SOURCE --data DIR --out OUT`: a BLT whose global model is a trained token model's blocks,
trained in two stages (`blt.pipelines.byteify`): OUT/stage1 with those blocks frozen, then OUT/stage2 with
everything training and the global model at a lower learning rate. OUT/stage2 is the byteified BLT."""

from __future__ import annotations

import argparse
from pathlib import Path

from blt.commands._common import add_device_argument
from blt.errors import BLTError
from blt.pipelines.byteify import ByteifyOptions, train_byteified

PATCHING_MODES = ["bpe", "byte", "space", "static", "entropy", "monotonic", "combined"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, metavar="SOURCE",
                   help="a `blt train-baseline` run, or a transformers Llama checkpoint directory (safetensors)")
    p.add_argument("--data", required=True, type=Path, help="prepared data directory (from `blt data prepare`)")
    p.add_argument("--out", required=True, type=Path, help="folder for the two stages' runs (stage1/, stage2/)")
    p.add_argument("--preset", default="paper-xs", help="shapes of the new local models (default: %(default)s); "
                   "the global model is the source's")
    p.add_argument("--stage1-steps", type=int, default=200, help="steps with the global model frozen (default: %(default)s)")
    p.add_argument("--stage2-steps", type=int, default=200, help="steps with everything training; 0 skips stage 2 "
                   "(default: %(default)s)")
    p.add_argument("--global-lr-scale", type=float, default=0.1,
                   help="stage 2: the global model's learning rate as a share of the local models' (default: %(default)s)")
    p.add_argument("--patching", choices=PATCHING_MODES[:4], help="stage 1's patching (default: the source's units: "
                   "bpe at its tokenizer's token starts, byte for a byte-level source)")
    p.add_argument("--tokenizer", type=Path, metavar="FILE", help="BPE tokenizer.json for --patching bpe (default: the "
                   "source run's)")
    p.add_argument("--stage2-patching", choices=PATCHING_MODES, help="stage 2's patching (default: stage 1's)")
    p.add_argument("--entropy-model", type=Path, metavar="RUN", help="for entropy patching in stage 2")
    p.add_argument("--target-patch-size", type=float, metavar="BYTES", help="stage 2's entropy patching is calibrated "
                   "to this mean patch size")
    p.add_argument("--distill", type=float, default=0.0, metavar="W",
                   help="stage 1: also pull the global model's input at each patch toward the source's embedding of "
                        "that patch's token, with weight W (needs the source's BPE patching; default: 0, off)")
    p.add_argument("--distill-loss", choices=["cosine", "mse"], default="cosine",
                   help="--distill's term per patch: 1 - cosine similarity, or squared error over the embeddings' "
                        "mean square (default: %(default)s)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast or plain fp32 (default: fp32)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the BLT's config (e.g. encoder.n_layers=2) or of training "
                        "(train.lr=1e-3), for both stages (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue in --out: a finished stage is kept, an unfinished "
                   "one resumes from its newest checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite the stages' run directories")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(p)


def run(args: argparse.Namespace) -> int:
    model = [o for o in args.overrides if not o.startswith("train.")]
    if any(o.startswith("global_model.") for o in model):
        raise BLTError("--set global_model.*: the global model is the source's blocks; its shape comes from SOURCE")
    opts = ByteifyOptions(
        source=args.source, data=args.data, out=args.out, preset=args.preset, stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps, global_lr_scale=args.global_lr_scale, patching=args.patching,
        tokenizer=args.tokenizer, stage2_patching=args.stage2_patching, entropy_model=args.entropy_model,
        target_patch_size=args.target_patch_size, distill_weight=args.distill, distill_loss=args.distill_loss,
        model_overrides=model,
        train_overrides=[o[len("train."):] for o in args.overrides if o.startswith("train.")],
        precision=args.precision, device=args.device, resume=args.resume, force=args.force, progress=not args.quiet)
    record = train_byteified(opts)
    final = args.out / ("stage2" if "stage2" in record["stages"] else "stage1")
    bpb = record["stages"][final.name]["val_bpb"]
    print(f"byteified {args.source} -> {final}" + (f" (validation {bpb:.3f} bits/byte)" if bpb is not None else ""))
    return 0
