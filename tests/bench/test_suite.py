"""`blt bench`: the structure of the results on a micro case (no timing assertions)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import pytest
import torch

from blt import bench
from blt.bench import (
    ModelCase,
    PatchingCase,
    Suite,
    run_benchmarks,
)
from blt.bench.common import random_patch_lengths
from blt.cli import main
from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
)
from blt.flops import blt_flops, entropy_model_flops
from blt.patching import EntropyModel, patch_lengths_from_entropies
from blt.train import PRECISIONS
from blt.train.device import Bf16Probe
from tests.helpers import random_ids


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


def _probe(speedup: float):
    """A stand-in for `blt.train.device.probe_bf16`: fp32 at 50 GFLOP/s and bf16 ``speedup`` times that."""
    return lambda device="cpu": Bf16Probe(str(device), 50e9, 50e9 * speedup)


@pytest.fixture
def native_bf16(monkeypatch):
    """The machine has native bf16, whatever this one has: the CLI runs bf16 cases by default."""
    monkeypatch.setattr("blt.bench.suite.probe_bf16", _probe(2.4))


def _positive_finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_model_case_results_have_every_field_and_positive_ratios():
    threads = torch.get_num_threads()
    result = run_benchmarks(_micro_suite(), threads=1, skip_emulated=False)
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


def test_cli_writes_json(tmp_path, monkeypatch, capsys, native_bf16):
    monkeypatch.setitem(bench.SUITES, "quick", _micro_suite)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "bench" / "result.json"
    assert main(["bench", "model", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "matmul peak" in printed and "bytes/s" in printed
    result = json.loads(out.read_text())
    assert result["suite"] == "micro" and len(result["model"]) == 2
    assert result["machine"]["device"] == "cpu"  # auto, on a machine without a GPU


def test_cli_refuses_a_missing_gpu_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "model", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "sees no CUDA GPU" in err and err.count("\n") == 1


def test_emulated_bf16_is_left_out_with_its_reason(monkeypatch):
    monkeypatch.setattr("blt.bench.suite.probe_bf16", _probe(1 / 50))
    lines = []
    result = run_benchmarks(_micro_suite(), threads=1, log=lines.append)
    assert result["precisions"] == ["fp32"] and set(result["peak"]) == {"fp32"}
    assert [r["precision"] for r in result["model"]] == ["fp32"]
    assert set(result["model"][0]["fraction_of_peak"]) == {"fp32"}
    reason = result["skipped_precisions"]["bf16"]
    assert "1.0 GFLOP/s" in reason and "50.0 in fp32" in reason and "--precisions fp32,bf16" in reason
    assert lines[0] == reason


def test_native_bf16_is_kept(monkeypatch):
    monkeypatch.setattr("blt.bench.suite.probe_bf16", _probe(2.4))
    result = run_benchmarks(_micro_suite(), threads=1)
    assert result["precisions"] == ["fp32", "bf16"] and result["skipped_precisions"] == {}


def test_cli_precisions_choose_the_precisions_even_emulated(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.SUITES, "quick", _micro_suite)
    monkeypatch.setattr("blt.bench.suite.probe_bf16", _probe(1 / 50))
    out = tmp_path / "result.json"
    assert main(["bench", "model", "--threads", "1", "--precisions", "bf16, fp32,bf16", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["precisions"] == ["bf16", "fp32"] and result["skipped_precisions"] == {}
    assert main(["bench", "model", "--threads", "1", "--precisions", "fp32", "--json", str(out)]) == 0
    assert [r["precision"] for r in json.loads(out.read_text())["model"]] == ["fp32"]


@pytest.mark.parametrize("text", ["fp16", "", ",", "fp32,half"])
def test_cli_rejects_bad_precisions_in_one_line(capsys, text):
    assert main(["bench", "--precisions", text]) == 2
    err = capsys.readouterr().err
    assert "--precisions" in err and err.count("\n") == 1


def test_cli_rejects_bad_threads_in_one_line(capsys):
    assert main(["bench", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads must be >= 1" in err and err.count("\n") == 1


def _micro_patching_suite() -> Suite:
    cfg = EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=16, max_seq_len=64)
    return Suite("micro", (), peak_size=128, peak_repeats=1, patching_cases=(
        PatchingCase("micro", cfg, batch_size=1, seq_len=96, warmup=0, iterations=2),
        PatchingCase("micro", cfg, batch_size=4, seq_len=96, warmup=1, iterations=1),
    ))


def test_patching_case_reports_mb_per_s_flops_and_speedup_over_batch_1():
    result = run_benchmarks(_micro_patching_suite(), cases=["patching"], threads=1, skip_emulated=False)
    assert "model" not in result
    rows = result["patching"]
    assert [(r["batch_size"], r["precision"]) for r in rows] == [(1, "fp32"), (1, "bf16"), (4, "fp32"), (4, "bf16")]
    cfg = _micro_patching_suite().patching_cases[0].config
    for r in rows:
        assert len(r["step_seconds"]) == (2 if r["batch_size"] == 1 else 1)
        assert r["bytes_per_s"] == pytest.approx(r["batch_size"] * 96 / r["step_seconds_median"])
        assert r["forward_flops_per_byte"] == pytest.approx(entropy_model_flops(cfg, seq_len=96).forward)
        assert r["flops_per_s"] == pytest.approx(r["forward_flops_per_byte"] * r["bytes_per_s"])
        assert r["chunk_len"] == EntropyModel(cfg).default_chunk_len(r["batch_size"], PRECISIONS[r["precision"]])
        assert 3.0 < r["mean_patch_size"] < 6.5  # the threshold aims at 4.5 bytes per patch
        assert set(r["fraction_of_peak"]) == {"fp32", "bf16"}
    for batched in rows[2:]:
        single = next(r for r in rows[:2] if r["precision"] == batched["precision"])
        assert batched["speedup_over_batch_1"] == pytest.approx(batched["bytes_per_s"] / single["bytes_per_s"])
    assert all("speedup_over_batch_1" not in r for r in rows[:2])
    assert json.loads(json.dumps(result)) == result


def test_patch_bytes_matches_the_patcher_pieces():
    model = EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=16)).init_weights(seed=0)
    ids = random_ids(3, 50, torch.Generator().manual_seed(0))
    lengths = bench.patching.patch_bytes(model, ids, threshold=5.0, precision="fp32")
    assert lengths.equal(patch_lengths_from_entropies(model.entropies(ids), 5.0))
    assert lengths.sum(dim=1).tolist() == [50] * 3


def test_cli_runs_the_patching_case(tmp_path, monkeypatch, capsys, native_bf16):
    monkeypatch.setitem(bench.SUITES, "quick", _micro_patching_suite)
    out = tmp_path / "patching.json"
    assert main(["bench", "patching", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "patching micro  fp32 4x96" in printed and "MB/s" in printed and "x batch 1" in printed
    assert [r["batch_size"] for r in json.loads(out.read_text())["patching"]] == [1, 1, 4, 4]


def test_patching_case_checks_its_numbers():
    with pytest.raises(ValueError, match="batch_size >= 1"):
        PatchingCase("bad", EntropyModelConfig(), batch_size=0, seq_len=64, warmup=0, iterations=1)
    with pytest.raises(ValueError, match="mean_patch_size must be > 1"):
        PatchingCase("bad", EntropyModelConfig(), batch_size=1, seq_len=64, warmup=0, iterations=1, mean_patch_size=1)


def _micro_training_suite(against_hf: bool) -> Suite:
    case = bench.TrainingCase("micro", _micro_suite().model_cases[0].config, batch_size=2, seq_len=64, patch_size=5,
                              warmup=1, iterations=2)
    return Suite("micro", (), peak_size=128, peak_repeats=1, training_cases=(case,), against_hf=against_hf)


def test_training_case_times_transformers_on_the_same_weights_and_patches():
    pytest.importorskip("transformers")
    result = run_benchmarks(_micro_training_suite(against_hf=True), cases=["training"], threads=1, skip_emulated=False)
    rows = result["training"]
    assert [(r["case"], r["precision"]) for r in rows] == [("micro", "fp32"), ("micro", "bf16")]
    for r in rows:
        assert r["baseline_missing"] is None and r["patch_size"] == 5
        assert r["mean_patch_size"] == pytest.approx(64 / 14)  # BOS, 12 patches of 5, one of 3
        ours, theirs = r["blt"], r["transformers"]
        for numbers in (ours, theirs):
            assert len(numbers["step_seconds"]) == 2
            assert numbers["bytes_per_s"] == pytest.approx(2 * 64 / numbers["step_seconds_median"])
            assert numbers["flops_per_s"] == pytest.approx(r["training_flops_per_byte"] * numbers["bytes_per_s"])
            assert set(numbers["fraction_of_peak"]) == {"fp32", "bf16"}
            assert numbers["peak_step_memory_bytes"] > 0
        ratios = [hf / blt for hf, blt in zip(theirs["step_seconds"], ours["step_seconds"])]
        assert r["speedup"] == pytest.approx(sum(ratios) / 2)  # the median of two
    fp32 = rows[0]
    assert fp32["blt"]["loss"] == pytest.approx(fp32["transformers"]["loss"], abs=1e-4)  # the same model and input
    assert json.loads(json.dumps(result)) == result


def test_training_case_times_the_compiled_model_beside_the_eager_one():
    suite = dataclasses.replace(_micro_training_suite(against_hf=False), compile=True, precisions=("fp32",))
    (r,) = run_benchmarks(suite, cases=["training"], threads=1, skip_emulated=False)["training"]
    eager, compiled = r["blt"], r["compiled"]
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)  # the same model, weights and bytes
    assert len(compiled["step_seconds"]) == 2 and r["compile_seconds"] > 0 and compiled["peak_step_memory_bytes"] > 0
    ratios = [e / c for e, c in zip(eager["step_seconds"], compiled["step_seconds"])]
    assert r["compile_speedup"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert f"{r['compile_speedup']:.2f}x eager (compiling took" in bench.training.format_training_result(r)


def test_training_case_without_transformers_reports_ours_and_says_why(monkeypatch):
    result = run_benchmarks(_micro_training_suite(against_hf=False), cases=["training"], threads=1, skip_emulated=False)
    assert all(r["transformers"] is None and r["speedup"] is None for r in result["training"])
    assert all(r["compiled"] is None and r["compile_speedup"] is None for r in result["training"])  # not asked for
    assert {r["baseline_missing"] for r in result["training"]} == {bench.training.HF_NOT_ASKED}
    assert all(r["blt"]["bytes_per_s"] > 0 for r in result["training"])

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    result = run_benchmarks(_micro_training_suite(against_hf=True), cases=["training"], threads=1, skip_emulated=False)
    assert {r["baseline_missing"] for r in result["training"]} == {bench.training.HF_MISSING}
    assert "transformers: transformers is not installed" in bench.training.format_training_result(result["training"][0])


def test_cli_against_hf_runs_the_training_case(tmp_path, monkeypatch, capsys, native_bf16):
    pytest.importorskip("transformers")
    monkeypatch.setitem(bench.SUITES, "quick", lambda: _micro_training_suite(against_hf=False))
    out = tmp_path / "training.json"
    assert main(["bench", "training", "--against-hf", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training micro  fp32 2x64 (patches of 5)" in printed and "x transformers" in printed
    assert all(r["transformers"] is not None for r in json.loads(out.read_text())["training"])


def test_fixed_patch_lengths_and_training_case_checks():
    assert bench.training.fixed_patch_lengths(2, 12, 5).tolist() == [[1, 5, 5, 1]] * 2
    assert bench.training.fixed_patch_lengths(1, 11, 5).tolist() == [[1, 5, 5]]
    with pytest.raises(ValueError, match="patch_size >= 1"):
        bench.TrainingCase("bad", BLTConfig.preset("tiny"), batch_size=1, seq_len=64, patch_size=0, warmup=0, iterations=1)


def test_peak_step_memory_counts_tensors_alive_together():
    def step():
        a = torch.ones(256, 1024)  # 1 MiB
        b = torch.ones(512, 1024)  # 2 MiB, while a is alive
        del a, b
        torch.ones(128, 1024)  # 0.5 MiB after both are freed
    assert 3 * 2**20 <= bench.training.peak_step_memory(step) < 3 * 2**20 + 2**16


def test_generation_case_reports_engine_speedups():
    pytest.importorskip("transformers")
    suite = Suite("micro", (), peak_size=128, peak_repeats=1, against_hf=True, generation_new_bytes=(8,),
                  generation_calibration_bytes=32)
    lines = []
    result = run_benchmarks(suite, cases=["generation"], threads=1, log=lines.append)
    (row,) = result["generation"]
    assert row["new_bytes"] == 8 and row["engine_equals_full_recompute"] is True
    assert row["transformers"] == "ran" and row["speedup_vs_transformers"] > 0
    assert "x transformers" in bench.generation.format_generation_result(row)
    assert any(line.startswith("generation tiny, 8 new bytes") for line in lines)
