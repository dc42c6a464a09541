"""`benchmarks/patch_attention.py` times entropy patching with and without the attention kernel, alternately,
and puts the attention's share of the time and its FLOP/s beside the share of the matmul peak."""

from __future__ import annotations

import statistics

import pytest
import torch

from blt.bench.patching import PatchingCase
from blt.config import EntropyModelConfig
from blt.model import attention
from blt.patching.entropy_model import EntropyModel
from tests.helpers import load_script

CASE = PatchingCase("tiny", EntropyModelConfig.preset("tiny"), batch_size=2, seq_len=300, warmup=0, iterations=1)


def test_attention_free_skips_the_kernel_and_puts_it_back():
    bench = load_script("patch_attention", "benchmarks")
    model = EntropyModel(CASE.config).init_weights(0).eval()
    ids = torch.randint(4, 260, (2, 300), generator=torch.Generator().manual_seed(0))
    real = attention.DenseMask.attend
    with bench.attention_free():
        assert attention.DenseMask.attend is not real
        without = model.entropies(ids)
    assert attention.DenseMask.attend is real
    assert without.shape == ids.shape and not torch.equal(without, model.entropies(ids))
    with pytest.raises(RuntimeError), bench.attention_free():
        raise RuntimeError("put back after an error too")
    assert attention.DenseMask.attend is real


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_case_is_timed_both_ways(precision):
    bench = load_script("patch_attention", "benchmarks")
    peaks = {"fp32": 1e11, "bf16": 4e11}
    r = bench.measure(CASE, precision, repeats=2, peaks=peaks)
    assert len(r["seconds"]) == len(r["seconds_without_attention"]) == 2
    assert r["bytes_per_s"] == pytest.approx(600 / statistics.median(r["seconds"]))
    assert r["bytes_per_s_without_attention"] == pytest.approx(600 / statistics.median(r["seconds_without_attention"]))
    assert 0 < r["attention_flops_per_byte"] < r["forward_flops_per_byte"]
    assert r["attention_share"] < 1 and r["fraction_of_peak"] > 0
    assert r["fraction_of_peak"] == pytest.approx(r["forward_flops_per_byte"] * r["bytes_per_s"] / peaks[precision])
    text = bench.markdown({"peak": peaks, "machine": {"threads": 1}, "cases": [r]})
    assert f"| `tiny` 2 x 300 | {precision} |" in text
