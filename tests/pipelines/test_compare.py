"""`blt compare` end to end on micro configs: steps from the budget, one run per member, table, JSON and plot;
a second run skips finished members and resumes unfinished ones; other settings are refused."""

from __future__ import annotations

import json

import pytest

from blt.bench import torch_threads
from blt.cli import main
from blt.config import BLTConfig
from blt.errors import ConfigError
from blt.flops import blt_cost
from blt.pipelines.compare import CompareOptions, compare
from tests.baselines.conftest import (
    MICRO_BLT_SET,
    MICRO_TOKEN_SET,
    MICRO_TRAIN_SET,
)

BYTES_PER_STEP = 4 * 64  # train.batch_size x train.seq_len of MICRO_TRAIN_SET
PATCH_SIZES = ("2", "3")  # what an entropy model trained for a few steps can be calibrated to on 64-byte rows


def _budget() -> float:
    """One step of the BLT member at patch size 2 (the micro baselines are cheaper per byte: more steps)."""
    cfg = BLTConfig.preset("tiny").with_overrides(MICRO_BLT_SET)
    return 1 * blt_cost(cfg, 2.0, 64).training * BYTES_PER_STEP


def _argv(text_data, entropy_run, out, budget) -> list[str]:
    sets = [f"blt.{v}" for v in MICRO_BLT_SET] + [f"token.{v}" for v in MICRO_TOKEN_SET] + \
        [f"train.{v}" for v in MICRO_TRAIN_SET]
    return ["compare", "--data", str(text_data.path), "--entropy-model", str(entropy_run), "--out", str(out),
            "--budget", repr(budget), "--patch-sizes", *PATCH_SIZES, "--vocab-size", "400", "--evals", "2", "--quiet",
            *[arg for v in sets for arg in ("--set", v)]]


