"""`evaluate_run` and `blt eval`: an entropy-patched BLT is patched by the entropies precomputed beside the
data when there are usable ones, so it gets the patches and bits per byte of the trainer's validation
passes on the same rows (which differ from patching each row on the fly); without them it falls back to
its entropy model, and says which."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from blt.cli import main
from blt.data import PrecomputedEntropies, PreparedData
from blt.errors import DataError
from blt.evaluate import evaluate_run
from blt.patching import EntropyModel
from blt.patching.precompute import find_entropies, precompute_entropies
from blt.run import Run, load
from blt.train import Trainer
from blt.train.objectives import BLTObjective
from tests.evaluate.conftest import micro_train_config

SEQ_LEN = 64


@pytest.fixture
def data(data_dir, tmp_path) -> PreparedData:
    """A copy of the evaluation corpus: entropies are written inside it."""
    return PreparedData.open(shutil.copytree(data_dir, tmp_path / "data"))


def precompute(data: PreparedData, blt_run: Path) -> PrecomputedEntropies:
    entropy_model = load(blt_run).entropy_model
    precompute_entropies(data, entropy_model, source=blt_run, progress=False)
    return find_entropies(data, entropy_model)


class PatchRecorder:
    """Records, row by row, the patch lengths a BLT's forward receives (trailing padding removed)."""

    def __init__(self, model: nn.Module):
        self.rows: list[list[int]] = []
        model.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple) -> None:
        _, lengths = args  # (B, T) ids, (B, P) patch lengths
        self.rows.extend([n for n in row if n > 0] for row in lengths.tolist())


def recorded_run(blt_run: Path) -> tuple[Run, PatchRecorder]:
    run = load(blt_run)
    return run, PatchRecorder(run.model)


def trainer_validation(blt_run: Path, data: PreparedData, entropies: PrecomputedEntropies | None,
                       tmp_path: Path) -> tuple[float, list[list[int]]]:
    """The trainer's validation bits per byte over the whole split (batches of 4), and the patches it used."""
    run, patches = recorded_run(blt_run)
    trainer = Trainer(BLTObjective(run.model, run.patcher), data, micro_train_config(), tmp_path / "trainer",
                      progress=False, entropies=entropies)
    return trainer.evaluate(), patches.rows


