"""No run is ever lost: each training command resumes a finished run without changing it, says when it has
nothing to resume from, checkpoints on a timer, checks its data before the first step, and a run's final
weights are checked (shape and sha256) before they are used."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blt.cli import main
from blt.data import PreparedData, assign_splits, prepare
from blt.errors import CheckpointError
from blt.train import keep_metrics_through, read_metrics
from blt.train.checkpoint import CHECKSUMS_FILE, list_checkpoints
from tests.evaluate.conftest import pseudo_words
from tests.train.conftest import synthetic_documents
from tests.train.test_cli import BLT_SET, ENTROPY_SET, TRAIN_SET, sets
from tests.train.test_train import make_trainer

TOKEN_SET = ["dim=64", "n_layers=1", "n_heads=2"]
REPO = Path(__file__).resolve().parents[2]


def tree(path: Path) -> dict[str, str]:
    """Relative file name -> sha256 of every file under ``path``."""
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def command(kind: str, data: Path, out: Path, root: Path) -> list[str]:
    """The argv of a two-step training run of ``kind`` into ``out``."""
    common = ["--data", str(data), "--out", str(out), "--steps", "2", "--quiet"]
    if kind == "train-entropy":
        return ["train-entropy", *common, *sets(ENTROPY_SET + TRAIN_SET)]
    if kind == "train":
        return ["train", *common, "--entropy-model", str(root / "ent"), "--target-patch-size", "3",
                *sets(BLT_SET + TRAIN_SET)]
    if kind == "train-baseline":
        return ["train-baseline", "--kind", "bpe", "--vocab-size", "300", *common, *sets(TOKEN_SET + TRAIN_SET)]
    return ["finetune", str(root / "ent"), "--out", str(out), "--steps", "2", "--examples", "20", "--quiet",
            "--words", str(root / "words.txt"), "--set", "train.batch_size=4", "--set", "train.seq_len=64", "--set", "train.eval_batches=1"]


@pytest.fixture(scope="module")
def root(text_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    (root / "words.txt").write_text("\n".join(pseudo_words()) + "\n")
    assert main(command("train-entropy", text_data.path, root / "ent", root)) == 0
    return root


@pytest.mark.parametrize("kind", ["train-entropy", "train", "train-baseline", "finetune"])
def test_resuming_a_finished_run_changes_nothing(kind, text_data, root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = command(kind, text_data.path, out, root)
    assert main(argv) == 0
    before = tree(out)
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "already complete at 2 steps" in printed and "validation" in printed, printed
    assert tree(out) == before
    # raising --steps continues it
    more = [a if a != "2" else "3" for a in argv] + ["--resume"]
    assert main(more) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")][-1] == 3


def test_a_kill_after_the_last_checkpoint_is_finished_by_a_resume(text_data, root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = command("train", text_data.path, out, root)
    assert main(argv) == 0
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").unlink()  # killed between the final checkpoint and the final weights
    assert main(argv + ["--resume"]) == 0
    assert (out / "model.safetensors").read_bytes() == weights
    assert main(["eval", str(out), "--batches", "1"]) == 0


def test_resume_without_a_checkpoint_says_so_and_starts_clean(text_data, root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = command("train-entropy", text_data.path, out, root)
    assert main(argv) == 0
    shutil.rmtree(out / "checkpoints")
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2  # it has final weights: starting over would overwrite them
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has final weights but no usable checkpoint" in err and "--force" in err
    (out / "model.safetensors").unlink()  # a run killed before its first checkpoint
    assert main(argv + ["--resume"]) == 0
    assert "no usable checkpoint" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]  # not appended to the old ones


def test_an_interrupted_setup_is_started_again_with_force(text_data, root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = command("train", text_data.path, out, root)
    assert main(argv) == 0
    for name in ("config.json", "checkpoints", "metrics.jsonl", "loss.png", "model.safetensors", "checksums.json"):
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()  # a setup killed before
    assert sorted(p.name for p in out.iterdir()) == ["entropy_model"]  # its config.json, which comes last
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "setup of" in err and "was interrupted" in err and "--force" in err
    assert main(argv + ["--force"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(command("train", text_data.path, tmp_path / "other", root) + ["--force"]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_timed_checkpoints(text_data, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 61))  # each reading of the clock is 61 s after the one before
    monkeypatch.setattr("blt.train.loop.time.monotonic", lambda: float(next(clock)))
    trainer = make_trainer(text_data, tmp_path / "timed", checkpoint_every=0, checkpoint_minutes=2.0, steps=8)
    trainer.fit()
    # the timer starts when fit does; a step reads it once, a checkpoint once more: 2 minutes pass every other step
    assert [int(p.name[5:]) for p in list_checkpoints(tmp_path / "timed" / "checkpoints")] == [2, 4, 6, 8]
    untimed = make_trainer(text_data, tmp_path / "untimed", checkpoint_every=0, checkpoint_minutes=0.0, steps=8)
    untimed.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "untimed" / "checkpoints")] == ["step_00000008"]


def test_prepare_gives_validation_a_document_whenever_it_can(tmp_path):
    names = [f"doc{i}".encode() for i in range(3)]
    assert "val" in assign_splits(names, 0, 0.01) and "train" in assign_splits(names, 0, 0.99)
    assert assign_splits(names, 0, 0.0) == ["train"] * 3 and assign_splits(names[:1], 0, 0.5) in (["train"], ["val"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in synthetic_documents(5, seed=1).items():
        (corpus / name).write_bytes(text)
    manifest = prepare([str(corpus)], tmp_path / "prepared", val_fraction=0.01, progress=False)
    assert manifest.splits["val"].documents == 1 and manifest.splits["train"].documents == 4


def test_training_checks_the_validation_split_before_step_1(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in synthetic_documents(20, seed=2).items():
        (corpus / name).write_bytes(text)
    prepare([str(corpus)], tmp_path / "prepared", val_fraction=0.0, progress=False)
    out = tmp_path / "ent"
    argv = ["train-entropy", "--data", str(tmp_path / "prepared"), "--out", str(out), "--steps", "2", "--quiet",
            *sets(ENTROPY_SET + TRAIN_SET)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "split 'val'" in err and "has no documents" in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before the run directory was made


def test_generate_takes_the_bytes_typed_on_the_command_line(text_data, root, tmp_path):
    out = tmp_path / "g.bin"
    prompt, stop = "caf\udce9 ", "\udcff"  # how Python hands over b"caf\xe9 " and b"\xff" from argv
    blt = tmp_path / "blt"
    assert main(command("train", text_data.path, blt, root)) == 0
    assert main(["generate", str(blt), "--prompt", prompt, "--stop", stop, "--max-bytes", "4", "--out", str(out)]) == 0
    assert len(out.read_bytes()) <= 4


def test_a_config_that_does_not_match_its_weights_is_refused_before_building(root, tmp_path, capsys, monkeypatch):
    run = shutil.copytree(root / "ent", tmp_path / "ent")
    config = json.loads((run / "config.json").read_text())
    config["model"]["dim"] = 65536
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("blt.run.EntropyModel", None)  # building it for real would fail differently
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match" in err and "65536" in err, err


def test_final_weights_carry_a_checked_sha256(root, tmp_path, capsys):
    run = shutil.copytree(root / "ent", tmp_path / "ent")
    record = json.loads((run / CHECKSUMS_FILE).read_text())["model.safetensors"]
    assert record["bytes"] == (run / "model.safetensors").stat().st_size
    weights = bytearray((run / "model.safetensors").read_bytes())
    weights[-3] ^= 0x10  # one flipped bit in the last tensor's data
    (run / "model.safetensors").write_bytes(bytes(weights))
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fails its sha256 check" in err


def test_a_partial_last_metrics_line_is_read_and_removed_by_a_resume(text_data, tmp_path):
    trainer = make_trainer(text_data, tmp_path / "run", steps=4)
    trainer.fit()
    metrics = tmp_path / "run" / "metrics.jsonl"
    complete = metrics.read_text()
    with open(metrics, "a") as f:
        f.write('{"step": 5, "loss": 2.3')  # killed while appending
    assert [r["step"] for r in read_metrics(metrics)] == [1, 2, 3, 4]
    keep_metrics_through(metrics, 4)
    assert metrics.read_text() == complete
    metrics.write_text(complete.replace('{"step": 2', 'garbage {"step": 2'))
    with pytest.raises(CheckpointError, match="line 2 is not a metrics record"):
        read_metrics(metrics)


def test_finetune_resumes_without_its_pretrained_run(text_data, root, tmp_path):
    source = shutil.copytree(root / "ent", tmp_path / "pretrained")
    out = tmp_path / "ft"
    argv = ["finetune", str(source), "--out", str(out), "--steps", "2", "--examples", "20", "--quiet",
            "--words", str(root / "words.txt"), "--set", "train.batch_size=4", "--set", "train.seq_len=64", "--set", "train.eval_batches=1"]
    assert main(argv) == 0
    shutil.rmtree(source)
    assert main([a if a != "2" else "3" for a in argv] + ["--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 3
    assert PreparedData.open(out / "data").split("val").lengths.size >= 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_at_a_checkpoint(signum, text_data, tmp_path):
    """What a scheduler (SIGTERM) or Ctrl-C (SIGINT) does: the step finishes, a checkpoint, exit 130; the
    resumed run ends where an uninterrupted one does."""
    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "blt", "train-entropy", "--data", str(text_data.path), "--out", str(out),
                "--steps", "40", "--quiet", "--device", "cpu", *sets(ENTROPY_SET + TRAIN_SET),
                "--set", "train.checkpoint_every=0", "--set", "train.checkpoint_minutes=0"]

    out = tmp_path / "run"
    proc = subprocess.Popen(argv(out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(read_metrics(out / "metrics.jsonl")) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    saved = list_checkpoints(out / "checkpoints")
    assert len(saved) == 1 and "stopped at step" in err and "continue with --resume" in err
    assert int(saved[0].name[5:]) == read_metrics(out / "metrics.jsonl")[-1]["step"] < 40
    subprocess.run(argv(out) + ["--resume"], cwd=REPO, check=True, capture_output=True)
    subprocess.run(argv(tmp_path / "full"), cwd=REPO, check=True, capture_output=True)
    losses = lambda run: [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert losses(out) == losses(tmp_path / "full")


def test_a_signal_during_the_last_step_still_stops_the_caller(text_data, tmp_path, capsys):
    """A pipeline of runs (`blt compare`) must stop too when the signal comes as a run ends: the run finishes
    and keeps its final weights, and `fit` raises KeyboardInterrupt instead of returning."""
    import os

    before = signal.getsignal(signal.SIGTERM)
    trainer = make_trainer(text_data, tmp_path / "run", steps=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(on_step=lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 3 else None)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is given back
    assert make_trainer(text_data, tmp_path / "run", steps=3).fit(resume=True).already_complete


def test_weights_a_kill_left_unmatched_are_written_again_by_a_resume(text_data, tmp_path):
    trainer = make_trainer(text_data, tmp_path / "run", steps=4)
    trainer.fit()
    weights = tmp_path / "run" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:-8] + bytes(8))  # the record names the new file, the old one is still in place
    resumed = make_trainer(text_data, tmp_path / "run", steps=4)
    assert resumed.fit(resume=True).already_complete
    assert weights.read_bytes() == whole


def test_a_model_too_big_for_the_machine_is_refused_before_anything_is_made(text_data, tmp_path, capsys):
    out = tmp_path / "ent"
    assert main(["train-entropy", "--data", str(text_data.path), "--out", str(out), "--steps", "2", "--quiet",
                 *sets(ENTROPY_SET + TRAIN_SET), "--set", "dim=1000000", "--set", "n_heads=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameters" in err and "choose smaller widths" in err, err
    assert not out.exists()


def test_a_run_from_before_shuffled_rows_resumes_in_stream_order(text_data, tmp_path):
    run = tmp_path / "old"
    argv = ["train-entropy", "--data", str(text_data.path), "--out", str(run), "--steps", "3", "--quiet",
            *sets(ENTROPY_SET + TRAIN_SET), "--set", "train.row_order=stream", "--set", "train.checkpoint_every=1"]
    assert main(argv) == 0
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    shutil.rmtree(run / "checkpoints" / "step_00000003")  # as if killed after step 2's checkpoint
    (run / "model.safetensors").unlink()
    config = json.loads((run / "config.json").read_text())
    del config["train"]["row_order"]  # what a run written before rows were shuffled records
    (run / "config.json").write_text(json.dumps(config))
    for state_file in (run / "checkpoints").glob("*/state.json"):
        state = json.loads(state_file.read_text())
        del state["data"]["order"], state["data"]["rows"]
        state_file.write_text(json.dumps(state))
    assert main(argv[:8] + ["--resume"]) == 0  # no --set: the order comes from what the run recorded
    assert [r["loss"] for r in read_metrics(run / "metrics.jsonl")] == losses
    assert json.loads((run / "config.json").read_text())["train"]["row_order"] == "stream"
