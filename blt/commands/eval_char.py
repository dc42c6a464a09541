"""`blt eval-char RUN [--baseline RUN]`: CUTE-style character-level tasks and robustness to noisy input.

Prints a table per task (exact match of greedy answers and candidate-ranking accuracy, for the run and the
baseline), optionally one per noise type (`--noise`), and writes both as JSON and a bar chart (by default
``RUN/eval_char.json`` and ``RUN/eval_char.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blt.commands._paths import check_output_file
from blt.errors import BLTError
from blt.evaluate.bpb import recorded_data
from blt.evaluate.char_tasks import (
    MAX_EXAMPLES,
    MAX_SHOTS,
    TASKS,
    TaskScore,
    WordSplit,
    default_words,
    evaluate_tasks,
    load_split,
    make_task_set,
    split_words,
)
from blt.evaluate.noise import CHOICES, NOISES, PASSAGE_BYTES, degradation, evaluate_noise, passages
from blt.evaluate.scoring import scorer_for
from blt.fileio import atomic_write_text
from blt.pipelines.finetune import WORDS_FILE
from blt.run import load
from blt.viz.plots import plot_char_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory (BLT, entropy model or token-model baseline)")
    p.add_argument("--baseline", type=Path, help="a second run to compare with (e.g. the BPE baseline at equal FLOPs)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), metavar="TASK",
                   help=f"tasks to run (default: all: {', '.join(TASKS)})")
    p.add_argument("--no-tasks", action="store_true", help="skip the tasks (with --noise: only the noise evaluation)")
    p.add_argument("--examples", type=int, default=50, help="held-out examples per task (default: %(default)s)")
    p.add_argument("--shots", type=int, default=3, help="solved examples before each question (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the examples and the noise (default: %(default)s)")
    p.add_argument("--words", type=Path, help="word list, one a line (default: the run's saved split from "
                   "`blt finetune`, else /usr/share/dict/words, else the most frequent words of the run's data)")
    p.add_argument("--held-out-fraction", type=float, default=0.2, help="words held out from finetuning (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0, help="seeds the word split (default: %(default)s)")
    p.add_argument("--no-greedy", action="store_true", help="ranking only, no greedy generation (faster)")
    p.add_argument("--noise", action="store_true", help=f"also evaluate under each noise: {', '.join(NOISES)}")
    p.add_argument("--noise-text", type=Path, nargs="+", metavar="FILE",
                   help="texts to noise (default: the validation split of the run's data)")
    p.add_argument("--passages", type=int, default=48, help="passages for the noise evaluation (default: %(default)s)")
    p.add_argument("--json", type=Path, help="where to write the results (default: RUN/eval_char.json)")
    p.add_argument("--png", type=Path, help="where to draw the bar chart (default: RUN/eval_char.png)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def word_split(args: argparse.Namespace, run) -> tuple[WordSplit, str]:
    saved = Path(args.run) / WORDS_FILE
    if args.words is None and saved.is_file():
        return load_split(saved)
    words, source = default_words(recorded_data(run.info, args.run), args.words)
    return split_words(words, args.held_out_fraction, args.split_seed), source


def noise_texts(args: argparse.Namespace, run, limit: int) -> tuple[list[bytes], str]:
    if args.noise_text:
        return [Path(f).read_bytes() for f in args.noise_text], ", ".join(str(f) for f in args.noise_text)
    finetune = run.info.get("finetune")
    init_data = finetune.get("init_data") if isinstance(finetune, dict) else None
    data_dir = init_data if isinstance(init_data, str) else recorded_data(run.info, args.run)
    if data_dir is None:
        raise BLTError(f"{args.run} does not record its data; pass --noise-text FILE")
    from blt.data import PreparedData

    split = PreparedData.open(Path(data_dir)).split("val")
    return [bytes(split[i]) for i in range(min(len(split), limit))], f"the validation split of {data_dir}"


def labels(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pct_interval(x: float | None, interval: list[float] | None) -> str:
    """``12.5 [8.6-17.8]``: a rate and its 95% interval, in percent."""
    if x is None:
        return "-"
    return _pct(x) + (f" [{100 * interval[0]:.1f}-{100 * interval[1]:.1f}]" if interval else "")


def task_table(report: dict) -> str:
    """Exact match (greedy, the headline) and ranking accuracy per task, in percent with 95% Wilson intervals."""
    names = list(report["models"])
    rows = [["task", "n", "chance"] + [f"{n} {m}" for n in names for m in ("exact", "rank")]]
    tasks = report["settings"]["tasks"]
    for task in tasks + ["average"]:
        first = report["models"][names[0]]["tasks"][task]
        row = [task, str(first.get("examples", "-")), _pct(report["chance"][task])]
        for n in names:
            score = report["models"][n]["tasks"][task]
            row += [_pct_interval(score["exact_match"], score.get("exact_match_interval")),
                    _pct_interval(score["ranking_accuracy"], score.get("ranking_interval"))]
        rows.append(row)
    return _format(rows)


def noise_table(report: dict) -> str:
    """Per noise and model: bits per byte, what the noise adds to them (mean over passages, 95% interval) and
    the ending-choice accuracy (95% Wilson interval, in percent)."""
    names = list(report["models"])
    rows = [["noise"] + [f"{n} {m}" for n in names for m in ("bpb", "added", "acc")]]
    clean = {n: report["models"][n]["noise"][0] for n in names}
    for i, result in enumerate(report["models"][names[0]]["noise"]):
        row = [result["noise"]]
        for n in names:
            r = report["models"][n]["noise"][i]
            added = "-"
            if i > 0 and len(r.get("passage_bpb", [])) >= 2:
                mean, low, high = degradation(clean[n]["passage_bpb"], r["passage_bpb"])
                added = f"{mean:+.3f} [{low:+.3f},{high:+.3f}]"
            row += [f"{r['bits_per_byte']:.3f}", added, _pct_interval(r["ranking_accuracy"], r.get("ranking_interval"))]
        rows.append(row)
    return _format(rows)


def _format(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def run(args: argparse.Namespace) -> int:
    if not (1 <= args.examples <= MAX_EXAMPLES and 0 <= args.shots <= MAX_SHOTS and args.passages >= 4):
        raise BLTError(f"--examples must be in [1, {MAX_EXAMPLES:,}], --shots in [0, {MAX_SHOTS}] and --passages >= 4")
    if args.no_tasks and not args.noise:
        raise BLTError("--no-tasks leaves nothing to do; add --noise")
    check_output_file(args.json, "--json")
    check_output_file(args.png, "--png")
    say = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    paths = [args.run] + ([args.baseline] if args.baseline else [])
    runs = [load(p) for p in paths]
    tasks = [] if args.no_tasks else list(dict.fromkeys(args.tasks))
    settings = {"tasks": tasks, "examples": args.examples, "shots": args.shots, "seed": args.seed,
                "no_greedy": args.no_greedy, "noise": args.noise}
    report: dict = {"settings": settings, "models": {}}
    task_set = {}
    if tasks:
        split, source = word_split(args, runs[0])
        task_set = make_task_set(split, tasks, args.examples, args.shots, args.seed)
        settings.update(words=source, train_words=len(split.train), held_out_words=len(split.held_out),
                        held_out_fraction=split.held_out_fraction, split_seed=split.seed)
        chance = {t: sum(1 / len(e.candidates) for e in exs) / len(exs) for t, exs in task_set.items()}
        report["chance"] = {**chance, "average": sum(chance.values()) / len(chance)}
    texts = []
    if args.noise:
        raw, text_source = noise_texts(args, runs[0], limit=4 * args.passages)
        texts = passages(raw, max_passages=args.passages)
        if not texts:
            raise BLTError(f"{text_source} holds no passage of prose or code long enough for the noise evaluation "
                           f"(about {PASSAGE_BYTES} bytes of at least 8 words); pass longer --noise-text files")
        settings.update(noise_texts=text_source, passages=len(texts))
    for name, path, run_ in zip(labels(paths), paths, runs):
        scorer = scorer_for(run_)
        entry: dict = {"run": str(path), "kind": run_.kind}
        start = time.perf_counter()
        if task_set:
            scores = evaluate_tasks(scorer, task_set, greedy=not args.no_greedy,
                                    progress=lambda task, name=name: say(f"{name}: {task}"))
            entry["tasks"] = {t: s.to_dict() for t, s in scores.items()}
            pooled = TaskScore("average", sum(s.examples for s in scores.values()),
                               None if args.no_greedy else sum(s.exact_match * s.examples for s in scores.values())
                               / sum(s.examples for s in scores.values()),
                               sum(s.ranking_accuracy * s.examples for s in scores.values())
                               / sum(s.examples for s in scores.values()))
            entry["tasks"]["average"] = pooled.to_dict()  # over all questions (every task has as many)
        if texts:
            results = evaluate_noise(scorer, texts, seed=args.seed, progress=lambda noise, name=name: say(f"{name}: noise {noise}"))
            entry["noise"] = [r.to_dict() for r in results]
        entry["seconds"] = round(time.perf_counter() - start, 1)
        report["models"][name] = entry

    for name, entry in report["models"].items():
        print(f"{name}: {entry['run']} ({entry['kind']})")
    if tasks:
        print(f"\nCharacter-level tasks: {args.examples} held-out examples each, {args.shots} shots; "
              f"accuracy in %, exact = greedy answer, rank = most likely candidate; words: {settings['words']}")
        print(task_table(report))
    if texts:
        print(f"\nNoise: {len(texts)} passages of {settings['noise_texts']}; bpb of the noised passages, added = "
              f"bits per byte the noise adds (mean over passages, 95% interval), acc = true ending chosen among "
              f"{CHOICES} after a noised beginning (%, chance {100 / CHOICES:.0f}, 95% interval)")
        print(noise_table(report))
    json_path = args.json or Path(args.run) / "eval_char.json"
    png_path = args.png or Path(args.run) / "eval_char.png"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    plot_char_report(report, png_path, CHOICES)
    print(f"\nwrote {json_path} and {png_path}")
    return 0
