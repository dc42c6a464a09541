"""Benchmarks behind `blt bench`: every speed is reported next to a baseline measured in the same run.

The ``model`` case times a BLT training step (forward + backward, no optimizer) in fp32 and under
bf16 autocast, with a fixed random causal patching, and turns bytes/s into achieved FLOP/s with the
training FLOPs per byte of `blt.flops`. The baseline is the matmul peak of this machine, measured in the
same run: the best FLOP/s of large square matmuls in fp32 and in bf16. Results are plain dicts, ready
for JSON; a new case is an entry of `CASES`.

The ``patching`` case times entropy-model patching (entropies, then patch boundaries) in MB/s in
fp32 and bf16, for one row per call and for many, and turns it into achieved FLOP/s with the entropy
model's forward FLOPs per byte; batched results also say how many times faster than batch 1 they are.

The ``training`` case times the same training step (forward + backward of the next-byte loss) of our
model and, with ``--against-hf``, of transformers' ``BltForCausalLM`` built from the same config with the
same weights, bytes and patch lengths, interleaved step by step in one process, and reports the ratio,
each one's fraction of the matmul peak and each one's peak tensor memory per step.

These three cases and the matmul peaks run on the suite's ``device``: the CPU, or a CUDA GPU, where every
timing waits for the GPU's queued work and the fraction of the measured bf16 matmul peak is the step's MFU.
The CUDA path has not run on a GPU yet (no session has had one); the ``generation`` case stays on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blt import allocator
from blt.config import BLTConfig, EntropyModelConfig
from blt.errors import BLTError
from blt.flops import blt_flops, entropy_model_flops
from blt.interop.hf import hf_config_dict, to_hf_state_dict
from blt.model.byte_latent import ByteLatentTransformer, next_byte_loss
from blt.patching.calibration import mean_patch_size
from blt.patching.entropy_model import EntropyModel
from blt.patching.patchers import (
    lengths_from_start_mask,
    patch_lengths_from_entropies,
    start_mask_static,
)
from blt.tokenizer import BOS_ID, OFFSET
from blt.train import PRECISIONS, autocast

CPU = torch.device("cpu")


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


@dataclass(frozen=True)
class TrainingCase:
    """A training step to time, ours and transformers': one config, batch shape and fixed patch size."""

    name: str  # label in the results (the preset name for presets)
    config: BLTConfig
    batch_size: int
    seq_len: int  # bytes per row
    patch_size: int  # BOS alone, then patches of this many bytes (the last one may be shorter)
    warmup: int  # untimed steps of each implementation first
    iterations: int  # timed steps of each, interleaved (ours, theirs, ours, ...); medians are reported

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_len < 2 or self.patch_size < 1 or self.warmup < 0 or self.iterations < 1:
            raise ValueError(f"training case {self.name!r} needs batch_size >= 1, seq_len >= 2, patch_size >= 1, "
                             f"warmup >= 0 and iterations >= 1; got {self.batch_size}, {self.seq_len}, "
                             f"{self.patch_size}, {self.warmup}, {self.iterations}")


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
    generation_new_bytes: tuple[int, ...] = ()  # lengths the generation case generates (`blt.bench_generation`)
    generation_calibration_bytes: int = 512  # greedy bytes the generation case calibrates its θ on
    device: str = "cpu"  # where the model, patching and training cases and the matmul peaks run ("cuda", "cuda:N")

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
        # "small" is the 56M reference (encoder 1x256, global 6x512, decoder 3x256, k = 2).
        TrainingCase("tiny", BLTConfig.preset("tiny"), batch_size=4, seq_len=512, patch_size=5, warmup=1, iterations=3),
        TrainingCase("small", BLTConfig.preset("small"), batch_size=4, seq_len=1024, patch_size=5, warmup=1, iterations=3),
    ), generation_new_bytes=(64, 512))


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
    ), generation_new_bytes=(64, 256, 512, 1024))


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


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for a block (Python's own
    ``sys.stderr`` and exceptions are untouched). torch 2.13's profiler logs two ``USDT: ... profiler_start``
    lines per use there, with no switch to turn them off."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA ``device`` (a no-op on the CPU), so that the clock sees it done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, threads, versions, the GPU if there is one, and the device the
    cases ran on."""
    return {
        "device": str(device or torch.device("cpu")),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": (torch.cuda.get_device_name(device if device is not None and device.type == "cuda" else 0)
                if torch.cuda.is_available() else None),
        "allocator": allocator.describe(),  # the same for ours and the baselines: it is process-wide
    }


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5, seed: int = 0,
                device: torch.device | str = "cpu") -> float:
    """Best achieved FLOP/s of a ``size × size`` by ``size × size`` matmul in ``dtype`` on ``device`` (one
    warmup first)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        synchronize(device)
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


