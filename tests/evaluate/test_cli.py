"""`blt eval-char` and `blt finetune` end to end on micro runs."""

from __future__ import annotations

import json
import re

import torch

from blt.cli import main
from blt.data import PreparedData
from blt.evaluate.char_tasks import load_split
from blt.evaluate.noise import NOISES
from blt.pipelines.finetune import WORDS_FILE
from blt.train.checkpoint import load_tensors


def test_eval_char_prints_tables_and_writes_json_and_chart(blt_run, entropy_run, words_file, data_dir, tmp_path, capsys):
    out_json, out_png = tmp_path / "ec.json", tmp_path / "ec.png"
    code = main(["eval-char", str(blt_run), "--baseline", str(entropy_run), "--tasks", "spell", "compare_numbers",
                 "--examples", "3", "--shots", "1", "--words", str(words_file), "--noise", "--passages", "4",
                 "--json", str(out_json), "--png", str(out_png), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    names = list(report["models"])
    assert len(names) == 2 and [report["models"][n]["kind"] for n in names] == ["blt", "entropy_model"]
    for name in names:
        tasks = report["models"][name]["tasks"]
        assert list(tasks) == ["spell", "compare_numbers", "average"]
        assert all(0 <= s["ranking_accuracy"] <= 1 and 0 <= s["exact_match"] <= 1 for s in tasks.values())
        assert tasks["average"]["examples"] == 6
        noise = report["models"][name]["noise"]
        assert [r["noise"] for r in noise] == ["clean", *NOISES] and all(r["bits_per_byte"] > 0 for r in noise)
    assert report["chance"]["compare_numbers"] == 0.5
    assert report["settings"]["words"] == str(words_file) and report["settings"]["passages"] == 4
    assert re.search(r"^spell\s+3\s+25\.0\s", printed, re.MULTILINE) and re.search(r"^average\s", printed, re.MULTILINE)
    assert re.search(r"^antspeak\s+\d+\.\d{3}\s", printed, re.MULTILINE)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_char_defaults_write_into_the_run(blt_run, words_file):
    assert main(["eval-char", str(blt_run), "--tasks", "contains_char", "--examples", "2", "--shots", "0",
                 "--words", str(words_file), "--no-greedy", "--quiet"]) == 0
    report = json.loads((blt_run / "eval_char.json").read_text())
    assert report["models"][blt_run.name]["tasks"]["contains_char"]["exact_match"] is None
    assert (blt_run / "eval_char.png").is_file()


def test_eval_char_user_errors_exit_2(tmp_path, blt_run, capsys):
    assert main(["eval-char", str(tmp_path / "missing")]) == 2
    assert main(["eval-char", str(blt_run), "--no-tasks"]) == 2
    assert main(["eval-char", str(blt_run), "--words", str(tmp_path / "nowords.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("blt eval-char: error:") for line in err)


def test_finetune_trains_on_train_words_only(blt_run, words_file, tmp_path, capsys):
    out = tmp_path / "tuned"
    args = ["finetune", str(blt_run), "--out", str(out), "--steps", "2", "--examples", "30", "--tasks", "spell",
            "swap_word", "--shots", "1", "--words", str(words_file), "--set", "train.batch_size=2", "--quiet"]
    assert main(args) == 0
    assert "finetuned" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())
    assert record["kind"] == "blt" and record["train"]["steps"] == 2 and record["train"]["batch_size"] == 2
    assert record["finetune"]["init"] == str(blt_run) and (out / "entropy_model" / "model.safetensors").is_file()
    before, after = load_tensors(blt_run / "model.safetensors"), load_tensors(out / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    split, _ = load_split(out / WORDS_FILE)
    data = PreparedData.open(out / "data")
    text = b"".join(bytes(s[i]) for name in ("train", "val") for s in [data.split(name)] for i in range(len(s))).decode()
    seen = set(re.findall(r"[a-z]+", text))
    assert set(split.train) & seen and not set(split.held_out) & seen  # held-out words never trained on

    # The finetuned run is evaluated on the saved split's held-out words.
    assert main(["eval-char", str(out), "--tasks", "spell", "--examples", "2", "--shots", "1", "--no-greedy",
                 "--quiet", "--json", str(tmp_path / "tuned.json"), "--png", str(tmp_path / "tuned.png")]) == 0
    assert WORDS_FILE in json.loads((tmp_path / "tuned.json").read_text())["settings"]["words"]

    assert main(args) == 2  # the run exists: no silent overwrite
    assert "already exists" in capsys.readouterr().err
    again = tmp_path / "again"  # the same examples fall in the same split (names don't carry a temporary path)
    assert main([*args[:3], str(again), *args[4:]]) == 0
    for name in ("train", "val"):
        assert PreparedData.open(again / "data").split(name).lengths.tolist() == data.split(name).lengths.tolist()
    assert main(["finetune", str(blt_run), "--out", str(tmp_path / "t2"), "--set", "encoder.dim=8"]) == 2


def test_finetune_resume_continues_from_the_checkpoint(blt_run, words_file, tmp_path):
    out = tmp_path / "tuned"
    base = ["finetune", str(blt_run), "--out", str(out), "--examples", "40", "--tasks", "delete_char", "--shots", "0",
            "--words", str(words_file), "--set", "train.batch_size=2", "--quiet"]
    assert main(base + ["--steps", "2"]) == 0
    assert main(base + ["--resume", "--steps", "3"]) == 0  # one more step than was trained
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert main(["finetune", str(blt_run), "--out", str(blt_run), "--resume"]) == 2  # not a finetuning run


def test_token_model_baselines_are_scored_and_finetuned(blt_run, token_run, words_file, tmp_path):
    out_json = tmp_path / "ec.json"
    assert main(["eval-char", str(blt_run), "--baseline", str(token_run), "--tasks", "spell_inverse", "--examples",
                 "2", "--shots", "1", "--words", str(words_file), "--quiet", "--json", str(out_json), "--png",
                 str(tmp_path / "ec.png")]) == 0
    report = json.loads(out_json.read_text())
    assert [m["kind"] for m in report["models"].values()] == ["blt", "token_model"]
    tuned = tmp_path / "tuned_tokens"
    assert main(["finetune", str(token_run), "--out", str(tuned), "--steps", "1", "--examples", "40", "--tasks",
                 "contains_char", "--shots", "0", "--words", str(words_file), "--set", "train.batch_size=2",
                 "--quiet"]) == 0
    record = json.loads((tuned / "config.json").read_text())
    assert record["kind"] == "token_model" and record["tokenizer"] == {"kind": "byte"}
    before, after = load_tensors(token_run / "model.safetensors"), load_tensors(tuned / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
