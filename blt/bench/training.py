"""The ``training`` case: the training step (forward + backward of the next-byte loss) of our model and, with
``--against-hf``, of transformers' ``BltForCausalLM`` built from the same config with the same weights, bytes
and patch lengths (with ``--compile``, of our model under ``torch.compile`` too), interleaved step by step in
one process: the ratios, each one's fraction of the matmul peak and each one's peak tensor memory per step."""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from blt.bench.common import CPU, _native_stderr_silenced, random_bytes, synchronize, throughput, training_step
from blt.config import BLTConfig
from blt.flops import blt_flops
from blt.interop.hf import hf_config_dict, to_hf_state_dict
from blt.model.byte_latent import ByteLatentTransformer
from blt.model.layout import check_patch_lengths
from blt.patching.patchers import lengths_from_start_mask, start_mask_static
from blt.train.device import compile_module

if TYPE_CHECKING:
    from blt.bench.suite import Suite


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


HF_MISSING = "transformers is not installed (pip install 'blt-lm[hf]')"
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
                   device: torch.device = CPU, compiled: bool = False) -> list[dict[str, Any]]:
    """Time one training case under each precision: our model and, when ``against_hf`` and transformers is
    installed, its transformers twin (`transformers_twin`), one step of each in turn.

    Each result holds, per implementation (``blt``, ``transformers``: None when not measured, with the reason
    in ``baseline_missing``), the timed step seconds, bytes/s of the median step, achieved FLOP/s (the same
    model FLOPs per byte for both), peak tensor memory of one more step (`peak_step_memory`) and the loss
    of the last step (equal losses show that both computed the same thing). ``speedup`` is the median over
    the timed steps of transformers' step time over ours, each pair measured back to back.

    ``compiled`` also times our model under ``torch.compile`` (what ``train.compile`` trains with), in turn
    with the others: ``compiled`` holds its numbers, ``compile_seconds`` its first step of each precision
    (compiling, untimed otherwise) and ``compile_speedup`` the median of eager over compiled step time.
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
    if compiled:
        compiled_model = compile_module(model)
        check_patch_lengths(ids, patch_lengths)  # on the host once, as training does: the compiled call is one graph
        steps["compiled"] = (model, lambda: compiled_model(ids, patch_lengths, validate=False))
    missing = None if twin is not None else HF_MISSING if against_hf else HF_NOT_ASKED
    num_bytes = case.batch_size * case.seq_len
    patch_size = num_bytes / int((patch_lengths > 0).sum())
    flops_per_byte = blt_flops(case.config, patch_size=patch_size, seq_len=case.seq_len).training

    results = []
    for precision in precisions:
        times: dict[str, list[float]] = {name: [] for name in steps}
        losses: dict[str, float] = {}
        compile_seconds = training_step(*steps["compiled"], ids, precision)[0] if compiled else None
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
        result.setdefault("compiled", None)
        result["compile_seconds"] = compile_seconds
        result["compile_speedup"] = (statistics.median(e / c for e, c in zip(times["blt"], times["compiled"]))
                                     if compiled else None)
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
    if result.get("compiled") is not None:
        line += (f" | {describe('compiled', result['compiled'])}, {result['compile_speedup']:.2f}x eager "
                 f"(compiling took {result['compile_seconds']:.0f} s)")
    if result["transformers"] is None:
        return line + f" | transformers: {result['baseline_missing']}"
    return line + f" | {describe('transformers', result['transformers'])} | blt {result['speedup']:.2f}x transformers"


def run_training_case(suite: Suite, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The ``training`` case: every training case of the suite under every precision of the suite, against
    transformers when the suite says ``against_hf``."""
    results = []
    for case in suite.training_cases:
        for result in bench_training(case, suite.precisions, suite.against_hf, device=torch.device(suite.device),
                                     compiled=suite.compile):
            log(format_training_result(result))
            results.append(result)
    return results
