"""Benchmarks behind `blt bench`: every speed is reported next to a baseline measured in the same run.

The ``model`` case times a BLT training step (forward + backward, no optimizer) on CPU in fp32 and under
bf16 autocast, with a fixed random causal patching, and turns bytes/s into achieved FLOP/s with the
training FLOPs per byte of `blt.flops`. The baseline is the matmul peak of this machine, measured in the
same run: the best FLOP/s of large square matmuls in fp32 and in bf16. Results are plain dicts, ready
for JSON; a new case is an entry of `CASES`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from blt.config import BLTConfig
from blt.errors import BLTError
from blt.flops import blt_flops
from blt.model.byte_latent import ByteLatentTransformer, next_byte_loss
from blt.patching.patchers import lengths_from_start_mask
from blt.tokenizer import BOS_ID, OFFSET

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


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


@dataclass(frozen=True)
class Suite:
    """A named set of cases, run under each precision, with the settings of the matmul-peak baseline."""

    name: str
    model_cases: tuple[ModelCase, ...]
    precisions: tuple[str, ...] = ("fp32", "bf16")
    peak_size: int = 2048  # side of the square matmuls that measure the peak
    peak_repeats: int = 5  # timed matmuls per dtype; the best counts

    def __post_init__(self):
        unknown = sorted(set(self.precisions) - set(PRECISIONS))
        if unknown:
            raise ValueError(f"suite {self.name!r}: unknown precision(s) {unknown}; choose from {sorted(PRECISIONS)}")


def _quick_suite() -> Suite:
    """About a minute on 2 cores."""
    return Suite("quick", (
        ModelCase("tiny", BLTConfig.preset("tiny"), batch_size=4, seq_len=512, warmup=2, iterations=5),
        ModelCase("small", BLTConfig.preset("small"), batch_size=4, seq_len=1024, warmup=1, iterations=3),
    ))


def _full_suite() -> Suite:
    """Larger batches, more iterations and a 4096-wide matmul for the peak: several minutes on 2 cores."""
    return Suite("full", (
        ModelCase("tiny", BLTConfig.preset("tiny"), batch_size=8, seq_len=512, warmup=3, iterations=10),
        ModelCase("small", BLTConfig.preset("small"), batch_size=8, seq_len=1024, warmup=2, iterations=8),
    ), peak_size=4096, peak_repeats=5)


SUITES: dict[str, Callable[[], Suite]] = {"quick": _quick_suite, "full": _full_suite}


def suite_named(name: str) -> Suite:
    """The suite of `SUITES` called ``name``; a `BLTError` naming the choices otherwise."""
    if name not in SUITES:
        raise BLTError(f"unknown benchmark suite {name!r}; choose one of {sorted(SUITES)}")
    return SUITES[name]()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` intra-op threads (None = leave as is); yields the count in use."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise BLTError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, threads, versions, and the GPU if there is one."""
    return {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5, seed: int = 0) -> float:
    """Best achieved FLOP/s of a ``size × size`` by ``size × size`` matmul in ``dtype`` on CPU (one warmup first)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def random_patch_lengths(batch_size: int, seq_len: int, mean_patch_size: float, gen: torch.Generator) -> torch.Tensor:
    """A causal-looking random patching: BOS alone, byte 1 starts a patch, then each byte starts one with a
    fixed probability chosen so that a row holds ``seq_len / mean_patch_size`` patches in expectation.
    -> (B, P) long, right-padded with 0."""
    rest = max(seq_len - 2, 1)
    start_probability = min(max((seq_len / mean_patch_size - 2) / rest, 0.0), 1.0)
    starts = torch.rand(batch_size, seq_len, generator=gen) < start_probability
    starts[:, :2] = True
    return lengths_from_start_mask(starts)


def time_training_steps(
    model: ByteLatentTransformer, ids: torch.Tensor, patch_lengths: torch.Tensor, precision: str, warmup: int, iterations: int
) -> list[float]:
    """Seconds of each timed forward + backward step (next-byte loss; gradients dropped after each step)."""
    autocast_dtype = PRECISIONS[precision]
    model.train()
    times = []
    for step in range(warmup + iterations):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype != torch.float32):
            loss = next_byte_loss(model(ids, patch_lengths), ids)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def bench_model(case: ModelCase, precisions: tuple[str, ...], seed: int = 0) -> list[dict[str, Any]]:
    """Time one model case under each precision (same weights, bytes and patches for all).

    Each result holds the timed step seconds, bytes/s of the median step, the training FLOPs per byte at
    the patching's actual mean patch size, and the achieved FLOP/s.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(OFFSET, 256 + OFFSET, (case.batch_size, case.seq_len), generator=gen)
    ids[:, 0] = BOS_ID
    patch_lengths = random_patch_lengths(case.batch_size, case.seq_len, case.mean_patch_size, gen)
    model = ByteLatentTransformer(case.config).init_weights(seed)
    num_bytes = case.batch_size * case.seq_len
    patch_size = num_bytes / int((patch_lengths > 0).sum())  # bytes per global step actually run
    flops_per_byte = blt_flops(case.config, patch_size=patch_size, seq_len=case.seq_len).training

    results = []
    for precision in precisions:
        times = time_training_steps(model, ids, patch_lengths, precision, case.warmup, case.iterations)
        median = statistics.median(times)
        results.append({
            "case": case.name,
            "precision": precision,
            "batch_size": case.batch_size,
            "seq_len": case.seq_len,
            "mean_patch_size": patch_size,
            "warmup": case.warmup,
            "step_seconds": times,
            "step_seconds_median": median,
            "bytes_per_s": num_bytes / median,
            "training_flops_per_byte": flops_per_byte,
            "flops_per_s": flops_per_byte * num_bytes / median,
        })
    return results


