"""Character-level tasks and noisy input: a BLT against a BPE model of equal pretraining FLOPs.

    python scripts/char_evidence.py

By default the two come from the scaling runs at 3e13 training FLOPs (`scripts/scaling.py`): BLT at 8
bytes per patch and the BPE baseline, both preset ``paper-xs``, on the same bytes.

1. **Words.** The most frequent words of the pretraining data (`blt.evaluate.char_tasks.words_from_data`),
   written once to ``<runs>/words.txt`` and split by a hash of each word: 80% train, 20% held out. Both
   models use this one split.
2. **Finetuning curve.** Each model is scored before finetuning (step 0), then finetuned
   (`blt.pipelines.finetune`) on ``--examples`` solved few-shot examples per task about train words only,
   with the same examples, order, steps and learning-rate rule (half the model's pretraining peak, or one
   ``--lr`` for both). A checkpoint is kept every ``--eval-every`` steps, and each is scored on
   ``--questions`` held-out questions per task: exact match of the greedy answer (the headline) and ranking
   of the candidates, each with a 95% Wilson interval.
3. **Noise.** The pretrained models on ``--passages`` passages of the validation split, clean and under each
   noise of `blt.evaluate.noise`: bits per byte per passage, the bits a noise adds (a mean over passages
   with a 95% interval), and BLT's added bits minus BPE's, paired over the same passages.

Resumable: a finetuning run continues from its newest checkpoint, and each scored point is kept in
``<results>/points/`` (committed), so it is not scored again. ``--report`` only rewrites ``char_tasks.json``,
``char_tasks.md`` and ``curves.png`` from the kept points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blt.cli import STOPPED, run_reporting_errors
from blt.data import PreparedData
from blt.evaluate.char_tasks import (
    EVIDENCE_HELD_OUT_FRACTION,
    EVIDENCE_SPLIT_SEED,
    EVIDENCE_TASKS,
    TaskScore,
    evaluate_tasks,
    load_split,
    make_task_set,
    split_words,
    words_from_data,
    words_from_file,
)
from blt.evaluate.noise import CHOICES, NOISES, degradation, evaluate_noise, passages
from blt.evaluate.scoring import scorer_for
from blt.fileio import atomic_write_text
from blt.pipelines.finetune import WORDS_FILE, FinetuneOptions, finetune
from blt.run import load, read_run_config
from blt.train.checkpoint import WEIGHTS_FILE, list_checkpoints, load_tensors, verify_checkpoint
from blt.viz.plots import plot_task_curves

SCALING = Path("runs/scaling/budget-3e+13")
TASKS = EVIDENCE_TASKS
HELD_OUT_FRACTION, SPLIT_SEED = EVIDENCE_HELD_OUT_FRACTION, EVIDENCE_SPLIT_SEED


def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """Step -> checkpoint directory of a run (``checkpoints/step_00000100``)."""
    return {int(p.name.rsplit("_", 1)[1]): p for p in list_checkpoints(run_dir / "checkpoints")}


def load_at(run_dir: Path, checkpoint: Path | None):
    """The run with the weights of ``checkpoint`` (None: the run's own weights), verified first."""
    run = load(run_dir)
    if checkpoint is not None:
        verify_checkpoint(checkpoint)
        run.model.load_state_dict(load_tensors(checkpoint / WEIGHTS_FILE), strict=True)
    return run


def score_point(path: Path, run, task_set, step: int, source: str, lr: float | None = None) -> dict:
    """Score ``run`` on the held-out questions and keep the result in ``path`` (or read it back). ``lr`` is the
    finetuning peak learning rate the weights were trained with (None before finetuning)."""
    if path.is_file():
        return json.loads(path.read_text())
    scores = evaluate_tasks(scorer_for(run), task_set, progress=lambda t: print(f"  {path.stem}: {t}", flush=True))
    point = {"step": step, "weights": source, **({} if lr is None else {"lr": lr}),
             "tasks": {t: s.to_dict() for t, s in scores.items()}}
    point["tasks"]["average"] = pooled(scores.values()).to_dict()
    atomic_write_text(path, json.dumps(point, indent=1) + "\n")
    return point


def pooled(scores) -> TaskScore:
    """All questions of all tasks as one rate (every task has as many questions)."""
    scores = list(scores)
    n = sum(s.examples for s in scores)
    return TaskScore("average", n, sum(s.exact_match * s.examples for s in scores) / n,
                     sum(s.ranking_accuracy * s.examples for s in scores) / n)


def curve(args, name: str, init: Path, words: Path, split, task_set) -> None:
    points = args.results / "points"
    score_point(points / f"{name}-step00000.json", load(init), task_set, 0, str(init))
    out = args.runs / name
    resume = (out / "config.json").is_file()
    opts = FinetuneOptions(init=init, out=out, steps=args.steps, tasks=TASKS, examples=args.examples,
                           shots=args.shots, seed=args.seed, held_out_fraction=HELD_OUT_FRACTION,
                           split_seed=SPLIT_SEED, words=None if resume else words, resume=resume, lr=args.lr,
                           progress=not args.quiet,
                           train_overrides=[f"checkpoint_every={args.eval_every}", "keep_checkpoints=1000",
                                            "checkpoint_minutes=0"])
    print(f"char_evidence: finetuning {init} -> {out} ({args.steps} steps)", flush=True)
    finetune(opts)
    if load_split(out / WORDS_FILE)[0].held_out != split.held_out:
        raise SystemExit(f"char_evidence: {out} was finetuned with another word split than {words}")
    lr = read_run_config(out)["train"]["lr"]
    for step, ckpt in sorted(checkpoint_steps(out).items()):
        if step % args.eval_every == 0 or step == args.steps:
            score_point(points / f"{name}-step{step:05d}.json", load_at(out, ckpt), task_set, step, str(ckpt), lr)


def noise(args, name: str, init: Path) -> None:
    path = args.results / "points" / f"{name}-noise.json"
    if path.is_file():
        return
    data = PreparedData.open(Path(read_run_config(init)["data"]))
    split = data.split("val")
    per_text = max(2, 2 * -(-args.passages // max(len(split), 1)))  # the split holds few, long documents
    texts = passages((bytes(split[i]) for i in range(len(split))), max_passages=args.passages, per_text=per_text)
    print(f"char_evidence: {name} under noise, {len(texts)} passages", flush=True)
    results = evaluate_noise(scorer_for(load(init)), texts, seed=args.seed)
    atomic_write_text(path, json.dumps({"run": str(init), "passages": len(texts),
                                        "noise": [r.to_dict() for r in results]}, indent=1) + "\n")


# --- report ---------------------------------------------------------------------------------------------

INTERVALS = {"exact_match": "exact_match_interval", "ranking_accuracy": "ranking_interval"}  # as `TaskScore.to_dict`


def _pct(score: dict, metric: str) -> str:
    low, high = score[INTERVALS[metric]]
    return f"{100 * score[metric]:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def collect(results: Path, names: list[str]) -> dict:
    record: dict = {"models": {}}
    for name in names:
        points = sorted((json.loads(p.read_text()) for p in (results / "points").glob(f"{name}-step*.json")),
                        key=lambda p: p["step"])
        noise_path = results / "points" / f"{name}-noise.json"
        record["models"][name] = {"curve": points,
                                  "noise": json.loads(noise_path.read_text()) if noise_path.is_file() else None}
    return record


def noise_rows(record: dict, names: list[str]) -> list[dict]:
    """Per noise: each model's bits per byte, added bits (95% interval) and accuracy, and the first model's
    added bits minus the second's, paired over passages."""
    runs = {n: record["models"][n]["noise"] for n in names}
    if any(r is None for r in runs.values()):
        return []
    clean = {n: runs[n]["noise"][0]["passage_bpb"] for n in names}
    rows = []
    for i, result in enumerate(runs[names[0]]["noise"]):
        row: dict = {"noise": result["noise"], "passages": result["passages"]}
        added = {}
        for n in names:
            r = runs[n]["noise"][i]
            added[n] = [b - a for a, b in zip(clean[n], r["passage_bpb"])]
            row[n] = {"bpb": r["bits_per_byte"], "ranking_accuracy": r["ranking_accuracy"],
                      "ranking_interval": r["ranking_interval"],
                      "added": None if i == 0 else list(degradation(clean[n], r["passage_bpb"]))}
        if i > 0 and len(names) == 2:
            row["difference"] = list(degradation(added[names[1]], added[names[0]]))
        rows.append(row)
    return rows


PAIRING = "equal pretraining FLOPs"


def lr_rule(lr: float | None, models: int = 2) -> str:
    if lr is None:
        return "half of each model's pretraining peak" if models > 1 else "half of its pretraining peak"
    return f"peak {lr:g} for every model" if models > 1 else f"peak {lr:g}"


def finetuning_rates(curves: dict[str, list[dict]]) -> dict[str, float] | None:
    """Each model's finetuning peak as its finetuned points record it; None where a finetuned point does not
    record it or one model's points disagree."""
    rates = {}
    for name, curve in curves.items():
        found = {p.get("lr") for p in curve if p["step"] > 0}
        if len(found) != 1 or None in found:
            return None
        rates[name] = found.pop()
    return rates


def rates_text(rates: dict[str, float] | None, lr: float | None, models: int) -> str:
    """The learning-rate clause of the report: the rates the points record, else the rule the settings name."""
    if not rates:
        return lr_rule(lr, models)
    if len(set(rates.values())) == 1:
        return lr_rule(next(iter(rates.values())), len(rates))
    return ", ".join(f"{name} peak {rate:g}" for name, rate in rates.items())


def markdown(record: dict, names: list[str]) -> str:
    s = record["settings"]
    a, b = names
    scored = [n for n in names if record["models"][n]["curve"]] or names
    if len(scored) == len(names):
        lines = [f"{a} (`{s['runs'][a]}`) against {b} (`{s['runs'][b]}`), {s.get('pairing', PAIRING)}."]
    else:  # one model's finetuning, the other's in another results directory
        lines = [f"{scored[0]} (`{s['runs'][scored[0]]}`) alone."]
    alike = " alike" if len(scored) > 1 else ""
    curves = {n: record["models"][n]["curve"] for n in scored}
    rates = rates_text(finetuning_rates(curves), s.get("lr"), len(scored))
    lines += [f"Finetuned{alike} on {s['examples']:,} solved {s['shots']}-shot examples per task about train words "
              f"(learning rate: {rates}), {s['steps']} steps; scored on {s['questions']} "
              f"held-out questions per task. Accuracy in %, with 95% Wilson intervals.", ""]
    if all(curves.values()):
        finals = {n: curve[-1] for n, curve in curves.items()}
        at = ", ".join(f"{n}: step {finals[n]['step']}" for n in scored)
        lines += [f"**Exact match** (greedy answer) after finetuning ({at}); before finetuning, and ranking of the "
                  "candidates, as secondary columns.", "",
                  "| task | " + " | ".join(f"{n} {c}" for c in ("exact", "before", "rank") for n in scored) + " |",
                  "|---|" + "---|" * 3 * len(scored)]
        for task in [*s["tasks"], "average"]:
            cells = [_pct(finals[n]["tasks"][task], "exact_match") for n in scored]
            cells += [f"{100 * curves[n][0]['tasks'][task]['exact_match']:.1f}" for n in scored]
            cells += [_pct(finals[n]["tasks"][task], "ranking_accuracy") for n in scored]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines += ["", "Held-out exact match along finetuning (average over the tasks):", "",
                  "| step | " + " | ".join(scored) + " |", "|---|" + "---|" * len(scored)]
        by_step = {n: {p["step"]: p for p in curves[n]} for n in scored}
        for step in sorted(set().union(*by_step.values())):
            cells = [_pct(by_step[n][step]["tasks"]["average"], "exact_match") if step in by_step[n] else "-"
                     for n in scored]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    rows = record.get("noise", [])
    if rows:
        lines += ["", f"**Noisy input**: the pretrained models on {rows[0]['passages']} passages of the validation "
                  f"split. Bits per byte of the (noised) passages; *added* = bits per byte the noise adds, mean over "
                  f"passages [95% interval]; *{a} − {b}* = {a}'s added bits minus {b}'s, paired over passages; "
                  f"acc = the true ending chosen among {CHOICES} after a noised beginning (%).", "",
                  f"| noise | {a} bpb | {a} added | {b} bpb | {b} added | {a} − {b} | {a} acc | {b} acc |",
                  "|---|---|---|---|---|---|---|---|"]

        def interval(x):
            return "-" if x is None else f"{x[0]:+.3f} [{x[1]:+.3f}, {x[2]:+.3f}]"

        for r in rows:
            lines.append(f"| {r['noise']} | {r[a]['bpb']:.3f} | {interval(r[a]['added'])} | {r[b]['bpb']:.3f} | "
                         f"{interval(r[b]['added'])} | {interval(r.get('difference'))} | "
                         f"{_pct(r[a], 'ranking_accuracy')} | {_pct(r[b], 'ranking_accuracy')} |")
    return "\n".join(lines) + "\n"


def report(args, names: list[str], runs: dict[str, Path]) -> None:
    record = collect(args.results, names)
    scored = [n for n in names if record["models"][n]["curve"] or record["models"][n]["noise"]] or names
    record["settings"] = {"runs": {n: str(runs[n]) for n in scored}, "tasks": TASKS, "steps": args.steps,
                          "eval_every": args.eval_every, "examples": args.examples, "questions": args.questions,
                          "shots": args.shots, "seed": args.seed, "lr": args.lr, "passages": args.passages,
                          "pairing": args.pairing,
                          "held_out_fraction": HELD_OUT_FRACTION, "split_seed": SPLIT_SEED, "noises": list(NOISES)}
    record["noise"] = noise_rows(record, names)
    atomic_write_text(args.results / "char_tasks.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.results / "char_tasks.md", markdown(record, names))
    curves = {n: {t: [{"step": p["step"], **p["tasks"][t]} for p in record["models"][n]["curve"]]
                  for t in [*TASKS, "average"]} for n in names}
    if all(record["models"][n]["curve"] for n in names):
        plot_task_curves(curves, args.results / "curves.png")
    print((args.results / "char_tasks.md").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blt", type=Path, default=SCALING / "blt-lr0.016-seed0" / "blt-p8")
    p.add_argument("--bpe", type=Path, default=SCALING / "bpe-lr0.004-seed0" / "bpe")
    p.add_argument("--runs", type=Path, default=Path("runs/char_evidence"))
    p.add_argument("--results", type=Path, default=Path("results/char_tasks"))
    p.add_argument("--steps", type=int, default=600, help="finetuning steps (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=100, help="score a checkpoint this often (default: %(default)s)")
    p.add_argument("--examples", type=int, default=4000, help="solved finetuning examples per task")
    p.add_argument("--questions", type=int, default=200, help="held-out questions per task")
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--passages", type=int, default=200, help="passages for the noise evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None,
                   help="finetuning peak learning rate for every model "
                        "(default: half of each model's pretraining peak)")
    p.add_argument("--phases", nargs="+", choices=["noise", "curve"], default=["noise", "curve"])
    p.add_argument("--models", nargs="+", choices=["blt", "bpe"], default=["blt", "bpe"],
                   help="run the phases for these models only (two processes can share the work; the report "
                        "always covers both)")
    p.add_argument("--pairing", default=PAIRING,
                   help="what the two models have in common, for the report's first line (default: %(default)s)")
    p.add_argument("--report", action="store_true", help="only rewrite the results from the kept points")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    runs = {"blt": args.blt, "bpe": args.bpe}
    names = list(runs)
    (args.results / "points").mkdir(parents=True, exist_ok=True)
    if not args.report:
        args.runs.mkdir(parents=True, exist_ok=True)
        words = args.runs / "words.txt"
        if not words.is_file():
            data = read_run_config(runs[args.models[0]])["data"]
            atomic_write_text(words, "\n".join(words_from_data(data)) + "\n")
        split = split_words(words_from_file(words), HELD_OUT_FRACTION, SPLIT_SEED)
        task_set = make_task_set(split, TASKS, args.questions, args.shots, args.seed)
        if "noise" in args.phases:
            for name in args.models:
                noise(args, name, runs[name])
        if "curve" in args.phases:
            for name in args.models:
                curve(args, name, runs[name], words, split, task_set)
    report(args, names, runs)
    return 0


if __name__ == "__main__":  # Ctrl-C: training saved a checkpoint first
    sys.exit(run_reporting_errors("char_evidence", main, interrupted=STOPPED))
