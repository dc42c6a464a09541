"""`blt demo`: the README's first command. On the default corpus: prepare the data, train the `tiny`
entropy model and a `tiny` BLT, report bits-per-byte, show a patched paragraph, generate, draw plots."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from blt.data import PreparedData, prepare
from blt.data.manifest import MANIFEST_NAME
from blt.errors import BLTError
from blt.evaluate import evaluate_run
from blt.generation import generate
from blt.pipelines.recipes import RunOptions, train_blt, train_entropy_model
from blt.run import load
from blt.tokenizer import encode
from blt.viz import patch_stats, plot_entropies, render_terminal

PARAGRAPH = (
    "The Byte Latent Transformer reads raw bytes. Where the next byte is easy to guess, bytes share a patch; "
    "where it is hard, a new patch starts. def parse(text): return [line.split() for line in text.splitlines()]"
)
PROMPTS = ("def __init__(self", "The module ")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the runs go (default: %(default)s)")
    p.add_argument("--data", type=Path, default=Path("data_cache/default"),
                   help="prepared data; the default corpus is prepared here if missing (default: %(default)s)")
    p.add_argument("--entropy-steps", type=int, default=300, help="entropy-model training steps (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="BLT training steps (default: %(default)s)")
    p.add_argument("--target-patch-size", type=float, default=4.5, help="mean patch size to calibrate to (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="retrain even if finished runs exist in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _finished(run_dir: Path) -> bool:
    return (run_dir / "model.safetensors").is_file()


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def check_options(args: argparse.Namespace) -> None:
    """Refuse bad steps, patch size, --data and --out before preparing or training anything."""
    if args.steps < 1 or args.entropy_steps < 1:
        raise BLTError(f"--steps and --entropy-steps must be at least 1, got {args.steps} and {args.entropy_steps}")
    if args.target_patch_size < 1:
        raise BLTError(f"--target-patch-size must be at least 1 byte (e.g. 4.5), got {args.target_patch_size}")
    for flag, path in (("--out", args.out), ("--data", args.data)):
        existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
        if existing.exists() and not existing.is_dir():
            raise BLTError(f"{flag} {path}: {existing} is a file; the demo needs a folder there")
    if args.data.is_dir() and not (args.data / MANIFEST_NAME).exists() and any(args.data.iterdir()):
        raise BLTError(f"--data {args.data} is neither prepared data (no {MANIFEST_NAME}) nor empty; the demo "
                       "prepares the default corpus only into a new or empty folder")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    started = time.perf_counter()
    torch.manual_seed(0)
    if not (args.data / MANIFEST_NAME).exists():
        _say(f"preparing the default corpus (Python standard library + pydoc topics) into {args.data}")
        prepare(None, args.data, progress=not args.quiet)
    data = PreparedData.open(args.data)
    train, val = data.split("train"), data.split("val")
    print(f"data: {len(train)} train documents ({train.total_bytes:,} bytes), {len(val)} validation ({val.total_bytes:,} bytes)")

    entropy_dir, blt_dir = args.out / "entropy", args.out / "blt"
    if args.fresh or not _finished(entropy_dir):
        _say(f"training the tiny entropy model ({args.entropy_steps} steps) -> {entropy_dir}")
        train_entropy_model(RunOptions(data=args.data, out=entropy_dir, steps=args.entropy_steps, force=True,
                                       progress=not args.quiet))
    else:
        print(f"reusing the entropy model in {entropy_dir} (--fresh retrains)")
    if args.fresh or not _finished(blt_dir):
        _say(f"training the tiny BLT ({args.steps} steps, patches of ~{args.target_patch_size} bytes) -> {blt_dir}")
        train_blt(RunOptions(data=args.data, out=blt_dir, steps=args.steps, force=True, progress=not args.quiet),
                  {"mode": "entropy", "target_patch_size": args.target_patch_size, "threshold": None}, entropy_dir)
    else:
        print(f"reusing the BLT in {blt_dir} (--fresh retrains)")

    _say("validation")
    entropy_run, blt_run = load(entropy_dir), load(blt_dir)
    seq_len = blt_run.info["train"]["seq_len"]
    ent = evaluate_run(entropy_run, data, seq_len=seq_len)
    res = evaluate_run(blt_run, data, seq_len=seq_len)
    print(f"entropy model: {ent.bits_per_byte:.3f} bits/byte")
    print(f"BLT:           {res.bits_per_byte:.3f} bits/byte, mean patch size {res.mean_patch_size:.2f} bytes, "
          f"{res.global_steps_per_byte:.3f} global steps per byte")

    _say("a paragraph, patched by the entropy model (shade = entropy of each byte)")
    patcher = blt_run.patcher
    ids = encode(PARAGRAPH)[None]
    entropies = patcher.entropies(ids)[0]
    starts = patcher.start_mask(ids, entropies[None])[0]
    data_bytes = PARAGRAPH.encode()
    threshold = blt_run.config.patching.threshold
    print(render_terminal(data_bytes, entropies[:-1], starts[1:], threshold, color=sys.stdout.isatty()))
    stats = patch_stats(patcher(ids)[0, 1:])
    print(f"{stats['patches']} patches for {stats['bytes']} bytes (mean {stats['mean']:.2f}), threshold {threshold:.3f} nats")
    png = plot_entropies(data_bytes, entropies[:-1], starts[1:], threshold, args.out / "patches.png",
                         title="Entropy of each byte and patch starts")

    _say("greedy generation (incremental engine: KV caches at every level)")
    for prompt in PROMPTS:
        text = generate(blt_run, prompt, max_bytes=80).decode("utf-8", errors="replace")
        print(f"{prompt!r} -> {text!r}")

    _say(f"done in {time.perf_counter() - started:.0f} s; pictures and runs:")
    for path in (entropy_dir / "loss.png", entropy_dir / "patch_size_vs_threshold.png", blt_dir / "loss.png", png):
        if path.exists():  # a reused entropy run need not hold its patch-size curve
            print(f"  {path}")
    print(f"  next: blt eval {blt_dir} | blt generate {blt_dir} --prompt '...' | blt patch FILE --entropy-model {blt_dir}")
    return 0
