"""How close `blt byteify` gets to its source token model, for what share of the source's training FLOPs,
against a BLT of the same shape trained from scratch with the same FLOPs.

    python scripts/byteify_evidence.py --source runs/scaling/budget-3e+13/bpe-lr0.004-seed0/bpe

The source is a `blt train-baseline --kind bpe` run (by default the BPE member of the scaling runs at 3e13
FLOPs). Its pretraining FLOPs are its steps x bytes per step x training FLOPs per byte (`blt.flops.run_cost`).
For each ``--fractions`` value f, byteifying gets f of them: ``--stage1-share`` of its steps with the global
model frozen, the rest with everything training (the global model at ``--global-lr-scale``), patching at the
source tokenizer's token starts throughout. The from-scratch BLT has the byteified one's config and
patching and trains for all of those steps from a random initialisation. Every model is scored on the whole
validation split (`blt.evaluate.evaluate_run`). Each ``--distill`` weight W > 0 byteifies once more with
stage 1's distillation toward the source's token embeddings (`blt byteify --distill W --distill-loss L`, into
``f<f>-d<W>-<L>``);
the from-scratch BLT of a fraction is shared by all of them. FLOPs of the frozen stage are counted as if the global
model's weights were trained too (they are not: that stage costs less than counted).

Resumable: finished runs are skipped. Results: ``--results`` (default ``results/byteify``): ``byteify.json``
and ``byteify.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from blt.cli import STOPPED, run_reporting_errors
from blt.config import BLTConfig
from blt.data import PreparedData
from blt.evaluate import evaluate_run
from blt.evaluate.bpb import recorded_train
from blt.fileio import atomic_write_text
from blt.flops import blt_cost, run_cost
from blt.pipelines.byteify import global_overrides, read_token_source
from blt.run import load, read_run_config


def blt_cli(*argv: str) -> None:
    print("byteify_evidence: blt " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "blt", *argv], check=True)


def pretraining_flops(run: Path) -> tuple[float, int, int]:
    """(training FLOPs, steps, bytes per step) of a finished run."""
    train = read_run_config(run)["train"]
    bytes_per_step = train["batch_size"] * train["seq_len"]
    return run_cost(run).training * train["steps"] * bytes_per_step, train["steps"], bytes_per_step


def train_sets(args, warmup: int) -> list[str]:
    sets = [f"train.lr={args.lr:g}", f"train.warmup_steps={warmup}", "train.eval_every=0",
            f"train.seed={args.seed}"]
    return [a for s in sets for a in ("--set", s)]


def score(run: Path, data: PreparedData) -> dict:
    r = load(run)
    seq_len = recorded_train(r.info, run).get("seq_len") or 512
    result = evaluate_run(r, data, seq_len, log=lambda m: None)
    return {"val_bpb": result.bits_per_byte, "bytes": result.bytes, "mean_patch_size": result.mean_patch_size,
            "bytes_per_token": result.bytes_per_token}


def markdown(record: dict) -> str:
    src = record["source"]
    lines = [f"Source: `{src['run']}`, a BPE token model trained for {src['steps']:,} steps "
             f"({src['train_flops']:.2e} FLOPs); validation {src['val_bpb']:.3f} bits/byte.",
             f"Byteified with preset `{record['settings']['preset']}` local models, patches at the source's token "
             f"starts, lr {record['settings']['lr']:g} (global model x{record['settings']['global_lr_scale']:g} in "
             f"stage 2), {record['settings']['precision']}; whole validation split.", "",
             "| FLOPs (share of the source's) | stage 1 distillation | steps (stage 1 + 2) | after stage 1 | "
             "after stage 2 | vs source | from scratch, same FLOPs |", "|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        distill = f"{r.get('distill_loss') or 'mse'}, weight {r['distill']:g}" if r.get("distill") else "none"
        lines.append(f"| {r['train_flops']:.2e} ({100 * r['fraction']:.0f}%) | {distill} | "
                     f"{r['stage1_steps']} + {r['stage2_steps']} | "
                     f"{r['stage1']['val_bpb']:.3f} | {r['stage2']['val_bpb']:.3f} | "
                     f"{r['stage2']['val_bpb'] - src['val_bpb']:+.3f} | {r['scratch']['val_bpb']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=Path("runs/scaling/budget-3e+13/bpe-lr0.004-seed0/bpe"))
    p.add_argument("--data", type=Path, default=Path("data_cache/default"))
    p.add_argument("--runs", type=Path, default=Path("runs/byteify"))
    p.add_argument("--results", type=Path, default=Path("results/byteify"))
    p.add_argument("--preset", default="paper-xs")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.2])
    p.add_argument("--stage1-share", type=float, default=0.5)
    p.add_argument("--global-lr-scale", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1.6e-2, help="the local models' peak rate (BLT's best in the sweep)")
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distill", type=float, nargs="+", default=[0.0], metavar="W",
                   help="stage 1's distillation weights to compare (`blt byteify --distill`; 0 = none)")
    p.add_argument("--distill-loss", choices=["cosine", "mse"], default="cosine", help="`blt byteify --distill-loss`")
    args = p.parse_args(argv)
    data = PreparedData.open(args.data)
    flops, steps, bytes_per_step = pretraining_flops(args.source)
    record = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "source": {"run": str(args.source), "steps": steps, "train_flops": flops, **score(args.source, data)},
              "runs": []}
    # The byteified BLT's training FLOPs per byte, at the source's bytes per token (its patches are its tokens)
    source = read_token_source(args.source)
    cfg = BLTConfig.preset(args.preset).with_overrides(global_overrides(source.config) + ["patching.mode=\"bpe\""])
    bytes_per_token = read_run_config(args.source)["tokenizer"]["val_bytes_per_token"]
    per_step = blt_cost(cfg, bytes_per_token, read_run_config(args.source)["train"]["seq_len"]).training * bytes_per_step
    record["settings"]["byteified_train_flops_per_byte"] = per_step / bytes_per_step
    for fraction, weight in [(f, w) for f in args.fractions for w in args.distill]:
        base = args.runs / (f"f{fraction:g}" + (f"-s{args.stage1_share:g}" if args.stage1_share != 0.5 else ""))
        out = base.with_name(base.name + (f"-d{weight:g}-{args.distill_loss}" if weight else ""))
        total = max(2, int(fraction * flops / per_step))
        s1 = max(1, round(total * args.stage1_share))
        s2 = total - s1
        warm1 = max(1, round(args.warmup_fraction * s1))  # the same warmup for both stages
        if not (out / "stage2" / "model.safetensors").is_file():
            resume = ["--resume"] if (out / "stage1" / "config.json").is_file() else ["--force"]
            blt_cli("byteify", str(args.source), "--data", str(args.data), "--out", str(out), "--preset", args.preset,
                    "--stage1-steps", str(s1), "--stage2-steps", str(s2), "--global-lr-scale", f"{args.global_lr_scale:g}",
                    "--precision", args.precision, "--distill", f"{weight:g}", "--distill-loss", args.distill_loss, "--quiet", *train_sets(args, warm1),
                    *resume)
        scratch = base / "scratch"  # one from-scratch BLT per fraction, whatever the distillation
        if not (scratch / "model.safetensors").is_file():
            cfg = read_run_config(out / "stage2")["model"]
            g = cfg["global_model"]
            sets = [f"global_model.{k}={json.dumps(g[k])}" for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim",
                                                                     "norm_eps", "rope_theta")]
            blt_cli("train", "--data", str(args.data), "--out", str(scratch), "--preset", args.preset, "--steps",
                    str(total), "--patching", "bpe", "--tokenizer", str(args.source / "tokenizer.json"),
                    "--precision", args.precision, "--quiet", *[a for s in sets for a in ("--set", s)],
                    *train_sets(args, max(1, round(args.warmup_fraction * total))),
                    *(["--resume"] if (scratch / "config.json").is_file() else []))
        record["runs"].append({"fraction": fraction, "distill": weight,
                               "distill_loss": args.distill_loss if weight else None, "stage1_steps": s1, "stage2_steps": s2,
                               "train_flops": total * per_step, "stage1": score(out / "stage1", data),
                               "stage2": score(out / "stage2", data), "scratch": score(scratch, data)})
        args.results.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.results / "byteify.json", json.dumps(record, indent=2) + "\n")
        atomic_write_text(args.results / "byteify.md", markdown(record) + "\n")
        print(markdown(record), flush=True)
    return 0


if __name__ == "__main__":  # Ctrl-C: training saved a checkpoint first
    sys.exit(run_reporting_errors("byteify_evidence", main, interrupted=STOPPED))
