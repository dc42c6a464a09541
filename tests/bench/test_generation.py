"""The generation benchmark: engine, full recompute and transformers generate, and the rows say how fast."""

from __future__ import annotations

import pytest

from blt.bench import torch_threads
from blt.bench.generation import TABLE_HEADER, bench_generation, format_row


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_rows_compare_the_engine_with_both_baselines():
    pytest.importorskip("transformers")
    lines = []
    result = bench_generation("tiny", new_bytes=(12,), engine_only=(20,), engine_repeats=1, calibration_bytes=48,
                              log=lambda row: lines.append(format_row(row)))
    assert result["transformers"] == "ran"
    short, long = result["results"]
    assert (short["new_bytes"], long["new_bytes"]) == (12, 20)
    assert short["engine_equals_full_recompute"] is True
    assert short["speedup_vs_full_recompute"] == pytest.approx(
        short["full_recompute_seconds"] / short["engine_seconds"])
    assert short["speedup_vs_transformers"] > 0 and 0 <= short["bytes_agreeing_with_transformers"] <= 12
    assert "transformers_bytes_per_s" not in long and "full_recompute_bytes_per_s" not in long  # engine only
    # Global steps per byte are the patches closed while generating: 1 / their mean size.
    for row in (short, long):
        assert row["global_steps_per_byte"] == pytest.approx(1 / row["mean_patch_size_generated"], rel=0.35)
    assert [line.split()[0] for line in lines] == ["12", "20"] and "new bytes" in TABLE_HEADER
    assert f"{short['speedup_vs_transformers']:.1f}x" in lines[0] and lines[1].count(" - ") == 4


def test_without_transformers_the_engine_is_still_measured():
    result = bench_generation("tiny", new_bytes=(6,), engine_only=(), engine_repeats=1, calibration_bytes=32,
                              against_transformers=False)
    assert result["transformers"] == "not requested"
    (row,) = result["results"]
    assert row["engine_bytes_per_s"] > 0 and row["full_recompute_bytes_per_s"] > 0
    assert "transformers_seconds" not in row


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match=">= 1"):
        bench_generation("tiny", new_bytes=(0,), against_transformers=False)