@pytest.fixture(scope="module")
def compared(text_data, entropy_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    with torch_threads(1):
        assert main(_argv(text_data, entropy_run, out, _budget())) == 0
    return out


def test_every_member_trains_for_the_steps_its_budget_buys(compared):
    result = json.loads((compared / "compare.json").read_text())
    plan = json.loads((compared / "compare_plan.json").read_text())
    assert [m["name"] for m in result["members"]] == ["blt-p2", "blt-p3", "bpe", "byte"]
    assert result["bytes_per_step"] == BYTES_PER_STEP
    budget = result["settings"]["budget"]
    for member, planned in zip(result["members"], plan["members"]):
        expected = max(1, round(budget / (planned["planned_training_flops_per_byte"] * BYTES_PER_STEP)))
        assert member["steps"] == planned["steps"] == expected
        run = compared / member["name"]
        assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
        assert 0 < member["val_bpb"] < 12 and member["bytes_per_s"] > 0
        assert member["train_flops"] == pytest.approx(member["steps"] * BYTES_PER_STEP * member["train_flops_per_byte"])
        assert member["curve"] and member["curve"][-1]["step"] == member["steps"]
    blt2, blt3, bpe, byte = result["members"]
    for member in (blt2, blt3):  # planned at the patch size of the batches it trained on, and so it ran
        assert member["bytes_per_step_of_model"] == pytest.approx(member["planned_patch_size"])
        assert member["train_flops_per_byte"] == pytest.approx(member["planned_train_flops_per_byte"])
    assert blt2["steps"] == 1 and bpe["steps"] > byte["steps"] > 1  # BPE tokens cover several bytes
    assert blt3["planned_train_flops_per_byte"] < blt2["planned_train_flops_per_byte"]  # bigger patches, cheaper bytes
    assert blt2["inference_flops_per_byte"] > blt2["train_flops_per_byte"] / 3  # + the entropy model
    assert bpe["inference_flops_per_byte"] == pytest.approx(bpe["train_flops_per_byte"] / 3)
    assert result["measured"]["train_bytes_per_token"] > 1 and (compared / "tokenizer.json").is_file()
    assert len({m["val_bytes"] for m in result["members"]}) == 1  # every model is scored on the same bytes


def test_table_and_plot_are_written(compared):
    table = (compared / "compare.md").read_text()
    assert "| model | val BPB | train FLOPs/byte | inference FLOPs/byte |" in table
    for name in ("blt-p2", "blt-p3", "bpe", "byte"):
        assert f"| {name} |" in table
    assert (compared / "bpb_vs_flops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_running_again_skips_finished_members_and_resumes_the_rest(compared, text_data, entropy_run, capsys):
    metrics = {name: (compared / name / "metrics.jsonl").read_text() for name in ("blt-p2", "byte")}
    (compared / "bpe" / "model.safetensors").unlink()  # as if interrupted after its last checkpoint
    logs = []
    opts = CompareOptions(data=text_data.path, out=compared, entropy_model=entropy_run, budget=_budget(),
                          patch_sizes=(2.0, 3.0), vocab_size=400, evals=2, progress=False,
                          blt_overrides=MICRO_BLT_SET, token_overrides=MICRO_TOKEN_SET, train_overrides=MICRO_TRAIN_SET)
    plan = (compared / "compare_plan.json").read_text()
    compare(opts, log=logs.append)
    assert any("continuing the plan" in line for line in logs)  # not planned again (no calibration either)
    assert not any("training batches it will see" in line for line in logs)
    assert (compared / "compare_plan.json").read_text() == plan
    assert any("blt-p2 finished before" in line for line in logs) and any("bpe resumed" in line for line in logs)
    assert (compared / "bpe" / "model.safetensors").is_file()
    assert {name: (compared / name / "metrics.jsonl").read_text() for name in metrics} == metrics


def test_other_settings_in_the_same_directory_are_refused(compared, text_data, entropy_run, capsys):
    assert main(_argv(text_data, entropy_run, compared, 2 * _budget())) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings (budget)" in err and "--force" in err and len(err.splitlines()) == 1


def test_warmup_fraction_is_a_share_of_each_members_steps(text_data, entropy_run, tmp_path):
    opts = CompareOptions(data=text_data.path, out=tmp_path / "c", entropy_model=entropy_run, budget=3 * _budget(),
                          patch_sizes=(2.0,), baselines=("byte",), evals=1, warmup_fraction=0.5, progress=False,
                          blt_overrides=MICRO_BLT_SET, token_overrides=MICRO_TOKEN_SET,
                          train_overrides=[v for v in MICRO_TRAIN_SET if not v.startswith("warmup_steps=")])
    with torch_threads(1):
        result = compare(opts, log=lambda message: None)
    for member in result["members"]:
        train = json.loads((tmp_path / "c" / member["name"] / "config.json").read_text())["train"]
        assert train["warmup_steps"] == round(0.5 * member["steps"]) and train["steps"] == member["steps"]
    assert len({m["steps"] for m in result["members"]}) == 2  # the members differ, and so do their warmups
    assert "warmup_fraction" in json.loads((tmp_path / "c" / "compare_plan.json").read_text())["settings"]


@pytest.mark.parametrize("extra, message", [
    (["--warmup-fraction", "1"], "--warmup-fraction must be in [0, 1)"),
    (["--warmup-fraction", "0.1", "--set", "train.warmup_steps=3"], "not both"),
    (["--set", "n_layers=2"], "prefix the key with blt., token. or train."),
    (["--budget", "0"], "--budget must be a positive number"),
    (["--patch-sizes", "0.5"], "--patch-sizes must be >= 1"),
])
def test_user_errors_are_one_line(text_data, entropy_run, tmp_path, capsys, extra, message):
    argv = ["compare", "--data", str(text_data.path), "--entropy-model", str(entropy_run), "--out", str(tmp_path / "c"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_blt_members_need_an_entropy_model(text_data, tmp_path):
    with pytest.raises(ConfigError, match="--entropy-model"):
        compare(CompareOptions(data=text_data.path, out=tmp_path / "c"))
