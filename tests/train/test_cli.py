"""The training commands end to end through `blt.cli.main`: train-entropy -> train (calibrated) -> eval -> generate."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from blt.cli import main

ENTROPY_SET = ["dim=32", "n_layers=1", "n_heads=2", "window=32", "max_seq_len=64"]
BLT_SET = ["encoder.dim=32", "encoder.n_layers=1", "encoder.n_heads=2", "encoder.window=32", "global_model.dim=64",
           "global_model.n_layers=1", "global_model.n_heads=2", "decoder.dim=32", "decoder.n_layers=1",
           "decoder.n_heads=2", "decoder.window=32", "hash.rows=257", "max_seq_len=64"]
TRAIN_SET = ["train.batch_size=4", "train.seq_len=64", "train.eval_batches=2", "train.log_every=1"]


def sets(values):
    return [arg for v in values for arg in ("--set", v)]


@pytest.fixture(scope="module")
def runs(text_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = str(text_data.path)
    assert main(["train-entropy", "--data", data, "--out", str(root / "ent"), "--steps", "4", "--quiet",
                 *sets(ENTROPY_SET + TRAIN_SET)]) == 0
    assert main(["train", "--data", data, "--entropy-model", str(root / "ent"), "--out", str(root / "blt"),
                 "--steps", "3", "--target-patch-size", "3", "--quiet", *sets(BLT_SET + TRAIN_SET)]) == 0
    return root


def test_train_writes_a_self_contained_run(runs, capsys):
    config = json.loads((runs / "blt" / "config.json").read_text())
    assert config["kind"] == "blt" and config["model"]["patching"]["threshold"] is not None
    assert config["model"]["patching"]["target_patch_size"] == 3
    for name in ("model.safetensors", "metrics.jsonl", "loss.png", "entropy_model/model.safetensors"):
        assert (runs / "blt" / name).is_file(), name
    records = [json.loads(line) for line in (runs / "blt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "val_bpb" in records[-1] and "mean_patch_size" in records[0]


def test_eval_and_generate(runs, capsys, tmp_path):
    assert main(["eval", str(runs / "blt"), "--batches", "2", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert 0 < result["bits_per_byte"] < 20 and result["mean_patch_size"] > 1
    assert main(["generate", str(runs / "blt"), "--prompt", "The", "--max-bytes", "5", "--out", str(tmp_path / "g.bin")]) == 0
    assert len((tmp_path / "g.bin").read_bytes()) <= 5


def test_resume_continues_to_more_steps(runs, text_data):
    assert main(["train-entropy", "--data", str(text_data.path), "--out", str(runs / "ent"), "--resume",
                 "--steps", "6", "--quiet"]) == 0
    records = [json.loads(line) for line in (runs / "ent" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert json.loads((runs / "ent" / "config.json").read_text())["train"]["steps"] == 6  # what it trained to


def test_resume_in_bf16_is_recorded_and_evaluated_in_bf16(runs, text_data, tmp_path, capsys):
    run = shutil.copytree(runs / "blt", tmp_path / "blt")
    assert main(["train", "--data", str(text_data.path), "--out", str(run), "--resume", "--steps", "4",
                 "--precision", "bf16", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", "1"]) == 0
    assert "(bf16)" in capsys.readouterr().out


def test_resume_with_compile_trains_compiled_and_records_it(runs, text_data, tmp_path):
    run = shutil.copytree(runs / "ent", tmp_path / "ent")
    steps = json.loads((run / "config.json").read_text())["train"]["steps"]
    torch._dynamo.reset()
    assert main(["train-entropy", "--data", str(text_data.path), "--out", str(run), "--resume",
                 "--steps", str(steps + 2), "--compile", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the training forward went through dynamo
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-2:] == [steps + 1, steps + 2] and all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "{data}", "--out", "{tmp}/x", "--patching", "entropy"], "needs --entropy-model"),
        (["train", "--data", "{tmp}/nowhere", "--out", "{tmp}/x"], "nowhere"),
        (["train-entropy", "--data", "{data}", "--out", "{runs}/ent"], "already exists"),
        (["train", "--data", "{data}", "--entropy-model", "{runs}/blt", "--out", "{tmp}/y"], "is a BLT run"),
        (["eval", "{tmp}"], "not a blt run directory"),
        (["generate", "{runs}/ent", "--prompt", "x", "--full-recompute"], "--full-recompute is the reference path of BLT"),
        (["train-entropy", "--data", "{data}", "--out", "{tmp}/z", "--set", "nope=1"], "unknown config key"),
    ],
)
def test_user_errors_are_one_line_exit_2(runs, text_data, tmp_path, capsys, argv, message):
    argv = [a.format(data=text_data.path, tmp=tmp_path, runs=runs) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
