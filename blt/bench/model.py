"""The ``model`` case: a BLT training step (forward + backward, no optimizer) in fp32 and under bf16
autocast, with a fixed random causal patching; bytes/s become achieved FLOP/s with the training FLOPs per
byte of `blt.flops`, and those a fraction of the matmul peak measured in the same run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from blt.bench.common import (
    CPU,
    peak_fractions,
    random_bytes,
    random_patch_lengths,
    throughput,
    timed_calls,
    training_step,
)
from blt.config import BLTConfig
from blt.flops import blt_flops
from blt.model.byte_latent import ByteLatentTransformer

if TYPE_CHECKING:
    from blt.bench.suite import Suite


@dataclass(frozen=True)
class ModelCase:
    """One model to time: a config, a batch shape and how many steps to run."""

    name: str  # label in the results (the preset name for presets)
    config: BLTConfig
    batch_size: int
    seq_len: int  # bytes per row
    warmup: int  # untimed steps first
    iterations: int  # timed steps; the median is reported
    mean_patch_size: float = 4.5  # of the random patching

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_len < 2 or self.warmup < 0 or self.iterations < 1:
            raise ValueError(f"model case {self.name!r} needs batch_size >= 1, seq_len >= 2, warmup >= 0 and "
                             f"iterations >= 1; got {self.batch_size}, {self.seq_len}, {self.warmup}, {self.iterations}")
        if not self.mean_patch_size >= 1:
            raise ValueError(f"model case {self.name!r}: mean_patch_size must be >= 1, got {self.mean_patch_size}")


def time_training_steps(
    model: ByteLatentTransformer, ids: torch.Tensor, patch_lengths: torch.Tensor, precision: str, warmup: int, iterations: int
) -> list[float]:
    """Seconds of each timed forward + backward step (next-byte loss; gradients dropped after each step)."""
    model.train()
    return timed_calls(lambda: training_step(model, lambda: model(ids, patch_lengths), ids, precision), warmup, iterations,
                       ids.device)


def bench_model(case: ModelCase, precisions: tuple[str, ...], seed: int = 0,
                device: torch.device = CPU) -> list[dict[str, Any]]:
    """Time one model case under each precision (same weights, bytes and patches for all).

    Each result holds the timed step seconds, bytes/s of the median step, the training FLOPs per byte at
    the patching's actual mean patch size, and the achieved FLOP/s.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = random_bytes(case.batch_size, case.seq_len, gen)
    patch_lengths = random_patch_lengths(case.batch_size, case.seq_len, case.mean_patch_size, gen)
    model = ByteLatentTransformer(case.config).init_weights(seed).to(device)
    num_bytes = case.batch_size * case.seq_len
    patch_size = num_bytes / int((patch_lengths > 0).sum())  # bytes per global step actually run
    flops_per_byte = blt_flops(case.config, patch_size=patch_size, seq_len=case.seq_len).training

    results = []
    for precision in precisions:
        times = time_training_steps(model, ids.to(device), patch_lengths.to(device), precision, case.warmup,
                                    case.iterations)
        results.append({
            "case": case.name,
            "precision": precision,
            "batch_size": case.batch_size,
            "seq_len": case.seq_len,
            "mean_patch_size": patch_size,
            "warmup": case.warmup,
            "training_flops_per_byte": flops_per_byte,
            **throughput(times, num_bytes, flops_per_byte),
        })
    return results


def format_model_result(result: dict[str, Any]) -> str:
    """One line: case, precision, shape, bytes/s, GFLOP/s and, once known, the fraction of each peak."""
    line = (f"model {result['case']:<6} {result['precision']:<4} {result['batch_size']}x{result['seq_len']}: "
            f"{result['bytes_per_s']:>9,.0f} bytes/s, {result['flops_per_s'] / 1e9:6.2f} GFLOP/s")
    return line + peak_fractions(result)


def run_model_case(suite: Suite, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The ``model`` case: every model of the suite under every precision of the suite."""
    results = []
    for case in suite.model_cases:
        for result in bench_model(case, suite.precisions, device=torch.device(suite.device)):
            log(format_model_result(result))
            results.append(result)
    return results
