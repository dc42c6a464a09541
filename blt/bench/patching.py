"""The ``patching`` case: entropy-model patching (entropies, then patch boundaries) in MB/s in fp32 and
bf16, for one row per call and for many, as achieved FLOP/s with the entropy model's forward FLOPs per byte;
batched results also say how many times faster than batch 1 they are."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from blt.bench.common import CPU, peak_fractions, random_bytes, throughput, timed_calls
from blt.config import EntropyModelConfig
from blt.flops import entropy_model_flops
from blt.patching.calibration import mean_patch_size
from blt.patching.entropy_model import EntropyModel
from blt.patching.patchers import patch_lengths_from_entropies

if TYPE_CHECKING:
    from blt.bench.suite import Suite
from blt.train import PRECISIONS


@dataclass(frozen=True)
class PatchingCase:
    """Entropy-model patching to time: a preset, the rows and bytes per call, and how many calls to run."""

    name: str  # label in the results (the entropy-model preset name for presets)
    config: EntropyModelConfig
    batch_size: int  # rows per `EntropyModel.entropies` call
    seq_len: int  # bytes per row
    warmup: int  # untimed calls first
    iterations: int  # timed calls; the median is reported
    mean_patch_size: float = 4.5  # the threshold leaves about one byte in this many above it

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_len < 3 or self.warmup < 0 or self.iterations < 1:
            raise ValueError(f"patching case {self.name!r} needs batch_size >= 1, seq_len >= 3, warmup >= 0 and "
                             f"iterations >= 1; got {self.batch_size}, {self.seq_len}, {self.warmup}, {self.iterations}")
        if not self.mean_patch_size > 1:
            raise ValueError(f"patching case {self.name!r}: mean_patch_size must be > 1, got {self.mean_patch_size}")


def patch_bytes(model: EntropyModel, ids: torch.Tensor, threshold: float, precision: str) -> torch.Tensor:
    """The patching step timed by the ``patching`` case: entropies of all rows in one call, then patch
    boundaries with a global threshold. ids (B, T) -> patch lengths (B, P)."""
    entropies = model.entropies(ids, batch_size=ids.shape[0], dtype=PRECISIONS[precision])
    return patch_lengths_from_entropies(entropies, threshold)


def bench_patching(case: PatchingCase, precisions: tuple[str, ...], seed: int = 0,
                   device: torch.device = CPU) -> list[dict[str, Any]]:
    """Time one patching case under each precision (same weights and bytes for all).

    The model has random weights (speed does not depend on them). The threshold is the quantile of the
    case's own float32 entropies that leaves one byte in ``mean_patch_size`` above it (measured untimed),
    so the boundary step handles a realistic number of patches. Each result holds the timed call seconds,
    bytes/s of the median call, the entropy model's forward FLOPs per byte (`blt.flops`: the useful work,
    not the masked-out scores of chunked attention) and the achieved FLOP/s.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = random_bytes(case.batch_size, case.seq_len, gen).to(device)
    model = EntropyModel(case.config).init_weights(seed).eval().to(device)
    entropies = model.entropies(ids, batch_size=case.batch_size)
    threshold = float(torch.quantile(entropies[:, 1:-1].flatten(), 1 - 1 / case.mean_patch_size))
    patch_size = mean_patch_size(patch_lengths_from_entropies(entropies, threshold))
    num_bytes = case.batch_size * case.seq_len
    flops_per_byte = entropy_model_flops(case.config, seq_len=case.seq_len).forward

    results = []
    for precision in precisions:
        times = timed_calls(functools.partial(patch_bytes, model, ids, threshold, precision), case.warmup, case.iterations,
                            device)
        results.append({
            "case": case.name,
            "precision": precision,
            "batch_size": case.batch_size,
            "seq_len": case.seq_len,
            "chunk_len": model.default_chunk_len(case.batch_size, PRECISIONS[precision]),
            "threshold": threshold,
            "mean_patch_size": patch_size,
            "warmup": case.warmup,
            "forward_flops_per_byte": flops_per_byte,
            **throughput(times, num_bytes, flops_per_byte),
        })
    return results


def format_patching_result(result: dict[str, Any]) -> str:
    """One line: case, precision, shape, MB/s, GFLOP/s, the speedup over batch 1 and, once known, the peaks."""
    line = (f"patching {result['case']:<6} {result['precision']:<4} {result['batch_size']}x{result['seq_len']}: "
            f"{result['bytes_per_s'] / 1e6:7.4f} MB/s, {result['flops_per_s'] / 1e9:6.2f} GFLOP/s")
    if "speedup_over_batch_1" in result:
        line += f", {result['speedup_over_batch_1']:.2f}x batch 1"
    return line + peak_fractions(result)


def run_patching_case(suite: Suite, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The ``patching`` case: every patching case of the suite under every precision of the suite. A batched
    result gets ``speedup_over_batch_1``: its bytes/s over that of the suite's batch-1 case of the same
    model, row length and precision, when there is one."""
    results = []
    for case in suite.patching_cases:
        for result in bench_patching(case, suite.precisions, device=torch.device(suite.device)):
            log(format_patching_result(result))
            results.append(result)
    single = {(r["case"], r["seq_len"], r["precision"]): r["bytes_per_s"] for r in results if r["batch_size"] == 1}
    for result in results:
        key = (result["case"], result["seq_len"], result["precision"])
        if result["batch_size"] > 1 and key in single:
            result["speedup_over_batch_1"] = result["bytes_per_s"] / single[key]
    return results
