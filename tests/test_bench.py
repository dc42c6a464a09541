"""`blt bench`: the structure of the results on a micro case (no timing assertions)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from blt import bench
from blt.bench import ModelCase, Suite, random_patch_lengths, run_benchmarks
from blt.cli import main
from blt.config import BLTConfig, GlobalConfig, HashEmbeddingConfig, LocalDecoderConfig, LocalEncoderConfig
from blt.flops import blt_flops


def _micro_suite() -> Suite:
    cfg = BLTConfig(
        encoder=LocalEncoderConfig(dim=32, n_layers=1, n_heads=2, window=16),
        global_model=GlobalConfig(dim=64, n_layers=1, n_heads=2),
        decoder=LocalDecoderConfig(dim=32, n_layers=1, n_heads=2, window=16),
        hash=HashEmbeddingConfig(rows=64),
        max_seq_len=64,
    )
    case = ModelCase("micro", cfg, batch_size=2, seq_len=64, warmup=0, iterations=1)
    return Suite("micro", (case,), peak_size=128, peak_repeats=1)


def _positive_finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_model_case_results_have_every_field_and_positive_ratios():
    threads = torch.get_num_threads()
    result = run_benchmarks(_micro_suite(), threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert result["suite"] == "micro" and _positive_finite(result["seconds"])
    machine = result["machine"]
    assert machine["threads"] == 1 and machine["torch"] == torch.__version__ and machine["cpu"]
    assert set(result["peak"]) == {"fp32", "bf16"}
    for peak in result["peak"].values():  # the best of a measurement before and one after the cases
        assert peak["size"] == 128 and all(_positive_finite(x) for x in peak["samples"])
        assert peak["flops_per_s"] == max(peak["samples"])

    rows = result["model"]
    assert [(r["case"], r["precision"]) for r in rows] == [("micro", "fp32"), ("micro", "bf16")]
    cfg = _micro_suite().model_cases[0].config
    for r in rows:
        assert len(r["step_seconds"]) == 1 and r["step_seconds_median"] == r["step_seconds"][0]
        assert r["bytes_per_s"] == pytest.approx(2 * 64 / r["step_seconds_median"])
        assert 1 <= r["mean_patch_size"] <= 64
        assert r["training_flops_per_byte"] == pytest.approx(blt_flops(cfg, r["mean_patch_size"], 64).training)
        assert r["flops_per_s"] == pytest.approx(r["training_flops_per_byte"] * r["bytes_per_s"])
        assert set(r["fraction_of_peak"]) == {"fp32", "bf16"}
        for name, fraction in r["fraction_of_peak"].items():
            assert _positive_finite(fraction)
            assert fraction == pytest.approx(r["flops_per_s"] / result["peak"][name]["flops_per_s"])
    assert json.loads(json.dumps(result)) == result


def test_random_patching_is_causal_shaped_and_near_its_mean():
    lengths = random_patch_lengths(4, 4096, 4.5, torch.Generator().manual_seed(0))
    assert lengths.sum(dim=1).tolist() == [4096] * 4
    assert lengths[:, 0].tolist() == [1] * 4  # BOS alone
    assert 4.0 < 4 * 4096 / int((lengths > 0).sum()) < 5.0


def test_cli_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.SUITES, "quick", _micro_suite)
    out = tmp_path / "bench" / "result.json"
    assert main(["bench", "model", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "matmul peak" in printed and "bytes/s" in printed
    result = json.loads(out.read_text())
    assert result["suite"] == "micro" and len(result["model"]) == 2


def test_cli_rejects_bad_threads_in_one_line(capsys):
    assert main(["bench", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads must be >= 1" in err and err.count("\n") == 1