def format_model_result(result: dict[str, Any]) -> str:
    """One line: case, precision, shape, bytes/s, GFLOP/s and, once known, the fraction of each peak."""
    line = (f"model {result['case']:<6} {result['precision']:<4} {result['batch_size']}x{result['seq_len']}: "
            f"{result['bytes_per_s']:>9,.0f} bytes/s, {result['flops_per_s'] / 1e9:6.2f} GFLOP/s")
    if "fraction_of_peak" in result:
        line += " (" + ", ".join(f"{100 * f:.1f}% of {name} peak" for name, f in result["fraction_of_peak"].items()) + ")"
    return line


def run_model_case(suite: Suite, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The ``model`` case: every model of the suite under every precision of the suite."""
    results = []
    for case in suite.model_cases:
        for result in bench_model(case, suite.precisions):
            log(format_model_result(result))
            results.append(result)
    return results


@dataclass(frozen=True)
class BenchCase:
    """A benchmark: ``run(suite, log)`` returns its results; those with ``flops_per_s`` get fractions of the peaks."""

    run: Callable[[Suite, Callable[[str], None]], list[dict[str, Any]]]
    describe: Callable[[dict[str, Any]], str]  # one line per result


CASES: dict[str, BenchCase] = {"model": BenchCase(run_model_case, format_model_result)}


def measure_peaks(suite: Suite) -> dict[str, float]:
    """Matmul peak FLOP/s per precision at the suite's size."""
    return {name: matmul_peak(dtype, suite.peak_size, suite.peak_repeats) for name, dtype in PRECISIONS.items()}


def run_benchmarks(
    suite: Suite, cases: list[str] | None = None, threads: int | None = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the named cases (default: all of `CASES`) of a suite between two measurements of the matmul peaks.

    The peak of each precision is the best of the two measurements (before and after the cases), so a
    machine busy with other work during one of them does not inflate the fractions. Every result with a
    ``flops_per_s`` gets ``fraction_of_peak`` (precision -> achieved / peak). ``log`` receives one line per
    measurement as it finishes, then a summary (e.g. ``print``). Returns the suite name, the machine, the
    peaks (with both samples), one list of results per case and the total seconds.
    """
    names = list(CASES) if cases is None else cases
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise BLTError(f"unknown benchmark case(s) {unknown}; choose from {sorted(CASES)}")
    say = log or (lambda line: None)
    start = time.perf_counter()
    with torch_threads(threads):
        machine = machine_info()
        before = measure_peaks(suite)
        results = {name: CASES[name].run(suite, say) for name in names}
        after = measure_peaks(suite)
    peaks = {name: max(before[name], after[name]) for name in PRECISIONS}
    say(f"matmul peak ({suite.peak_size}x{suite.peak_size}, {machine['threads']} threads, best of before/after): "
        + ", ".join(f"{name} {flops / 1e9:.1f} GFLOP/s" for name, flops in peaks.items()))
    for case_name, case_results in results.items():
        for result in case_results:
            if "flops_per_s" in result:
                result["fraction_of_peak"] = {name: result["flops_per_s"] / peak for name, peak in peaks.items()}
            say(CASES[case_name].describe(result))
    return {
        "suite": suite.name,
        "machine": machine,
        "peak": {
            name: {"flops_per_s": peaks[name], "size": suite.peak_size, "samples": [before[name], after[name]]}
            for name in PRECISIONS
        },
        **results,
        "seconds": time.perf_counter() - start,
    }
