"""BLT patched by a BPE's token starts (docs/design.md §2's BPE patching): `blt train --patching bpe`, with a given
tokenizer or one learned from the training split; the run keeps its tokenizer, so loading, evaluating and
resuming patch the same way."""

from __future__ import annotations

import functools
import json

import pytest
import torch

import blt
from blt.baselines.tokenization import TOKENIZER_FILE, BPETokenizer
from blt.cli import main
from blt.data import validation_batches
from blt.evaluate.char_tasks import cannot_become
from blt.evaluate.scoring import scorer_for
from blt.flops import run_cost
from blt.generation import stream, stream_full_recompute
from blt.patching import lengths_from_start_mask, start_mask_bpe
from blt.tokenizer import OFFSET
from tests.baselines.conftest import MICRO_BLT_SET, MICRO_TRAIN_SET
from tests.evaluate.conftest import pseudo_words

SETS = [arg for v in MICRO_BLT_SET + [f"train.{v}" for v in MICRO_TRAIN_SET] for arg in ("--set", v)]


def test_bpe_token_starts_of_blts_own_tokenizer(bpe):
    """Each run of data bytes is tokenized on its own; patch widths are its tokens' byte widths."""
    text = b"def f(x):\n    return x + 1\n\xff\xfe"
    ids = blt.encode(text, eos=True)[None]
    lengths = lengths_from_start_mask(start_mask_bpe(ids, bpe))[0].tolist()
    expected = [1] + [len(bpe.token_bytes(t)) for t in bpe.encode(text)] + [1]  # BOS, the tokens, EOS
    assert lengths == expected and sum(lengths) == ids.shape[1]


def test_train_with_bpe_patching_keeps_its_tokenizer(text_data, bpe, tmp_path, capsys):
    given = tmp_path / "given.json"
    bpe.save(given)
    out = tmp_path / "bpe_patched"
    args = ["train", "--data", str(text_data.path), "--out", str(out), "--patching", "bpe", "--tokenizer", str(given),
            "--steps", "2", "--quiet", *SETS]
    assert main(args) == 0
    assert "patching: bpe, 400 tokens -> mean patch size" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())
    assert record["patching_tokenizer"] == {"kind": "bpe", "vocab_size": 400, "file": TOKENIZER_FILE}
    run = blt.load(out)
    assert isinstance(run.tokenizer, BPETokenizer) and run.entropy_model is None

    # The loaded run's patcher patches at the tokenizer's token starts.
    ids = next(iter(validation_batches(text_data, 64, 4)))
    lengths = run.patcher(ids)
    assert torch.equal(lengths, lengths_from_start_mask(start_mask_bpe(ids, bpe) | (ids < OFFSET)))
    assert main(["eval", str(out), "--batches", "1"]) == 0
    assert "mean patch size" in capsys.readouterr().out
    assert 1.5 < run_cost(out).bytes_per_step < 8  # FLOPs counted at the BPE's measured patch size

    # BPE patching looks ahead, so generation takes the full-recompute path by itself.
    expected = bytes(stream_full_recompute(run.model, run.patcher, b"def ", 6))
    assert bytes(stream(run, b"def ", 6)) == expected
    assert main(["generate", str(out), "--prompt", "def ", "--max-bytes", "6", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g").read_bytes() == expected
    samples = blt.generate(run, [b"def ", b"x = "], 5, temperature=1.0, seed=3)  # several prompts: one at a time
    assert samples == [bytes(stream(run, p, 5, temperature=1.0, seed=3 + i)) for i, p in enumerate([b"def ", b"x = "])]
    assert main(["generate", str(out), "--prompt", "def ", "--max-bytes", "4", "--samples", "2",
                 "--temperature", "1"]) == 0
    # Scoring greedy answers takes it too, and gives up on an answer as soon as it cannot match any more.
    scorer = scorer_for(run)
    assert scorer.greedy(b"def ", 6) == expected
    assert scorer.greedy(b"def ", 6, halt=lambda out: len(out) == 2) == expected[:2]
    wrong = b"~" + expected  # never the greedy line: generation stops at the first prefix that rules it out
    stop_at = next((n for n in range(1, len(expected) + 1) if cannot_become(wrong, expected[:n])), len(expected))
    assert scorer.greedy(b"def ", 6, halt=functools.partial(cannot_become, wrong)) == expected[:stop_at]

    # Finetuning keeps the tokenizer with the weights.
    words = tmp_path / "words.txt"
    words.write_text("\n".join(pseudo_words()) + "\n")
    tuned = tmp_path / "tuned"
    assert main(["finetune", str(out), "--out", str(tuned), "--steps", "1", "--examples", "80", "--tasks", "delete_char",
                 "--shots", "0", "--words", str(words), "--set", "train.batch_size=2", "--quiet"]) == 0
    assert blt.load(tuned).tokenizer.vocab_size == 400
    assert torch.equal(blt.load(tuned).patcher(ids), lengths)

    resume = ["train", "--data", str(text_data.path), "--out", str(out), "--steps", "3", "--resume", "--quiet"]
    assert main(resume) == 0  # with the tokenizer saved in the run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]


def test_bpe_patching_learns_a_tokenizer_when_none_is_given(text_data, tmp_path, capsys):
    out = tmp_path / "learned"
    assert main(["train", "--data", str(text_data.path), "--out", str(out), "--patching", "bpe", "--vocab-size", "300",
                 "--steps", "1", "--quiet", *SETS]) == 0
    assert "learning a byte-level BPE of 300 tokens" in capsys.readouterr().out
    assert blt.load(out).tokenizer.vocab_size == 300


@pytest.mark.parametrize(("extra", "message"), [
    (["--patching", "static", "--tokenizer", "t.json"], "--tokenizer is for --patching bpe"),
    (["--patching", "bpe", "--tokenizer", "missing.json"], "tokenizer file missing.json does not exist"),
    (["--patching", "bpe", "--vocab-size", "100"], "--vocab-size must be at least 260"),
])
def test_bpe_patching_options_are_checked(text_data, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(text_data.path), "--out", str(tmp_path / "r"), "--steps", "1", "--quiet",
                 *extra, *SETS]) == 2
    assert message in capsys.readouterr().err
