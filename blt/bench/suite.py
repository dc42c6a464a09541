"""Suites of benchmark cases and the runner behind `blt bench`: every speed is reported next to a baseline
measured in the same run (the matmul peak of the device, before and after the cases).

The model, patching and training cases and the peaks run on the suite's ``device``: the CPU, or a CUDA GPU,
where every timing waits for the GPU's queued work and the fraction of the bf16 matmul peak is the step's
MFU. The ``generation`` case stays on the CPU. Results are plain dicts, ready for JSON; a new case is an
entry of `CASES`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from blt.bench.common import machine_info, matmul_peak, torch_threads
from blt.bench.generation import format_generation_result, run_generation_case
from blt.bench.length import format_length_result, run_length_case
from blt.bench.model import ModelCase, format_model_result, run_model_case
from blt.bench.patching import PatchingCase, format_patching_result, run_patching_case
from blt.bench.training import TrainingCase, format_training_result, run_training_case
from blt.config import BLTConfig, EntropyModelConfig
from blt.errors import BLTError
from blt.train import PRECISIONS
from blt.train.device import probe_bf16


@dataclass(frozen=True)
class Suite:
    """A named set of cases, run under each precision, with the settings of the matmul-peak baseline."""

    name: str
    model_cases: tuple[ModelCase, ...]
    precisions: tuple[str, ...] = ("fp32", "bf16")
    peak_size: int = 2048  # side of the square matmuls that measure the peak
    peak_repeats: int = 5  # timed matmuls per dtype; the best counts
    patching_cases: tuple[PatchingCase, ...] = ()  # entropy models to time patching with
    training_cases: tuple[TrainingCase, ...] = ()  # models to time training steps of, against transformers
    against_hf: bool = False  # the training case also times transformers' BltForCausalLM (if installed)
    compile: bool = False  # the training case also times our model under torch.compile
    generation_new_bytes: tuple[int, ...] = ()  # lengths the generation case generates (`blt.bench.generation`)
    generation_calibration_bytes: int = 512  # greedy bytes the generation case calibrates its θ on
    device: str = "cpu"  # where the model, patching and training cases and the matmul peaks run ("cuda", "cuda:N")
    length_preset: str | None = None  # the preset of the length case (`blt.bench.length`); None: no length case
    length_seq_lens: tuple[int, ...] = (1024, 4096, 16384)  # bytes per training row
    length_contexts: tuple[int, ...] = (256, 2048, 16384)  # bytes of context before generating
    length_new_bytes: int = 32  # bytes generated (and timed) after each context
    length_patch_size: int = 6  # the BLT's patch size at every length
    length_iterations: int = 3  # timed training steps per length and model (after one untimed)

    def __post_init__(self):
        unknown = sorted(set(self.precisions) - set(PRECISIONS))
        if unknown:
            raise ValueError(f"suite {self.name!r}: unknown precision(s) {unknown}; choose from {sorted(PRECISIONS)}")


def _quick_suite() -> Suite:
    """A few minutes on 2 idle cores."""
    return Suite("quick", (
        ModelCase("tiny", BLTConfig.preset("tiny"), batch_size=4, seq_len=512, warmup=2, iterations=5),
        ModelCase("small", BLTConfig.preset("small"), batch_size=4, seq_len=1024, warmup=1, iterations=3),
    ), patching_cases=(
        PatchingCase("tiny", EntropyModelConfig.preset("tiny"), batch_size=1, seq_len=4096, warmup=1, iterations=5),
        PatchingCase("tiny", EntropyModelConfig.preset("tiny"), batch_size=32, seq_len=4096, warmup=1, iterations=3),
    ), training_cases=(
        TrainingCase("tiny", BLTConfig.preset("tiny"), batch_size=4, seq_len=512, patch_size=5, warmup=1, iterations=3),
        TrainingCase("small", BLTConfig.preset("small"), batch_size=4, seq_len=1024, patch_size=5, warmup=1, iterations=3),
    ), generation_new_bytes=(64, 512), length_preset="tiny")


def _full_suite() -> Suite:
    """Larger batches, more iterations and a 4096-wide matmul for the peak: several minutes on 2 cores."""
    return Suite("full", (
        ModelCase("tiny", BLTConfig.preset("tiny"), batch_size=8, seq_len=512, warmup=3, iterations=10),
        ModelCase("small", BLTConfig.preset("small"), batch_size=8, seq_len=1024, warmup=2, iterations=8),
    ), peak_size=4096, peak_repeats=5, patching_cases=(
        PatchingCase("tiny", EntropyModelConfig.preset("tiny"), batch_size=1, seq_len=16384, warmup=1, iterations=5),
        PatchingCase("tiny", EntropyModelConfig.preset("tiny"), batch_size=64, seq_len=4096, warmup=1, iterations=5),
        PatchingCase("small", EntropyModelConfig.preset("small"), batch_size=16, seq_len=4096, warmup=1, iterations=3),
    ), training_cases=(
        TrainingCase("tiny", BLTConfig.preset("tiny"), batch_size=4, seq_len=512, patch_size=5, warmup=2, iterations=8),
        TrainingCase("small", BLTConfig.preset("small"), batch_size=4, seq_len=1024, patch_size=5, warmup=2, iterations=8),
    ), generation_new_bytes=(64, 256, 512, 1024), length_preset="small", length_new_bytes=64, length_iterations=5)


SUITES: dict[str, Callable[[], Suite]] = {"quick": _quick_suite, "full": _full_suite}


def suite_named(name: str) -> Suite:
    """The suite of `SUITES` called ``name``; a `BLTError` naming the choices otherwise."""
    if name not in SUITES:
        raise BLTError(f"unknown benchmark suite {name!r}; choose one of {sorted(SUITES)}")
    return SUITES[name]()


@dataclass(frozen=True)
class BenchCase:
    """A benchmark: ``run(suite, log)`` returns its results; those with ``flops_per_s`` get fractions of the peaks."""

    run: Callable[[Suite, Callable[[str], None]], list[dict[str, Any]]]
    describe: Callable[[dict[str, Any]], str]  # one line per result


CASES: dict[str, BenchCase] = {
    "model": BenchCase(run_model_case, format_model_result),
    "patching": BenchCase(run_patching_case, format_patching_result),
    "training": BenchCase(run_training_case, format_training_result),
    "generation": BenchCase(run_generation_case, format_generation_result),
    "length": BenchCase(run_length_case, format_length_result),
}


def measure_peaks(suite: Suite) -> dict[str, float]:
    """Matmul peak FLOP/s per precision of the suite at the suite's size, on the suite's device."""
    return {name: matmul_peak(PRECISIONS[name], suite.peak_size, suite.peak_repeats, device=suite.device)
            for name in suite.precisions}


def without_emulated_bf16(suite: Suite) -> tuple[Suite, dict[str, str]]:
    """The suite less bf16 where the device emulates it (`blt.train.device.Bf16Probe.slow`: a CPU without
    AVX512-BF16 or AMX runs bf16 matmuls ~50x slower than fp32, and its 2048-wide bf16 peak alone takes
    minutes), and why, as ``{precision: reason}`` (empty when nothing is left out)."""
    if "bf16" not in suite.precisions:
        return suite, {}
    probe = probe_bf16(suite.device)
    if not probe.slow:
        return suite, {}
    reason = f"{probe.describe()}: no native bf16, so its cases are left out (--precisions fp32,bf16 runs them)"
    return dataclasses.replace(suite, precisions=tuple(p for p in suite.precisions if p != "bf16")), {"bf16": reason}


def run_benchmarks(
    suite: Suite, cases: list[str] | None = None, threads: int | None = None, log: Callable[[str], None] | None = None,
    skip_emulated: bool = True,
) -> dict[str, Any]:
    """Run the named cases (default: all of `CASES`) of a suite between two measurements of the matmul peaks.

    The peak of each precision is the best of the two measurements (before and after the cases), so a
    machine busy with other work during one of them does not inflate the fractions. Every result with a
    ``flops_per_s``, and every dict inside a result with one (the implementations of the training case), gets
    ``fraction_of_peak`` (precision -> achieved / peak). ``log`` receives one line per
    measurement as it finishes, then a summary (e.g. ``print``). With ``skip_emulated``, bf16 is left out of
    the suite where the device only emulates it (`without_emulated_bf16`; the reason is logged and kept as
    ``skipped_precisions``). Returns the suite name, the machine, the
    peaks (with both samples), one list of results per case and the total seconds.
    """
    names = list(CASES) if cases is None else cases
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise BLTError(f"unknown benchmark case(s) {unknown}; choose from {sorted(CASES)}")
    say = log or (lambda line: None)
    start = time.perf_counter()
    with torch_threads(threads):
        machine = machine_info(torch.device(suite.device))
        skipped: dict[str, str] = {}
        if skip_emulated:
            suite, skipped = without_emulated_bf16(suite)
            for reason in skipped.values():
                say(reason)
        before = measure_peaks(suite)
        results = {name: CASES[name].run(suite, say) for name in names}
        after = measure_peaks(suite)
    peaks = {name: max(before[name], after[name]) for name in suite.precisions}
    say(f"matmul peak ({suite.peak_size}x{suite.peak_size}, {machine['threads']} threads, best of before/after): "
        + ", ".join(f"{name} {flops / 1e9:.1f} GFLOP/s" for name, flops in peaks.items()))
    for case_name, case_results in results.items():
        for result in case_results:
            for part in (result, *(value for value in result.values() if isinstance(value, dict))):
                if "flops_per_s" in part:
                    part["fraction_of_peak"] = {name: part["flops_per_s"] / peak for name, peak in peaks.items()}
            say(CASES[case_name].describe(result))
    return {
        "suite": suite.name,
        "machine": machine,
        "peak": {
            name: {"flops_per_s": peaks[name], "size": suite.peak_size, "samples": [before[name], after[name]]}
            for name in suite.precisions
        },
        "precisions": list(suite.precisions),
        "skipped_precisions": skipped,
        **results,
        "seconds": time.perf_counter() - start,
    }
