"""The character tasks at several finetuning learning rates: each model at its best rate, side by side.

    python scripts/char_lr_sweep.py

Reads the scored points that `scripts/char_evidence.py` keeps (``<results>/points/<model>-stepNNNNN.json``)
for each (model, learning rate) named by ``--curve MODEL:LR=RESULTS`` (the default list is the finetuning
runs of the README). ``MODEL@RUN:LR=RESULTS`` names which pretraining run of the model was finetuned, when
there are several (``blt@2``); each (model, pretraining run) is swept on its own. Writes to ``--out``:

- ``sweep.md`` and ``sweep.json``: held-out exact match (average over the tasks, 95% Wilson interval) at
  every scored step, per model, pretraining run and rate; the best rate of each, picked by the exact match
  at the last step; the tasks at the best rates of the two compared (``--versus``) side by side, with
  their difference and its 95% interval (Newcombe's, from the two Wilson intervals: conservative, since
  both models answer the same questions); and, where one model was finetuned at one rate from several
  pretraining runs, how far apart those runs end;
- ``sweep.png``: the average exact match along finetuning, one line per model, pretraining run and rate.

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

DEFAULT_CURVES = [  # the 1,500-step runs of the README; @N: which pretraining run of the 3e13 recipe was finetuned
    "blt@1:0.008=results/char_tasks_long",
    "blt@2:0.016=results/char_tasks_long_lr0.016",
    "blt@3:0.016=results/char_tasks_long_blt_lr0.016",
    "blt@3:0.032=results/char_tasks_long_blt_lr0.032",
    "bpe@1:0.002=results/char_tasks_long",
    "bpe@2:0.001=results/char_tasks_long_bpe_lr0.001",
    "bpe@2:0.002=results/char_tasks_long_bpe_lr0.002",
    "bpe@2:0.004=results/char_tasks_long_bpe_lr0.004",
    "bpe@2:0.008=results/char_tasks_long_bpe_lr0.008",
    "bpe@3:0.002=results/char_tasks_long_bpe_seed1_lr0.002",
]
DEFAULT_VERSUS = ("blt@3", "bpe@2")  # both retrained on one machine with seed 0, each at its best swept rate


def parse_curve(text: str) -> tuple[str, str, float, Path]:
    """``MODEL[@RUN]:LR=RESULTS`` -> (model, pretraining run or "", lr, results directory)."""
    try:
        key, results = text.split("=", 1)
        label, lr = key.split(":", 1)
        model, _, run = label.partition("@")
        if not model:
            raise ValueError(text)
        return model, run, float(lr), Path(results)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL[@RUN]:LR=RESULTS (e.g. blt:0.008=results/char_tasks), "
                                         f"got {text!r}")


def label(run: dict) -> str:
    """``model@run``, or the model alone when it has one pretraining run."""
    return f"{run['model']}@{run['pretraining']}" if run["pretraining"] else run["model"]


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


def sweep(curves: list[tuple[str, str, float, Path]]) -> dict:
    record: dict = {"runs": [], "best": {}}
    for model, run, lr, results in curves:
        points = read_curve(results, model)
        kept = {p["lr"] for p in points if "lr" in p}
        if kept and kept != {lr}:
            raise SystemExit(f"char_lr_sweep: {model}:{lr:g}={results}: its points were finetuned at "
                             f"{', '.join(f'{r:g}' for r in sorted(kept))}")
        record["runs"].append({"model": model, "pretraining": run, "lr": lr, "results": str(results),
                               "curve": points})
    last = max(r["curve"][-1]["step"] for r in record["runs"])
    for name in dict.fromkeys(label(r) for r in record["runs"]):
        runs = [r for r in record["runs"] if label(r) == name and r["curve"][-1]["step"] == last]
        if runs:  # runs still finetuning (scored to an earlier step) are not picked
            best = max(runs, key=lambda r: r["curve"][-1]["tasks"]["average"]["exact_match"])
            record["best"][name] = {"lr": best["lr"], "step": last}
    return record


def final(record: dict, name: str, lr: float) -> dict:
    return next(r for r in record["runs"] if label(r) == name and r["lr"] == lr)["curve"][-1]


def repeats(record: dict) -> list[dict]:
    """Per (model, rate) finetuned from two or more pretraining runs (all scored to the last step): each
    run's final exact match over all tasks, and the highest minus the lowest with its 95% interval."""
    last = max(r["curve"][-1]["step"] for r in record["runs"])
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in record["runs"]:
        if r["pretraining"] and r["curve"][-1]["step"] == last:
            groups.setdefault((r["model"], r["lr"]), []).append(r)
    rows = []
    for (model, lr), runs in groups.items():
        if len({r["pretraining"] for r in runs}) < 2:
            continue
        scores = {r["pretraining"]: r["curve"][-1]["tasks"]["average"] for r in runs}
        ordered = sorted(scores, key=lambda k: scores[k]["exact_match"])
        low, high = ordered[0], ordered[-1]
        rows.append({"model": model, "lr": lr, "step": last, "runs": scores, "highest": high, "lowest": low,
                     "difference": difference_interval(scores[high], scores[low])})
    return rows


