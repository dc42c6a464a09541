"""Evaluation: validation bits-per-byte and patch statistics of a trained run."""

from blt.evaluate.bpb import EvalResult, evaluate_run

__all__ = ["EvalResult", "evaluate_run"]