def random_bytes(batch_size: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    """Random byte ids (B, T), each row starting with BOS."""
    ids = torch.randint(OFFSET, 256 + OFFSET, (batch_size, seq_len), generator=gen)
    ids[:, 0] = BOS_ID
    return ids


def timed_calls(call: Callable[[], object], warmup: int, iterations: int,
                device: torch.device = CPU) -> list[float]:
    """Seconds of each of ``iterations`` calls, after ``warmup`` untimed ones (on a GPU, until its work is done)."""
    times = []
    for step in range(warmup + iterations):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def throughput(times: list[float], num_bytes: int, flops_per_byte: float) -> dict[str, Any]:
    """The timing fields of a result: step seconds, their median, bytes/s and FLOP/s of the median step."""
    median = statistics.median(times)
    return {"step_seconds": times, "step_seconds_median": median, "bytes_per_s": num_bytes / median,
            "flops_per_s": flops_per_byte * num_bytes / median}


def peak_fractions(result: dict[str, Any]) -> str:
    """`` (x% of fp32 peak, y% of bf16 peak)`` once `run_benchmarks` has added them, else nothing."""
    if "fraction_of_peak" not in result:
        return ""
    return " (" + ", ".join(f"{100 * f:.1f}% of {name} peak" for name, f in result["fraction_of_peak"].items()) + ")"


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
            "chunk_len": model.default_chunk_len(case.batch_size),
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


HF_MISSING = "transformers is not installed (pip install 'blt[hf]')"
HF_NOT_ASKED = "not asked for (--against-hf)"


def fixed_patch_lengths(batch_size: int, seq_len: int, patch_size: int) -> torch.Tensor:
    """BOS alone, then patches of ``patch_size`` bytes, the last one shorter if need be. -> (B, P) long.

    >>> fixed_patch_lengths(2, 12, 5).tolist()
    [[1, 5, 5, 1], [1, 5, 5, 1]]
    """
    return lengths_from_start_mask(start_mask_static(seq_len, patch_size).expand(batch_size, -1))


def transformers_twin(model: ByteLatentTransformer) -> nn.Module | None:
    """transformers' ``BltForCausalLM`` with the config and weights of ``model`` (SDPA attention, no bundled
    patcher; call it with ``patch_lengths`` and ``use_cache=False``), or None when transformers is missing."""
    try:
        from transformers import BltConfig as HFBltConfig
        from transformers import BltForCausalLM
    except ImportError:
        return None
    hf_cfg = HFBltConfig(**hf_config_dict(model.cfg), patch_in_forward=False)
    hf_cfg._attn_implementation = "sdpa"
    twin = BltForCausalLM(hf_cfg)
    twin.load_state_dict(to_hf_state_dict(model.state_dict()), strict=True)
    return twin


def training_step(model: nn.Module, forward: Callable[[], torch.Tensor], ids: torch.Tensor, precision: str) -> tuple[float, float]:
    """One forward + backward of the next-byte loss of ``forward()``'s logits (gradients dropped after), on the
    device of ``ids``. -> (seconds, loss)."""
    synchronize(ids.device)
    start = time.perf_counter()
    with autocast(ids.device.type, precision):
        loss = next_byte_loss(forward(), ids)
    loss.backward()
    model.zero_grad(set_to_none=True)
    synchronize(ids.device)
    return time.perf_counter() - start, float(loss.detach())


def peak_step_memory(step: Callable[[], object], device: torch.device = CPU) -> int:
    """Peak bytes of tensors allocated by one call of ``step`` and alive at the same time.

    On a CUDA ``device``: the allocator's peak during the call above what was allocated before it.

    The running sum of every allocation and free that `torch.profiler` records (``profile_memory=True``)
    during the call, so tensors that existed before it (weights, inputs) do not count, and activations,
    gradients and temporaries do. It counts tensor bytes, not what the process's allocator or libraries
    hold besides.
    """
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _native_stderr_silenced(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                           profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])  # stable: ties keep order
    peak = alive = 0
    for event in memory:
        alive += event["args"]["Bytes"]
        peak = max(peak, alive)
    return peak


