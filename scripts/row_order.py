"""Training batches in stream order against shuffled rows, at the same budget: validation bits/byte and the
step-to-step spread of the training loss, for the tiny entropy model (a byte-level LM) on the default corpus,
and with ``--blt`` also for the tiny BLT (entropy patching at 4.5 bytes, by the first seed's entropy model
trained on shuffled rows).

    .venv/bin/python scripts/row_order.py [--steps 300] [--seeds 0 1] [--blt] [--runs runs/row_order]

Each run is `blt train-entropy`, resumed when it exists (a finished one is left as it is), so an interrupted
experiment continues where it stopped. Writes results/row_order/row_order.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDERS = ("stream", "shuffled")


def blt(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "blt", *args], cwd=REPO, check=True)


def spread(losses: list[float]) -> float:
    """Standard deviation of the change in training bits/byte from one logged step to the next."""
    return statistics.pstdev(b - a for a, b in zip(losses, losses[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data", type=Path, default=Path("data_cache/default"))
    parser.add_argument("--runs", type=Path, default=Path("runs/row_order"))
    parser.add_argument("--out", type=Path, default=Path("results/row_order"))
    parser.add_argument("--blt", action="store_true", help="also train the tiny BLT both ways (first seed)")
    args = parser.parse_args()
    if not (REPO / args.data / "manifest.json").is_file():
        blt("data", "prepare", "--out", str(args.data))
    members = [("entropy model", "train-entropy", seed, []) for seed in args.seeds]
    if args.blt:
        patching = ["--entropy-model", str(args.runs / f"shuffled_seed{args.seeds[0]}"), "--target-patch-size", "4.5"]
        members.append(("BLT", "train", args.seeds[0], patching))
    rows = []
    for model, command, seed, extra in members:
        for order in ORDERS:
            run = args.runs / f"{'blt_' if command == 'train' else ''}{order}_seed{seed}"
            resume = ["--resume"] if (REPO / run / "config.json").is_file() else ["--force"]
            blt(command, "--data", str(args.data), "--out", str(run), "--steps", str(args.steps), "--quiet",
                "--device", "cpu", "--set", f"train.row_order={order}", "--set", f"train.seed={seed}",
                "--set", "train.log_every=1", *extra, *resume)
            records = [json.loads(line) for line in (REPO / run / "metrics.jsonl").read_text().splitlines()]
            train = [r["bpb"] for r in records]
            rows.append({"model": model, "order": order, "seed": seed,
                         "val_bpb": [r for r in records if "val_bpb" in r][-1]["val_bpb"],
                         "train_bpb_step_spread": spread(train),
                         "train_bpb_last_50_mean": statistics.fmean(train[-50:])})
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "row_order.json").write_text(json.dumps({"steps": args.steps, "runs": rows}, indent=2) + "\n")
    lines = ["| model | rows | seed | validation bits/byte | step-to-step change of training bits/byte (std) | "
             "training bits/byte, last 50 steps |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['order']} | {r['seed']} | {r['val_bpb']:.3f} | {r['train_bpb_step_spread']:.3f} | "
              f"{r['train_bpb_last_50_mean']:.3f} |" for r in rows]
    (out / "row_order.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
