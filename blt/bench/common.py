"""What every benchmark case shares: threads, the machine's description, the matmul peak that every FLOP/s is
measured against, timing on the CPU or a CUDA device, random inputs, and one training step."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from blt import allocator
from blt.errors import BLTError
from blt.model.byte_latent import next_byte_loss
from blt.patching.patchers import lengths_from_start_mask
from blt.tokenizer import BOS_ID, OFFSET
from blt.train import autocast
from blt.train.device import matmul_flops_per_s

CPU = torch.device("cpu")


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
    warmup first): `blt.train.device.matmul_flops_per_s` at the benchmarks' default size."""
    return matmul_flops_per_s(dtype, size, repeats, device, seed)


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