def bench_training(case: TrainingCase, precisions: tuple[str, ...], against_hf: bool, seed: int = 0,
                   device: torch.device = CPU) -> list[dict[str, Any]]:
    """Time one training case under each precision: our model and, when ``against_hf`` and transformers is
    installed, its transformers twin (`transformers_twin`), one step of each in turn.

    Each result holds, per implementation (``blt``, ``transformers``: None when not measured, with the reason
    in ``baseline_missing``), the timed step seconds, bytes/s of the median step, achieved FLOP/s (the same
    model FLOPs per byte for both), peak tensor memory of one more step (`peak_step_memory`) and the loss
    of the last step (equal losses show that both computed the same thing). ``speedup`` is the median over
    the timed steps of transformers' step time over ours, each pair measured back to back.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = random_bytes(case.batch_size, case.seq_len, gen).to(device)
    patch_lengths = fixed_patch_lengths(case.batch_size, case.seq_len, case.patch_size).to(device)
    model = ByteLatentTransformer(case.config).init_weights(seed).train()
    twin = transformers_twin(model) if against_hf else None  # built from the weights while they are on the CPU
    model.to(device)
    steps = {"blt": (model, lambda: model(ids, patch_lengths))}
    if twin is not None:
        twin.to(device).train()
        steps["transformers"] = (twin, lambda: twin(input_ids=ids, patch_lengths=patch_lengths, use_cache=False).logits)
    missing = None if twin is not None else HF_MISSING if against_hf else HF_NOT_ASKED
    num_bytes = case.batch_size * case.seq_len
    patch_size = num_bytes / int((patch_lengths > 0).sum())
    flops_per_byte = blt_flops(case.config, patch_size=patch_size, seq_len=case.seq_len).training

    results = []
    for precision in precisions:
        times: dict[str, list[float]] = {name: [] for name in steps}
        losses: dict[str, float] = {}
        for step in range(case.warmup + case.iterations):
            for name, (module, forward) in steps.items():
                seconds, losses[name] = training_step(module, forward, ids, precision)
                if step >= case.warmup:
                    times[name].append(seconds)
        result: dict[str, Any] = {
            "case": case.name,
            "precision": precision,
            "batch_size": case.batch_size,
            "seq_len": case.seq_len,
            "patch_size": case.patch_size,
            "mean_patch_size": patch_size,
            "warmup": case.warmup,
            "training_flops_per_byte": flops_per_byte,
        }
        for name, (module, forward) in steps.items():
            memory = peak_step_memory(functools.partial(training_step, module, forward, ids, precision), device)
            result[name] = {
                **throughput(times[name], num_bytes, flops_per_byte),
                "peak_step_memory_bytes": memory,
                "loss": losses[name],
            }
        result.setdefault("transformers", None)
        result["speedup"] = (statistics.median(hf / ours for hf, ours in zip(times["transformers"], times["blt"]))
                             if twin is not None else None)
        result["baseline_missing"] = missing
        results.append(result)
    return results


def format_training_result(result: dict[str, Any]) -> str:
    """One line: case, precision, shape, then for each implementation bytes/s, the fraction of the peak of
    its precision (once known) and peak memory per step, then the speedup or why there is no baseline."""
    precision = result["precision"]

    def describe(name: str, numbers: dict[str, Any]) -> str:
        text = f"{name} {numbers['bytes_per_s']:>7,.0f} bytes/s"
        if "fraction_of_peak" in numbers:
            text += f", {100 * numbers['fraction_of_peak'][precision]:.1f}% of {precision} peak"
        return text + f", {numbers['peak_step_memory_bytes'] / 2**20:,.0f} MiB/step"

    line = (f"training {result['case']:<6} {precision:<4} {result['batch_size']}x{result['seq_len']} "
            f"(patches of {result['patch_size']}): {describe('blt', result['blt'])}")
    if result["transformers"] is None:
        return line + f" | transformers: {result['baseline_missing']}"
    return line + f" | {describe('transformers', result['transformers'])} | blt {result['speedup']:.2f}x transformers"


def run_training_case(suite: Suite, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The ``training`` case: every training case of the suite under every precision of the suite, against
    transformers when the suite says ``against_hf``."""
    results = []
    for case in suite.training_cases:
        for result in bench_training(case, suite.precisions, suite.against_hf, device=torch.device(suite.device)):
            log(format_training_result(result))
            results.append(result)
    return results


