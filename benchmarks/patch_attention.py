"""Where entropy patching's time goes: the attention kernel against everything else, in fp32 and bf16.

    python benchmarks/patch_attention.py --json benchmarks/results/patch_attention.json

For each case of `blt bench patching --suite full` (random weights and bytes, as there) and each precision,
`EntropyModel.entropies` is timed twice, alternately in the same process: as it is, and with the attention
of every layer (PyTorch's scaled_dot_product_attention over the chunk's keys, `DenseMask.attend`) replaced
by a stand-in that costs nothing and returns its queries. The difference is the attention's time; the
second time is a bound on what a faster attention kernel could give. Reported per case and precision:
bytes/s both ways, the attention's share of the time, the attention's achieved GFLOP/s (its useful FLOPs,
`blt.flops`, over its time) and the share of the matmul peak (measured in the same run) with and without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from blt.bench.common import machine_info, matmul_peak, random_bytes, torch_threads
from blt.bench.suite import suite_named
from blt.fileio import atomic_write_text
from blt.flops import block_attention_flops, entropy_model_flops
from blt.model import attention
from blt.patching.entropy_model import EntropyModel
from blt.train import PRECISIONS

@contextlib.contextmanager
def attention_free() -> Iterator[None]:
    """Every `DenseMask.attend` returns its queries (shape (B, Tq, H, hd), as attention's output) at no cost."""
    real = attention.DenseMask.attend
    attention.DenseMask.attend = lambda self, q, k, v: q
    try:
        yield
    finally:
        attention.DenseMask.attend = real


def seconds(model: EntropyModel, ids: torch.Tensor, dtype: torch.dtype) -> float:
    start = time.perf_counter()
    model.entropies(ids, batch_size=ids.shape[0], dtype=dtype)
    return time.perf_counter() - start


def measure(case, precision: str, repeats: int, peaks: dict[str, float]) -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = random_bytes(case.batch_size, case.seq_len, gen)
    model = EntropyModel(case.config).init_weights(0).eval()
    dtype = PRECISIONS[precision]
    seconds(model, ids, dtype)  # warm up both ways
    with attention_free():
        seconds(model, ids, dtype)
    full, free = [], []
    for _ in range(repeats):  # alternate, so that drift of the machine falls on both alike
        full.append(seconds(model, ids, dtype))
        with attention_free():
            free.append(seconds(model, ids, dtype))
    num_bytes = ids.numel()
    t_full, t_free = statistics.median(full), statistics.median(free)
    flops = entropy_model_flops(case.config, seq_len=case.seq_len).forward
    attention_flops = block_attention_flops(case.config, case.seq_len)
    peak = peaks[precision]
    return {
        "case": case.name, "precision": precision, "batch_size": case.batch_size, "seq_len": case.seq_len,
        "chunk_len": model.default_chunk_len(case.batch_size, dtype),
        "seconds": full, "seconds_without_attention": free,
        "bytes_per_s": num_bytes / t_full, "bytes_per_s_without_attention": num_bytes / t_free,
        "attention_share": 1 - t_free / t_full,
        "forward_flops_per_byte": flops, "attention_flops_per_byte": attention_flops,
        "attention_flops_per_s": attention_flops * num_bytes / (t_full - t_free) if t_full > t_free else None,
        "fraction_of_peak": flops * num_bytes / t_full / peak,
        "fraction_of_peak_without_attention": (flops - attention_flops) * num_bytes / t_free / peak,
    }


def markdown(record: dict) -> str:
    lines = [f"Matmul peaks in this run: fp32 {record['peak']['fp32'] / 1e9:.0f}, bf16 "
             f"{record['peak']['bf16'] / 1e9:.0f} GFLOP/s ({record['machine']['threads']} threads).", "",
             "| case | precision | KB/s | share of peak | attention's share of the time | attention GFLOP/s | "
             "KB/s without attention | share of peak without it |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["cases"]:
        gflops = "-" if r["attention_flops_per_s"] is None else f"{r['attention_flops_per_s'] / 1e9:.0f}"
        lines.append(f"| `{r['case']}` {r['batch_size']} x {r['seq_len']} | {r['precision']} | "
                     f"{r['bytes_per_s'] / 1e3:.1f} | {100 * r['fraction_of_peak']:.1f}% | "
                     f"{100 * r['attention_share']:.0f}% | {gflops} | {r['bytes_per_s_without_attention'] / 1e3:.1f} | "
                     f"{100 * r['fraction_of_peak_without_attention']:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls each way (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        suite = suite_named("full")
        peaks = {name: matmul_peak(dtype, suite.peak_size, suite.peak_repeats) for name, dtype in PRECISIONS.items()}
        cases = [measure(case, precision, args.repeats, peaks)
                 for case in suite.patching_cases if case.batch_size > 1 for precision in PRECISIONS]
        record = {"machine": machine_info(), "peak": peaks, "cases": cases}
    text = markdown(record)
    print(text, end="")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
