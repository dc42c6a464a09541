"""`blt flops`: forward/training FLOPs per byte by component and parameter counts of a BLT config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blt.config import BLTConfig, EntropyModelConfig
from blt.flops import (
    FlopsPerByte,
    blt_flops,
    blt_parameter_counts,
    entropy_model_flops,
    entropy_model_parameter_counts,
    flops_table,
    format_flops,
)

_COUNT_ORDER = ("hash_embedding", "byte_embedding", "non_embedding", "encoder", "global_model", "decoder", "total")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help=f"BLT preset: {', '.join(BLTConfig.preset_names())} (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. global_model.n_layers=6 (repeatable)")
    p.add_argument("--patch-size", type=float, metavar="P",
                   help="mean patch size p in bytes (default: the config's target patch size, else 4.5)")
    p.add_argument("--seq-len", type=int, metavar="T", help="bytes per sequence for the attention terms (default: the config's max_seq_len)")
    p.add_argument("--entropy-preset", metavar="PRESET",
                   help=f"also count an entropy model: {', '.join(EntropyModelConfig.preset_names())}")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON here")


def _counts_text(counts: dict[str, int]) -> str:
    return "\n".join(f"  {name.replace('_', ' '):<16}{counts[name]:>16,}" for name in _COUNT_ORDER if name in counts)


def _report(title: str, flops: FlopsPerByte, counts: dict[str, int], note: str = "") -> str:
    note = f"{note}\n" if note else ""
    return f"{title}\nforward FLOPs per byte\n{flops_table(flops)}\n{note}parameters\n{_counts_text(counts)}"


def run(args: argparse.Namespace) -> int:
    cfg = BLTConfig.preset(args.preset)
    if args.overrides:
        cfg = cfg.with_overrides(args.overrides)
    ent_cfg = EntropyModelConfig.preset(args.entropy_preset) if args.entropy_preset else None
    flops = blt_flops(cfg, patch_size=args.patch_size, seq_len=args.seq_len)
    counts = blt_parameter_counts(cfg)
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

    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
