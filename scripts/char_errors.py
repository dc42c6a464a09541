"""Why answers to the character tasks are wrong: finetuned models' greedy answers, sorted into kinds.

    python scripts/char_errors.py --model blt=runs/char_long_blt_lr0.016/blt \
        --model bpe=runs/char_long_bpe_lr0.002/bpe --words runs/char_long_bpe_lr0.002/words.txt

The held-out questions are those `scripts/char_evidence.py` scores (the same word split, shots, seed and
number of questions per task), asked of each ``--model NAME=RUN`` (a finetuned run directory: its final
weights). Each greedy answer (up to the first newline, as exact match reads it, here never cut short) is
one of: *right*; *a wrong candidate*, one of the wrong answers of the question's own kind that ranking
offers (the other number, a misspelling of the word); or *something else*. For comparing numbers the
questions are also split by the form of their pair (`number_form`): a shared integer part with decimal
parts of different lengths (9.11 vs 9.9), integer parts of different lengths, integers of different
lengths, and numbers one digit apart. Writes ``errors.json`` (every question with its answer) and
``errors.md`` to ``--out``; shares are % with 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blt.cli import run_reporting_errors
from blt.evaluate.char_tasks import (
    EVIDENCE_HELD_OUT_FRACTION,
    EVIDENCE_SPLIT_SEED,
    EVIDENCE_TASKS,
    NUMBER_FORMS,
    greedy_answer,
    make_task_set,
    split_words,
    wilson_interval,
    words_from_file,
)
from blt.evaluate.scoring import scorer_for
from blt.fileio import atomic_write_text
from blt.run import load

TASKS = EVIDENCE_TASKS
HELD_OUT_FRACTION, SPLIT_SEED = EVIDENCE_HELD_OUT_FRACTION, EVIDENCE_SPLIT_SEED
KINDS = ("right", "wrong candidate", "something else")
QUESTION_PREFIX, QUESTION_SUFFIX = "Which is bigger, ", "?"


def number_form(a: str, b: str) -> str:
    """The form of a number pair (`blt.evaluate.char_tasks.NUMBER_FORMS`), read off the two numbers. A few
    pairs one apart, drawn as one digit apart where adding 1 carries (9.7 and 10.7, 99 and 100), read as
    integer parts or integers of different lengths."""
    (ia, _, da), (ib, _, db) = a.partition("."), b.partition(".")
    if not da and not db:
        return "integers" if len(ia) != len(ib) else "near_digit"
    if ia == ib and len(da) != len(db):
        return "decimal_trap"
    return "integer_part" if len(ia) != len(ib) else "near_digit"


def question_numbers(prompt: str) -> tuple[str, str]:
    """The two numbers of a number question (the prompt's last line: ``Which is bigger, A or B?``)."""
    last = prompt.rsplit("\n", 1)[-1]
    a, b = last.removeprefix(QUESTION_PREFIX).removesuffix(QUESTION_SUFFIX).split(" or ")
    return a, b


def kind_of(output: str, answer: str, candidates: tuple[str, ...]) -> str:
    if output == answer:
        return "right"
    return "wrong candidate" if output in candidates else "something else"


def answers(run_dir: Path, task_set: dict) -> dict[str, list[dict]]:
    scorer = scorer_for(load(run_dir))
    out: dict[str, list[dict]] = {}
    for task, examples in task_set.items():
        print(f"char_errors: {run_dir}: {task}", flush=True)
        rows = []
        for e in examples:
            limit = max(len(c.encode()) for c in e.candidates) + 8  # as exact match allows
            output = greedy_answer(scorer, e.prompt, limit)
            row = {"question": e.prompt.rsplit("\n", 1)[-1], "answer": e.answer, "output": output,
                   "kind": kind_of(output, e.answer, e.candidates)}
            if task == "compare_numbers":
                row["form"] = number_form(*question_numbers(e.prompt))
            rows.append(row)
        out[task] = rows
    return out


def _share(hits: int, n: int) -> str:
    if not n:
        return "-"
    low, high = wilson_interval(hits, n)
    return f"{100 * hits / n:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def markdown(record: dict) -> str:
    models = list(record["models"])
    lines = ["Greedy answers of each finetuned model to the held-out questions, by kind (% of the task's "
             "questions, 95% Wilson interval).", "",
             "| task | model | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for task in TASKS:
        for m in models:
            rows = record["models"][m]["answers"][task]
            cells = [_share(sum(r["kind"] == k for r in rows), len(rows)) for k in KINDS]
            lines.append(f"| {task} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "Comparing numbers, by the form of the pair: right answers (%), and how many of the wrong "
              "ones are the other number.", "",
              "| form | questions | " + " | ".join(f"{m} right | {m}: wrong ones that are the other number"
                                                   for m in models) + " |",
              "|---|---|" + "---|---|" * len(models)]
    for form in NUMBER_FORMS:
        per = {m: [r for r in record["models"][m]["answers"]["compare_numbers"] if r["form"] == form] for m in models}
        n = len(per[models[0]])
        cells = []
        for m in models:
            wrong = [r for r in per[m] if r["kind"] != "right"]
            other = sum(r["kind"] == "wrong candidate" for r in wrong)
            cells += [_share(sum(r["kind"] == "right" for r in per[m]), n), f"{other} of {len(wrong)}"]
        lines.append(f"| {form} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "The first answers of each kind *something else* (question → answer, what the model wrote):", ""]
    for m in models:
        for task in TASKS:
            odd = [r for r in record["models"][m]["answers"][task] if r["kind"] == "something else"][:3]
            if odd:
                shown = "; ".join(f"`{r['question']}` → `{r['answer']}`, wrote `{r['output']}`" for r in odd)
                lines.append(f"- {m}, {task}: {shown}")
    return "\n".join(lines) + "\n"


def parse_model(text: str) -> tuple[str, Path]:
    name, sep, run = text.partition("=")
    if not sep or not name or not run:
        raise argparse.ArgumentTypeError(f"expected NAME=RUN (e.g. blt=runs/char_long/blt), got {text!r}")
    return name, Path(run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=parse_model, action="append", required=True, metavar="NAME=RUN",
                   help="a finetuned run directory (repeatable)")
    p.add_argument("--words", type=Path, required=True, help="the words.txt of the finetuning runs")
    p.add_argument("--questions", type=int, default=200, help="held-out questions per task")
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/char_tasks_errors"))
    args = p.parse_args(argv)
    split = split_words(words_from_file(args.words), HELD_OUT_FRACTION, SPLIT_SEED)
    task_set = make_task_set(split, TASKS, args.questions, args.shots, args.seed)
    record = {"settings": {"models": {n: str(r) for n, r in args.model}, "words": str(args.words),
                           "questions": args.questions, "shots": args.shots, "seed": args.seed, "tasks": TASKS},
              "models": {name: {"run": str(run), "answers": answers(run, task_set)} for name, run in args.model}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "errors.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.out / "errors.md", markdown(record))
    print((args.out / "errors.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors("char_errors", main))