def no_entropy_model_calls(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the entropy model ran although precomputed entropies were there")

    monkeypatch.setattr(EntropyModel, "entropies", fail)


def test_eval_uses_precomputed_entropies_and_matches_the_trainers_validation(blt_run, data, tmp_path, monkeypatch):
    stored = precompute(data, blt_run)
    val_bpb, val_patches = trainer_validation(blt_run, data, stored, tmp_path)

    run, patches = recorded_run(blt_run)
    logs: list[str] = []
    with monkeypatch.context() as patch:
        no_entropy_model_calls(patch)
        result = evaluate_run(run, data, seq_len=SEQ_LEN, batch_size=8, log=logs.append)
    assert logs == [f"entropies: precomputed (fp32) in {stored.path}"] and result.entropies == "precomputed"
    assert patches.rows[:len(val_patches)] == val_patches  # the trainer's last batch has fewer padding rows
    assert all(row == [1] for row in patches.rows[len(val_patches):])  # [BOS, PAD, ...]
    assert result.bits_per_byte == pytest.approx(val_bpb, rel=1e-6)

    # On the fly, rows that start inside a document see less context: other patches, other BPB.
    run, on_the_fly = recorded_run(blt_run)
    logs.clear()
    fly = evaluate_run(run, data, seq_len=SEQ_LEN, batch_size=8, precomputed=False, log=logs.append)
    assert logs == [] and fly.entropies == "entropy model"
    differ = sum(a != b for a, b in zip(on_the_fly.rows, patches.rows))
    assert len(on_the_fly.rows) == len(patches.rows) and differ >= len(val_patches) // 4
    assert fly.bits_per_byte != pytest.approx(val_bpb, rel=1e-4)


def test_eval_falls_back_to_the_entropy_model_without_usable_precomputed_entropies(blt_run, data, tmp_path):
    val_bpb, val_patches = trainer_validation(blt_run, data, None, tmp_path)

    run, patches = recorded_run(blt_run)
    logs: list[str] = []
    result = evaluate_run(run, data, seq_len=SEQ_LEN, batch_size=8, log=logs.append)
    assert len(logs) == 1 and logs[0].startswith("entropies: computed by the entropy model on each row (none precomputed")
    assert f"blt patch --data {data.path}" in logs[0] and result.entropies == "entropy model"
    assert patches.rows[:len(val_patches)] == val_patches
    assert result.bits_per_byte == pytest.approx(val_bpb, rel=1e-6)

    stored = precompute(data, blt_run)
    part = min(stored.path.glob("val-*.f16"))
    part.write_bytes(bytes(part.stat().st_size))
    logs.clear()
    corrupt = evaluate_run(load(blt_run), data, seq_len=SEQ_LEN, batch_size=8, log=logs.append)
    assert len(logs) == 1 and logs[0].startswith("entropies: computed by the entropy model on each row, since ")
    assert "is corrupt" in logs[0] and corrupt.entropies == "entropy model"
    assert corrupt.bits_per_byte == result.bits_per_byte


def test_runs_without_entropy_patching_say_nothing_of_entropies(entropy_run, token_run, data):
    precompute(data, entropy_run)  # the entropy model's own run does not patch
    for run_dir in (entropy_run, token_run):
        logs: list[str] = []
        result = evaluate_run(load(run_dir), data, seq_len=SEQ_LEN, max_batches=1, log=logs.append)
        assert logs == [] and result.entropies is None and result.mean_patch_size is None


def test_blt_eval_reports_the_trainers_validation_bpb(blt_run, data, tmp_path, capsys):
    stored = precompute(data, blt_run)
    run = load(blt_run)
    cfg = micro_train_config()  # batch_size 4, eval_batches 2
    trainer = Trainer(BLTObjective(run.model, run.patcher), data, cfg, tmp_path / "trainer", progress=False,
                      entropies=stored)
    val_bpb = trainer.evaluate(cfg.eval_batches)

    args = ["eval", str(blt_run), "--data", str(data.path), "--batch-size", str(cfg.batch_size),
            "--batches", str(cfg.eval_batches), "--json", str(tmp_path / "e.json")]
    assert main(args) == 0
    assert f"entropies: precomputed (fp32) in {stored.path}" in capsys.readouterr().out
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["entropies"] == "precomputed" and result["sequences"] == cfg.batch_size * cfg.eval_batches
    assert result["bits_per_byte"] == pytest.approx(val_bpb, rel=1e-6)

    assert main([*args, "--no-precomputed"]) == 0
    assert "entropies:" not in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["entropies"] == "entropy model"
    assert main(["eval", str(blt_run), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_precomputed_entropies_cover_the_validation_split(blt_run, data):
    stored = precompute(data, blt_run)
    val = data.split("val")
    assert len(stored.split("val")) == len(val) > 0
    assert all(len(stored.split("val")[i]) == len(val[i]) + 2 for i in range(len(val)))
    assert torch.isfinite(torch.from_numpy(stored.split("val")[0].astype("float32"))).all()


def test_a_run_trained_in_bf16_is_evaluated_in_bf16_as_its_validation_passes(blt_run, data, tmp_path, capsys):
    bf16_run = shutil.copytree(blt_run, tmp_path / "bf16_run")
    record = json.loads((bf16_run / "config.json").read_text())
    record["train"]["precision"] = "bf16"
    (bf16_run / "config.json").write_text(json.dumps(record))
    stored = precompute(data, bf16_run)
    run = load(bf16_run)
    cfg = dataclasses.replace(micro_train_config(), precision="bf16")
    trainer = Trainer(BLTObjective(run.model, run.patcher), data, cfg, tmp_path / "trainer", progress=False,
                      entropies=stored)
    val_bpb = trainer.evaluate(cfg.eval_batches)

    default = evaluate_run(load(bf16_run), data, seq_len=SEQ_LEN, batch_size=cfg.batch_size,
                           max_batches=cfg.eval_batches, log=lambda _: None)
    fp32 = evaluate_run(load(bf16_run), data, seq_len=SEQ_LEN, batch_size=cfg.batch_size,
                        max_batches=cfg.eval_batches, precision="fp32", log=lambda _: None)
    assert default.precision == "bf16" and fp32.precision == "fp32"
    assert default.bits_per_byte == pytest.approx(val_bpb, rel=1e-6)
    assert fp32.bits_per_byte != pytest.approx(val_bpb, rel=1e-6)  # bf16 rounding shows
    assert fp32.bits_per_byte == pytest.approx(val_bpb, rel=2e-2)
    with pytest.raises(ValueError, match="precision must be one of"):
        evaluate_run(run, data, seq_len=SEQ_LEN, precision="fp16")

    args = ["eval", str(bf16_run), "--data", str(data.path), "--batch-size", "4", "--batches", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{default.bits_per_byte:.4f}" in out and "(bf16)" in out
    assert main([*args, "--precision", "fp32", "--json", str(tmp_path / "e.json")]) == 0
    assert "(fp32)" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["bits_per_byte"] == pytest.approx(fp32.bits_per_byte, rel=1e-9)


def test_eval_opens_and_verifies_only_the_split_it_reads(blt_run, data):
    stored = precompute(data, blt_run)
    train_part = min(stored.path.glob("train-*.f16"))
    train_part.write_bytes(bytes(train_part.stat().st_size))  # right size, wrong bytes: only a sha256 sees it

    logs: list[str] = []
    on_val = evaluate_run(load(blt_run), data, seq_len=SEQ_LEN, max_batches=1, log=logs.append)
    assert logs == [f"entropies: precomputed (fp32) in {stored.path}"] and on_val.entropies == "precomputed"
    logs.clear()
    on_train = evaluate_run(load(blt_run), data, seq_len=SEQ_LEN, max_batches=1, split="train", log=logs.append)
    assert len(logs) == 1 and "is corrupt" in logs[0] and on_train.entropies == "entropy model"

    val_only = find_entropies(data, load(blt_run).entropy_model, splits=("val",))
    assert len(val_only.split("val")) == len(data.split("val").lengths)
    with pytest.raises(DataError, match="split 'train' of .* was not opened"):
        val_only.split("train")
    with pytest.raises(DataError, match="unknown split"):
        find_entropies(data, load(blt_run).entropy_model, splits=("test",))
