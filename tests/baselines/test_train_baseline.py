"""`blt train-baseline` end to end: BPE and byte runs that `blt.load`, `blt eval` and `blt flops --run` read,
resume, one-line user errors; `token_logprob` and `token_greedy` for the evaluations."""

from __future__ import annotations

import json

import pytest
import torch

import blt
from blt.bench import torch_threads
from blt.cli import main
from blt.evaluate.token_scoring import token_greedy, token_logprob
from blt.flops import run_cost
from blt.run import load
from blt.tokenizer import BOS_ID, OFFSET
from tests.baselines.conftest import MICRO_TOKEN_SET, MICRO_TRAIN_SET


def sets(values):
    return [arg for v in values for arg in ("--set", v)]


TRAIN_SETS = sets(MICRO_TOKEN_SET + [f"train.{v}" for v in MICRO_TRAIN_SET])


@pytest.fixture(scope="module")
def runs(text_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    data = str(text_data.path)
    with torch_threads(1):
        assert main(["train-baseline", "--kind", "bpe", "--data", data, "--out", str(root / "bpe"), "--steps", "3",
                     "--vocab-size", "400", "--quiet", *TRAIN_SETS]) == 0
        assert main(["train-baseline", "--kind", "byte", "--data", data, "--out", str(root / "byte"), "--steps", "3",
                     "--quiet", *TRAIN_SETS]) == 0
    return root


def test_runs_record_their_tokenizer_and_bytes_per_token(runs):
    bpe = json.loads((runs / "bpe" / "config.json").read_text())
    assert bpe["kind"] == "token_model" and bpe["tokenizer"]["kind"] == "bpe"
    assert bpe["model"]["vocab_size"] == bpe["tokenizer"]["vocab_size"] <= 400
    assert 2 < bpe["tokenizer"]["val_bytes_per_token"] < 6 and (runs / "bpe" / "tokenizer.json").is_file()
    byte = json.loads((runs / "byte" / "config.json").read_text())
    assert byte["tokenizer"] == {"kind": "byte", "vocab_size": 260, "val_bytes_per_token": 1.0,
                                 "val_bytes": bpe["tokenizer"]["val_bytes"]}
    assert not (runs / "byte" / "tokenizer.json").exists()
    records = [json.loads(line) for line in (runs / "bpe" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and "val_bpb" in records[-1]
    assert all(r["targets"] / r["tokens"] > 2 for r in records)  # bytes per token on the training batches


def test_load_eval_and_flops_read_the_runs(runs, tmp_path, capsys):
    run = blt.load(runs / "bpe")
    assert run.kind == "token_model" and run.tokenizer.kind == "bpe" and run.tokenizer.vocab_size == run.config.vocab_size
    assert main(["eval", str(runs / "bpe"), "--batches", "2", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert 0 < result["bits_per_byte"] < 10 and 2 < result["bytes_per_token"] < 6
    last = [json.loads(line) for line in (runs / "bpe" / "metrics.jsonl").read_text().splitlines()][-1]
    assert main(["eval", str(runs / "bpe"), "--batches", "2", "--seq-len", "64", "--json", str(tmp_path / "f.json")]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["bits_per_byte"] == pytest.approx(last["val_bpb"], abs=0.3)
    assert main(["flops", "--run", str(runs / "byte")]) == 0
    assert "byte" in capsys.readouterr().out
    cost = run_cost(runs / "bpe")
    assert cost.bytes_per_step == pytest.approx(json.loads((runs / "bpe" / "config.json").read_text())["tokenizer"]["val_bytes_per_token"])


def test_resume_continues_to_more_steps(runs, text_data):
    assert main(["train-baseline", "--kind", "bpe", "--data", str(text_data.path), "--out", str(runs / "bpe"), "--resume",
                 "--steps", "4", "--quiet"]) == 0
    records = [json.loads(line) for line in (runs / "bpe" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]


@pytest.mark.parametrize("argv, message", [
    (["--kind", "byte", "--vocab-size", "300"], "fixed vocabulary of 260"),
    (["--kind", "bpe", "--vocab-size", "100"], "at least 260"),
    (["--kind", "bpe", "--set", "vocab_size=300"], "with --vocab-size"),
    (["--kind", "bpe", "--tokenizer", "{tmp}/missing.json"], "does not exist"),
    (["--kind", "bpe", "--tokenizer", "{tmp}/t.json", "--vocab-size", "300"], "not both"),
    (["--kind", "bpe", "--preset", "huge"], "unknown baseline preset"),
])
def test_user_errors_are_one_line_exit_2(text_data, tmp_path, capsys, argv, message):
    argv = ["train-baseline", "--data", str(text_data.path), "--out", str(tmp_path / "x"), "--steps", "1", "--quiet",
            *[a.format(tmp=tmp_path) for a in argv]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())  # nothing half-made is left


def test_a_bpe_run_can_reuse_another_runs_tokenizer(runs, text_data, tmp_path):
    assert main(["train-baseline", "--kind", "bpe", "--data", str(text_data.path), "--out", str(tmp_path / "again"),
                 "--tokenizer", str(runs / "bpe" / "tokenizer.json"), "--steps", "1", "--quiet", *TRAIN_SETS]) == 0
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (runs / "bpe" / "tokenizer.json").read_text()


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_blt_generate_runs_a_baseline(runs, kind, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["generate", str(runs / kind), "--prompt", "def ", "--max-bytes", "9", "--out", str(out)]) == 0
    assert out.read_bytes() == token_greedy(load(runs / kind), b"def ", 9)
    assert main(["generate", str(runs / kind), "--prompt", "x", "--full-recompute"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--full-recompute is the reference path of BLT" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_token_logprob_sums_the_continuations_token_log_probs(runs, kind):
    run = blt.load(runs / kind)
    prompts, continuations = [b"The model", b"", b"x\xff"], [b" and the patch", b"bytes", b""]
    scores = token_logprob(run, prompts, continuations)
    assert scores[2] == 0.0 and all(s < 0 for s in scores[:2])
    for prompt, continuation, score in zip(prompts, continuations, scores):
        p, c = [BOS_ID, *run.tokenizer.encode(prompt)], run.tokenizer.encode(continuation)
        with torch.no_grad():
            logp = torch.log_softmax(run.model(torch.tensor([p + c]))[0], -1)
        assert score == pytest.approx(sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(c)), abs=1e-4)
    assert token_logprob(runs / kind, prompts[:1], continuations[:1]) == pytest.approx(scores[:1], abs=1e-5)


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_token_greedy_equals_argmax_of_full_recompute(runs, kind):
    run = blt.load(runs / kind)
    out = token_greedy(run, b"The ", max_bytes=12)
    tokens, expected = [BOS_ID, *run.tokenizer.encode(b"The ")], b""
    while len(expected) < 12:
        with torch.no_grad():
            nxt = int(run.model(torch.tensor([tokens]))[0, -1].argmax())
        if nxt < OFFSET:
            break
        expected += run.tokenizer.token_bytes(nxt)
        tokens.append(nxt)
    assert out == expected[:12]
    assert token_greedy(run, b"The ", max_bytes=3) == expected[:3]
    stop = expected[4:6]
    if stop:
        cut = token_greedy(run, b"The ", max_bytes=12, stop=stop)
        assert cut.endswith(stop) and cut == expected[:expected.index(stop) + len(stop)]