@dataclass(frozen=True)
class BenchCase:
    """A benchmark: ``run(suite, log)`` returns its results; those with ``flops_per_s`` get fractions of the peaks."""

    run: Callable[[Suite, Callable[[str], None]], list[dict[str, Any]]]
    describe: Callable[[dict[str, Any]], str]  # one line per result


def run_generation_case(suite: Suite, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The ``generation`` case (on the CPU, whatever the suite's device): the cached engine against our full recompute and (with ``against_hf``)
    transformers' `BltForCausalLM.generate(use_cache=False)`, `tiny` sizes (see `blt.bench_generation`)."""
    from blt.bench_generation import bench_generation, format_row

    record = bench_generation("tiny", new_bytes=suite.generation_new_bytes, engine_only=(),
                              against_transformers=suite.against_hf, calibration_bytes=suite.generation_calibration_bytes,
                              log=lambda row: log(format_row(row)))
    return [{"case": "generation", **{k: v for k, v in record.items() if k != "results"}, **row}
            for row in record["results"]]


def format_generation_result(result: dict[str, Any]) -> str:
    text = (f"generation tiny, {result['new_bytes']} new bytes: engine {result['engine_bytes_per_s']:.0f} B/s, "
            f"{result['speedup_vs_full_recompute']:.1f}x our full recompute")
    if "speedup_vs_transformers" in result:
        text += f", {result['speedup_vs_transformers']:.1f}x transformers"
    else:
        text += f" (transformers: {result['transformers']})"
    return text + f"; {result['global_steps_per_byte']:.3f} global steps per byte"


CASES: dict[str, BenchCase] = {
    "model": BenchCase(run_model_case, format_model_result),
    "patching": BenchCase(run_patching_case, format_patching_result),
    "training": BenchCase(run_training_case, format_training_result),
    "generation": BenchCase(run_generation_case, format_generation_result),
}


def measure_peaks(suite: Suite) -> dict[str, float]:
    """Matmul peak FLOP/s per precision at the suite's size, on the suite's device."""
    return {name: matmul_peak(dtype, suite.peak_size, suite.peak_repeats, device=suite.device)
            for name, dtype in PRECISIONS.items()}


def run_benchmarks(
    suite: Suite, cases: list[str] | None = None, threads: int | None = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the named cases (default: all of `CASES`) of a suite between two measurements of the matmul peaks.

    The peak of each precision is the best of the two measurements (before and after the cases), so a
    machine busy with other work during one of them does not inflate the fractions. Every result with a
    ``flops_per_s``, and every dict inside a result with one (the implementations of the training case), gets
    ``fraction_of_peak`` (precision -> achieved / peak). ``log`` receives one line per
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
        machine = machine_info(torch.device(suite.device))
        before = measure_peaks(suite)
        results = {name: CASES[name].run(suite, say) for name in names}
        after = measure_peaks(suite)
    peaks = {name: max(before[name], after[name]) for name in PRECISIONS}
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
            for name in PRECISIONS
        },
        **results,
        "seconds": time.perf_counter() - start,
    }
