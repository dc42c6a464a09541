"""The character tasks at several finetuning learning rates: each model at its best rate, side by side.

    python scripts/char_lr_sweep.py

Reads the scored points that `scripts/char_evidence.py` keeps (``<results>/points/<model>-stepNNNNN.json``)
for each (model, learning rate) named by ``--curve MODEL:LR=RESULTS`` (the default list is the finetuning
runs of the README), and writes to ``--out``:

- ``sweep.md`` and ``sweep.json``: held-out exact match (average over the tasks, 95% Wilson interval) at
  every scored step, per model and rate; each model's best rate, picked by the exact match at the last
  step; the tasks at those rates side by side, with the difference of the two models and its 95% interval
  (Newcombe's, from the two Wilson intervals: conservative, since both models answer the same questions);
- ``sweep.png``: the average exact match along finetuning, one line per model and rate.

The rates are picked on the held-out questions themselves, for both models alike, so both best rows are
optimistic in the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from blt.cli import run_reporting_errors
from blt.fileio import atomic_write_text
from blt.viz.plots import plot_task_curves

DEFAULT_CURVES = [  # the 1,500-step runs of the README: BLT at 1/2 and 1x its pretraining peak, BPE at 1/2, 1x and 2x
    "blt:0.008=results/char_tasks_long",
    "blt:0.016=results/char_tasks_long_lr0.016",
    "bpe:0.002=results/char_tasks_long_bpe_lr0.002",
    "bpe:0.004=results/char_tasks_long_bpe_lr0.004",
    "bpe:0.008=results/char_tasks_long_bpe_lr0.008",
]


def parse_curve(text: str) -> tuple[str, float, Path]:
    """``MODEL:LR=RESULTS`` -> (model, lr, results directory)."""
    try:
        key, results = text.split("=", 1)
        model, lr = key.split(":", 1)
        return model, float(lr), Path(results)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL:LR=RESULTS (e.g. blt:0.008=results/char_tasks), got {text!r}")


def read_curve(results: Path, model: str) -> list[dict]:
    """The scored points of ``model`` in ``results/points``, in step order."""
    paths = sorted((results / "points").glob(f"{model}-step*.json"))
    if not paths:
        raise SystemExit(f"char_lr_sweep: no scored points of {model} in {results / 'points'}")
    return sorted((json.loads(p.read_text()) for p in paths), key=lambda p: p["step"])


def difference_interval(a: dict, b: dict) -> tuple[float, float, float]:
    """a's exact match minus b's, with Newcombe's 95% interval from each rate's Wilson interval."""
    (pa, (la, ua)), (pb, (lb, ub)) = ((s["exact_match"], s["exact_match_interval"]) for s in (a, b))
    d = pa - pb
    return d, d - math.hypot(pa - la, ub - pb), d + math.hypot(ua - pa, pb - lb)


def _pct(score: dict) -> str:
    low, high = score["exact_match_interval"]
    return f"{100 * score['exact_match']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def sweep(curves: list[tuple[str, float, Path]]) -> dict:
    record: dict = {"runs": [], "best": {}}
    for model, lr, results in curves:
        points = read_curve(results, model)
        record["runs"].append({"model": model, "lr": lr, "results": str(results), "curve": points})
    last = max(r["curve"][-1]["step"] for r in record["runs"])
    for model in dict.fromkeys(r["model"] for r in record["runs"]):
        runs = [r for r in record["runs"] if r["model"] == model and r["curve"][-1]["step"] == last]
        if runs:  # runs still finetuning (scored to an earlier step) are not picked
            best = max(runs, key=lambda r: r["curve"][-1]["tasks"]["average"]["exact_match"])
            record["best"][model] = {"lr": best["lr"], "step": last}
    return record


def markdown(record: dict) -> str:
    steps = sorted({p["step"] for r in record["runs"] for p in r["curve"]})
    lines = ["Held-out exact match (%, average over the tasks, 95% Wilson interval) along finetuning, per model "
             "and finetuning peak learning rate; **bold**: each model's best rate at the last step "
             "(among the runs scored to it).", "",
             "| model | lr | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|---|" + "---|" * len(steps)]
    for r in record["runs"]:
        by_step = {p["step"]: p for p in r["curve"]}
        best = record["best"].get(r["model"], {}).get("lr") == r["lr"]
        lr = f"**{r['lr']:g}**" if best else f"{r['lr']:g}"
        cells = [_pct(by_step[s]["tasks"]["average"]) if s in by_step else "-" for s in steps]
        lines.append(f"| {r['model']} | {lr} | " + " | ".join(cells) + " |")
    models = list(record["best"])
    if len(models) == 2:
        a, b = models
        finals = {}
        for m in models:
            run = next(r for r in record["runs"] if r["model"] == m and r["lr"] == record["best"][m]["lr"])
            finals[m] = run["curve"][-1]
        lines += ["", f"Each at its best rate ({a}: {record['best'][a]['lr']:g}, step {finals[a]['step']}; "
                  f"{b}: {record['best'][b]['lr']:g}, step {finals[b]['step']}): exact match (%) and {a} − {b} "
                  "(points, 95% interval).", "",
                  f"| task | {a} | {b} | {a} − {b} |", "|---|---|---|---|"]
        for task in finals[a]["tasks"]:
            d, low, high = difference_interval(finals[a]["tasks"][task], finals[b]["tasks"][task])
            lines.append(f"| {task} | {_pct(finals[a]['tasks'][task])} | {_pct(finals[b]['tasks'][task])} | "
                         f"{100 * d:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--curve", type=parse_curve, action="append", metavar="MODEL:LR=RESULTS",
                   help="one finetuning run's scored points (repeatable; default: the README's runs)")
    p.add_argument("--out", type=Path, default=Path("results/char_tasks_lr_sweep"))
    args = p.parse_args(argv)
    curves = args.curve or [parse_curve(c) for c in DEFAULT_CURVES]
    record = sweep(curves)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sweep.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.out / "sweep.md", markdown(record))
    plot_task_curves({f"{r['model']} lr {r['lr']:g}": {"average": [{"step": p["step"], **p["tasks"]["average"]}
                                                                 for p in r["curve"]]} for r in record["runs"]},
                     args.out / "sweep.png")
    print((args.out / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors("char_lr_sweep", main))
