"""Does folding pay? One new position through one block: the block's own forward over a `LayerCache`
against the folded step of `blt.model.steps` over a `KVCache`, timed in the same run.

    .venv/bin/python benchmarks/steps.py            # writes benchmarks/results/steps.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from blt.bench import machine_info
from blt.config import LocalDecoderConfig
from blt.model.cache import KVCache, LayerCache
from blt.model.layers import TransformerStack
from blt.model.steps import BlockStep

RESULTS = Path(__file__).resolve().parent / "results"
PAST, STEPS, WINDOW = 200, 300, 256


def time_steps(layer, stack, folded: bool) -> float:
    """Seconds per new position after a prefill of PAST positions."""
    cache = LayerCache()
    with torch.inference_mode():
        layer(torch.randn(1, PAST, layer.attention.dim), stack.rope(torch.arange(PAST)), None, cache)
        if folded:
            kv, step = KVCache.from_prefill(cache, PAST, WINDOW), BlockStep(layer)
            cos, sin = stack.rope(torch.arange(PAST + STEPS))
            rotations, h = torch.complex(cos, sin), torch.randn(1, layer.attention.dim)
            start = time.perf_counter()
            for t in range(PAST, PAST + STEPS):
                h = step.batch(h, rotations[t:t + 1], None, kv)
        else:
            h = torch.randn(1, 1, layer.attention.dim)
            start = time.perf_counter()
            for t in range(PAST, PAST + STEPS):
                mask = torch.ones(1, 1, 1, len(cache) + 1, dtype=torch.bool)
                h = layer(h, stack.rope(torch.arange(t, t + 1)), mask, cache)
                cache.keep_last(WINDOW - 1)
        return (time.perf_counter() - start) / STEPS


def main() -> int:
    torch.set_num_threads(1)
    rows = []
    for dim, heads in ((128, 4), (256, 4), (512, 8)):
        stack = TransformerStack(LocalDecoderConfig(dim=dim, n_layers=1, n_heads=heads, window=WINDOW))
        stack.init_weights()
        layer = stack.layers[0].eval()
        for _ in range(2):  # warm up
            time_steps(layer, stack, False), time_steps(layer, stack, True)
        block = min(time_steps(layer, stack, False) for _ in range(5))
        folded = min(time_steps(layer, stack, True) for _ in range(5))
        rows.append({"dim": dim, "heads": heads, "block_forward_us": 1e6 * block, "folded_step_us": 1e6 * folded,
                     "speedup": block / folded})
        print(f"dim {dim:>3}, {heads} heads: block forward + LayerCache {1e6 * block:6.0f} us, folded step + KVCache "
              f"{1e6 * folded:6.0f} us: {block / folded:.2f}x", flush=True)
    record = {"benchmark": "steps", "command": "python benchmarks/steps.py", "past_positions": PAST, "window": WINDOW,
              "threads": 1, "results": rows, "machine": machine_info()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "steps.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS / 'steps.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
