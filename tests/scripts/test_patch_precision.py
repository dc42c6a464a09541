"""`benchmarks/patch_precision.py` precomputes a corpus's entropies in fp32 and in bf16 on a copy of it and
reports both speeds and how many patch starts bf16 moves, leaving the corpus itself untouched."""

from __future__ import annotations

import json

import numpy as np

from tests.baselines.conftest import entropy_run, one_thread, text_data  # noqa: F401  (session fixtures, shared)
from tests.helpers import load_script


def test_both_precisions_are_timed_and_compared_on_a_copy(text_data, entropy_run, tmp_path):  # noqa: F811
    bench = load_script("patch_precision", "benchmarks")
    out = tmp_path / "patch_precision.json"
    assert bench.main(["--data", str(text_data.path), "--entropy-model", str(entropy_run), "--json", str(out),
                       "--threads", "1", "--target-patch-sizes", "3", "6"]) == 0
    record = json.loads(out.read_text())
    fp32, bf16 = record["precisions"]["fp32"], record["precisions"]["bf16"]
    assert fp32["key"] != bf16["key"] and fp32["bytes"] == bf16["bytes"] > 0
    assert record["bf16_speedup"] == bf16["bytes_per_s"] / fp32["bytes_per_s"]
    assert 0 < record["max_abs_difference_nats"] < 0.5
    assert [r["target_patch_size"] for r in record["patches"]] == [3, 6]
    assert all(0 <= r["moved_starts"] < r["patches"] for r in record["patches"])
    assert not (text_data.path / "entropies").exists()  # the corpus was not touched


def test_moved_starts_counts_the_bytes_whose_start_decision_differs():
    bench = load_script("patch_precision", "benchmarks")
    a = [np.array([5, 1.0, 3.0, 0.5, 2.9, 9, 9], dtype=np.float32)]  # BOS, bytes..., EOS
    b = [np.array([5, 1.0, 2.9, 0.5, 3.1, 9, 9], dtype=np.float32)]
    assert bench.moved_starts(a, b, threshold=2.95) == (2, 2)  # starts after the 2nd and the 4th value move
