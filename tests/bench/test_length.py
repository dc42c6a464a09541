"""The ``length`` benchmark case: training and generation cost at several lengths, BLT against the byte
baseline (structure and bookkeeping; no timing assertions)."""

from __future__ import annotations

import json
import math

import torch

from blt import bench
from blt.bench import Suite, run_benchmarks
from blt.bench.length import build_models, context_text, format_length_result
from blt.cli import main


def _length_suite() -> Suite:
    return Suite("micro", (), peak_size=128, peak_repeats=1, precisions=("fp32",), length_preset="tiny",
                 length_seq_lens=(128, 256), length_contexts=(64, 128), length_new_bytes=16, length_iterations=1)


def test_length_case_measures_both_models_at_every_length():
    lines = []
    result = run_benchmarks(_length_suite(), cases=["length"], threads=1, log=lines.append)
    rows = result["length"]
    training = [r for r in rows if "seq_len" in r]
    generation = [r for r in rows if "context_bytes" in r]
    assert [r["seq_len"] for r in training] == [128, 256] and [r["context_bytes"] for r in generation] == [64, 128]
    for r in training:
        assert r["preset"] == "tiny" and r["precision"] == "fp32"
        for model in ("blt", "byte"):
            numbers = r[model]
            assert len(numbers["step_seconds"]) == 1 and numbers["us_per_byte"] > 0
            assert numbers["peak_step_memory_bytes"] > 0
            assert math.isclose(numbers["flops_per_s"] * numbers["step_seconds_median"],
                                numbers["training_flops_per_byte"] * r["seq_len"])
            assert 0 < numbers["fraction_of_peak"]["fp32"]  # added by the runner, against the same run's peak
        # the byte baseline runs the BLT's global blocks at every byte, the BLT once a patch
        assert r["byte"]["training_flops_per_byte"] > r["blt"]["training_flops_per_byte"]
    for r in generation:
        assert r["new_bytes"] == 16 and r["blt"]["bytes_per_s"] > 0 and r["byte"]["bytes_per_s"] > 0
        assert 0 < r["blt"]["global_steps_per_byte"] <= 1  # θ was calibrated so that patches close
    assert sum("length training" in line for line in lines) == 2 * len(training)  # as measured, then the summary
    assert "byte/blt" in format_length_result(training[0]) and "blt/byte" in format_length_result(generation[0])


def test_suites_without_a_length_preset_skip_the_case():
    suite = Suite("micro", (), peak_size=128, peak_repeats=1)
    assert run_benchmarks(suite, cases=["length"], threads=1)["length"] == []


def test_the_byte_baseline_has_the_blts_global_blocks():
    blt, byte, entropy_model = build_models("tiny")
    assert byte.cfg.vocab_size == 260 and byte.cfg.dim == blt.cfg.global_model.dim
    assert byte.cfg.n_layers == blt.cfg.global_model.n_layers and entropy_model.cfg.vocab_size == 260


def test_context_is_text_of_the_requested_length():
    text = context_text(5000)
    assert len(text) == 5000 and text == context_text(5000) and text.decode("utf-8", errors="strict")
    assert len(context_text(10**7)) == 10**7  # repeated when the sources are shorter


def test_cli_writes_json_and_draws_the_curves(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.SUITES, "quick", _length_suite)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out, png = tmp_path / "length.json", tmp_path / "plots" / "length.png"
    assert main(["bench", "length", "--threads", "1", "--json", str(out), "--png", str(png)]) == 0
    assert "length generation after" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["length"]) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