def markdown(record: dict, versus: tuple[str, str] | None) -> str:
    steps = sorted({p["step"] for r in record["runs"] for p in r["curve"]})
    lines = ["Held-out exact match (%, average over the tasks, 95% Wilson interval) along finetuning, per model "
             "(@ its pretraining run) and finetuning peak learning rate; **bold**: the best rate of each at the "
             "last step (among the runs scored to it).", "",
             "| model | lr | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|---|" + "---|" * len(steps)]
    for r in record["runs"]:
        by_step = {p["step"]: p for p in r["curve"]}
        best = record["best"].get(label(r), {}).get("lr") == r["lr"]
        lr = f"**{r['lr']:g}**" if best else f"{r['lr']:g}"
        cells = [_pct(by_step[s]["tasks"]["average"]) if s in by_step else "-" for s in steps]
        lines.append(f"| {label(r)} | {lr} | " + " | ".join(cells) + " |")
    if versus is not None and all(v in record["best"] for v in versus):
        a, b = versus
        finals = {m: final(record, m, record["best"][m]["lr"]) for m in versus}
        lines += ["", f"Each at its best rate ({a}: {record['best'][a]['lr']:g}, step {finals[a]['step']}; "
                  f"{b}: {record['best'][b]['lr']:g}, step {finals[b]['step']}): exact match (%) and {a} − {b} "
                  "(points, 95% interval).", "",
                  f"| task | {a} | {b} | {a} − {b} |", "|---|---|---|---|"]
        for task in finals[a]["tasks"]:
            d, low, high = difference_interval(finals[a]["tasks"][task], finals[b]["tasks"][task])
            lines.append(f"| {task} | {_pct(finals[a]['tasks'][task])} | {_pct(finals[b]['tasks'][task])} | "
                         f"{100 * d:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] |")
    rows = record["repeats"]
    if rows:
        lines += ["", "One model finetuned at one rate from different pretraining runs of the same recipe: exact "
                  "match over all tasks (%) per run, and the highest minus the lowest (points, 95% interval).", "",
                  "| model | lr | runs | highest − lowest |", "|---|---|---|---|"]
        for row in rows:
            runs = "; ".join(f"@{k}: {_pct(v)}" for k, v in row["runs"].items())
            d, low, high = row["difference"]
            lines.append(f"| {row['model']} | {row['lr']:g} | {runs} | {100 * d:+.1f} [{100 * low:+.1f}, "
                         f"{100 * high:+.1f}] (@{row['highest']} − @{row['lowest']}) |")
    return "\n".join(lines) + "\n"


def default_versus(record: dict) -> tuple[str, str] | None:
    """The two compared head to head: `DEFAULT_VERSUS` when both were picked, else the two picked ones if there
    are two, else None."""
    if all(v in record["best"] for v in DEFAULT_VERSUS):
        return DEFAULT_VERSUS
    return tuple(record["best"]) if len(record["best"]) == 2 else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--curve", type=parse_curve, action="append", metavar="MODEL:LR=RESULTS",
                   help="one finetuning run's scored points (repeatable; default: the README's runs)")
    p.add_argument("--out", type=Path, default=Path("results/char_tasks_lr_sweep"))
    p.add_argument("--versus", nargs=2, metavar="MODEL[@RUN]", default=None,
                   help="the two compared at their best rates (default: blt@3 and bpe@2 when both are there, "
                        "else the two there are)")
    args = p.parse_args(argv)
    curves = args.curve or [parse_curve(c) for c in DEFAULT_CURVES]
    record = sweep(curves)
    record["repeats"] = repeats(record)
    versus = tuple(args.versus) if args.versus else default_versus(record)
    if versus is not None and not all(v in record["best"] for v in versus):
        raise SystemExit(f"char_lr_sweep: --versus {' '.join(versus)}: each must be a MODEL[@RUN] of the curves, "
                         f"scored to the last step (there are: {', '.join(record['best'])})")
    record["versus"] = list(versus) if versus else None
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sweep.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.out / "sweep.md", markdown(record, versus))
    plot_task_curves({f"{label(r)} lr {r['lr']:g}": {"average": [{"step": p["step"], **p["tasks"]["average"]}
                                                               for p in r["curve"]]} for r in record["runs"]},
                     args.out / "sweep.png")
    print((args.out / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors("char_lr_sweep", main))
