"""`blt flops`: forward/training FLOPs per byte by component and parameter counts of a BLT config, of the
token baselines of the same preset, or of a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blt.baselines.model import TokenModelConfig
from blt.commands._paths import check_output_file
from blt.config import BLTConfig, EntropyModelConfig
from blt.errors import BLTError
from blt.evaluate.bpb import recorded_train
from blt.flops import (
    DEFAULT_BYTES_PER_TOKEN,
    FlopsPerByte,
    ModelCost,
    blt_cost,
    cost_table,
    entropy_model_flops,
    entropy_model_parameter_counts,
    flops_table,
    format_flops,
    run_cost,
    token_model_cost,
)
from blt.run import read_run_config

_COUNT_ORDER = ("hash_embedding", "byte_embedding", "embedding", "non_embedding", "encoder", "global_model", "decoder",
                "total")
TOKEN_PREFIX = "token."


DEFAULT_PRESET = "tiny"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"BLT preset: {', '.join(BLTConfig.preset_names())} (default: {DEFAULT_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a BLT config value, e.g. global_model.n_layers=6, or a baseline's with the prefix "
                        "token., e.g. token.n_layers=6 (repeatable)")
    p.add_argument("--patch-size", type=float, metavar="P",
                   help="mean patch size p in bytes (default: the config's target patch size, else 4.5)")
    p.add_argument("--seq-len", type=int, metavar="T", help="bytes per sequence for the attention terms (default: the config's max_seq_len)")
    p.add_argument("--entropy-preset", metavar="PRESET",
                   help=f"also count an entropy model: {', '.join(EntropyModelConfig.preset_names())}")
    p.add_argument("--baseline", action="append", choices=["bpe", "byte"], default=[],
                   help="also count this token baseline of the same preset (the BLT preset's global model over BPE "
                        "tokens or raw bytes) over the same T bytes, and compare (repeatable)")
    p.add_argument("--bytes-per-token", type=float, metavar="B",
                   help=f"mean bytes per BPE token (default: {DEFAULT_BYTES_PER_TOKEN}, Llama 3's in the paper; a BPE "
                        "run's measured value is tokenizer.val_bytes_per_token in its config.json)")
    p.add_argument("--vocab-size", type=int, metavar="V", help="BPE vocabulary size (default: the preset's)")
    p.add_argument("--run", type=Path, metavar="RUN", help="count a trained run instead (any kind; its measured patch "
                   "size or bytes per token, its sequence length)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON here")


def _counts_text(counts: dict[str, int]) -> str:
    return "\n".join(f"  {name.replace('_', ' '):<16}{counts[name]:>16,}" for name in _COUNT_ORDER if name in counts)


def _report(title: str, flops: FlopsPerByte, counts: dict[str, int], note: str = "") -> str:
    note = f"{note}\n" if note else ""
    return f"{title}\nforward FLOPs per byte\n{flops_table(flops)}\n{note}parameters\n{_counts_text(counts)}"


def _cost_report(title: str, cost: ModelCost) -> str:
    note = f"inference with the entropy model: {format_flops(cost.inference)} per byte" if cost.patcher else ""
    return _report(title, cost.flops, cost.parameters, note)


def _run_report(args: argparse.Namespace) -> dict[str, object]:
    recorded_train(read_run_config(args.run), args.run)
    cost = run_cost(args.run, bytes_per_step=args.patch_size, seq_len=args.seq_len)
    unit = {"blt": "bytes per patch", "bpe": "bytes per token", "byte": "bytes per token"}.get(cost.name, "bytes per step")
    print(_cost_report(f"{args.run} ({cost.name}): T = {cost.flops.seq_len:,} bytes, {cost.bytes_per_step:.2f} {unit}", cost))
    return {"run": str(args.run), **cost.to_dict()}


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that would be ignored, sizes no model has, and a --json that can't be written, before
    counting anything."""
    if args.run is not None:
        config_options = {"--preset": args.preset, "--set": args.overrides or None, "--entropy-preset": args.entropy_preset,
                          "--baseline": args.baseline or None, "--vocab-size": args.vocab_size,
                          "--bytes-per-token": args.bytes_per_token}
        given = [flag for flag, value in config_options.items() if value is not None]
        if given:
            raise BLTError(f"{given[0]} does not go with --run: a run is counted with its own config and what it "
                           "measured (--patch-size and --seq-len may replace the latter)")
    else:
        if "bpe" not in args.baseline and (args.vocab_size is not None or args.bytes_per_token is not None):
            raise BLTError("--vocab-size and --bytes-per-token describe the BPE baseline; add --baseline bpe")
        if not args.baseline and any(o.startswith(TOKEN_PREFIX) for o in args.overrides):
            raise BLTError(f"--set {TOKEN_PREFIX}KEY=VALUE changes the token baselines; add --baseline bpe or byte")
    if args.patch_size is not None and args.patch_size < 1:
        raise BLTError(f"--patch-size: patch size must be >= 1 byte (e.g. 4.5, 6 or 8), got {args.patch_size}")
    if args.seq_len is not None and args.seq_len < 1:
        raise BLTError(f"--seq-len: sequence length must be >= 1, got {args.seq_len}")
    check_output_file(args.json, "--json")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    if args.run is not None:
        result = _run_report(args)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    token_overrides = [o[len(TOKEN_PREFIX):] for o in args.overrides if o.startswith(TOKEN_PREFIX)]
    args.preset = DEFAULT_PRESET if args.preset is None else args.preset
    bytes_per_token = DEFAULT_BYTES_PER_TOKEN if args.bytes_per_token is None else args.bytes_per_token
    cfg = BLTConfig.preset(args.preset)
    blt_overrides = [o for o in args.overrides if not o.startswith(TOKEN_PREFIX)]
    if blt_overrides:
        cfg = cfg.with_overrides(blt_overrides)
    token_cfg = TokenModelConfig.preset(args.preset).with_overrides(token_overrides) if args.baseline else None
    ent_cfg = EntropyModelConfig.preset(args.entropy_preset) if args.entropy_preset is not None else None
    cost = blt_cost(cfg, patch_size=args.patch_size, seq_len=args.seq_len)
    flops, counts = cost.flops, cost.parameters
    p, T = flops.bytes_per_step, flops.seq_len
    title = f"BLT {args.preset}: T = {T:,} bytes per sequence, mean patch size p = {p:.2f} ({T / p:,.1f} patches)"
    print(_report(title, flops, counts, f"global model per patch: {format_flops(flops.components['global'].total * p)} forward"))
    result: dict[str, object] = {"preset": args.preset, "config": cfg.to_dict(), "flops": flops.to_dict(), "parameters": counts}

    if ent_cfg is not None:
        ent_flops = entropy_model_flops(ent_cfg, seq_len=T)
        ent_counts = entropy_model_parameter_counts(ent_cfg)
        print()
        print(_report(f"entropy model {args.entropy_preset} (window {ent_cfg.window})", ent_flops, ent_counts))
        print(f"BLT training + entropy model forward: {format_flops(flops.training + ent_flops.forward)} per byte")
        result["entropy_model"] = {"preset": args.entropy_preset, "flops": ent_flops.to_dict(), "parameters": ent_counts}
        cost = blt_cost(cfg, patch_size=args.patch_size, seq_len=args.seq_len, entropy_config=ent_cfg)

    if token_cfg is not None:
        costs = [cost]
        for kind in dict.fromkeys(args.baseline):
            if kind == "bpe":
                base = token_cfg.replace(vocab_size=args.vocab_size) if args.vocab_size is not None else token_cfg
                baseline = token_model_cost(base, bytes_per_token, T, name="bpe")
                what = f"{base.vocab_size:,} BPE tokens, {bytes_per_token:.2f} bytes per token"
            else:
                baseline = token_model_cost(token_cfg.replace(vocab_size=260), 1.0, T, name="byte")
                what = "raw bytes"
            print()
            print(_cost_report(f"{kind} baseline {args.preset} ({what}): T = {T:,} bytes per sequence "
                               f"({T / baseline.bytes_per_step:,.1f} tokens)", baseline))
            costs.append(baseline)
        print()
        print("per byte, over the same T bytes")
        print(cost_table(costs))
        result["baselines"] = {c.name: c.to_dict() for c in costs[1:]}

    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
