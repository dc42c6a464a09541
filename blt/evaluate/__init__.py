"""Evaluation: validation bits-per-byte and patch statistics of a trained run; character-level (CUTE-style)
tasks and robustness to noisy input, through one scoring interface for every kind of run."""

from blt.evaluate.bpb import EvalResult, evaluate_run
from blt.evaluate.char_tasks import (
    TASKS,
    TaskExample,
    TaskScore,
    WordSplit,
    evaluate_tasks,
    make_examples,
    make_task_set,
    split_words,
)
from blt.evaluate.noise import NOISES, NoiseScore, apply_noise, evaluate_noise
from blt.evaluate.scoring import Scorer, scorer_for

__all__ = [
    "NOISES", "TASKS", "EvalResult", "NoiseScore", "Scorer", "TaskExample", "TaskScore", "WordSplit", "apply_noise",
    "evaluate_noise", "evaluate_run", "evaluate_tasks", "make_examples", "make_task_set", "scorer_for", "split_words",
]
