"""Scorers: log-likelihoods equal a plain forward, do not depend on batching or padding, follow the chain
rule, and agree with greedy generation; runs are dispatched by kind."""

from __future__ import annotations

import math

import pytest
import torch

from blt.errors import BLTError
from blt.evaluate.scoring import (
    BLTScorer,
    EntropyModelScorer,
    TokenModelScorer,
    scorer_for,
)
from blt.generation import generate
from blt.run import load
from blt.tokenizer import OFFSET, encode

PROMPTS = [b'Spell "cat":', b"", b"The quick brown fox", b"a\xffb", b"x" * 90]
CONTINUATIONS = [b" c a t\n", b"Hello", b" jumps over", b"\x00\xfe", b" y"]


@pytest.fixture(scope="module")
def blt_loaded(blt_run):
    return load(blt_run)


@pytest.fixture(scope="module")
def entropy_loaded(entropy_run):
    return load(entropy_run)


@pytest.fixture(scope="module", params=["blt", "entropy_model"])
def scorer(request, blt_loaded, entropy_loaded):
    return scorer_for(blt_loaded if request.param == "blt" else entropy_loaded)


def reference_logprob(run, prompt: bytes, continuation: bytes) -> float:
    """One row, no padding, the model called directly."""
    ids = encode(prompt + continuation)[None]
    logits = run.model(ids, run.patcher(ids)) if run.kind == "blt" else run.model(ids)
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    start = 1 + len(prompt)
    return sum(float(logp[p - 1, ids[0, p]]) for p in range(start, ids.shape[1]))


def test_dispatch_by_kind(blt_loaded, entropy_loaded):
    assert isinstance(scorer_for(blt_loaded), BLTScorer)
    assert isinstance(scorer_for(entropy_loaded), EntropyModelScorer)

    class TokenRun:
        kind = "token_model"

    assert isinstance(scorer_for(TokenRun()), TokenModelScorer)

    class Other:
        kind = "mystery"

    with pytest.raises(BLTError, match="cannot be scored"):
        scorer_for(Other())


@torch.no_grad()
def test_logprob_equals_a_plain_forward_whatever_the_batching(scorer, blt_loaded, entropy_loaded):
    run = blt_loaded if isinstance(scorer, BLTScorer) else entropy_loaded
    expected = [reference_logprob(run, p, c) for p, c in zip(PROMPTS, CONTINUATIONS)]
    batched = scorer.logprob(PROMPTS, CONTINUATIONS)  # one padded batch
    assert batched == pytest.approx(expected, abs=1e-4)
    assert all(v < 0 for v in batched)
    scorer.batch_size = 2
    try:
        assert scorer.logprob(PROMPTS, CONTINUATIONS) == pytest.approx(expected, abs=1e-4)
    finally:
        scorer.batch_size = 16
    assert scorer.logprob([], []) == []
    with pytest.raises(ValueError, match="continuations"):
        scorer.logprob([b"a"], [])


def test_logprob_follows_the_chain_rule(scorer):
    prompt, first, second = b'Join "d o g":', b" do", b"g\n"
    whole, a, b = scorer.logprob([prompt, prompt, prompt + first], [first + second, first, second])
    assert whole == pytest.approx(a + b, abs=1e-4)
    assert scorer.logprob([prompt], [b""]) == [0.0]


def test_greedy_agrees_with_logprob_and_stops(scorer):
    prompt = b"Which is bigger, 9.11 or 9.9?"
    out = scorer.greedy(prompt, max_bytes=12, stop=None)
    assert 0 < len(out) <= 12
    # The greedy first byte is the most likely of all 256 bytes.
    scores = scorer.logprob([prompt] * 256, [bytes([b]) for b in range(256)])
    assert scores[out[0]] == pytest.approx(max(scores), abs=1e-4)
    assert math.fsum(math.exp(s) for s in scores) <= 1.0 + 1e-4
    # Stopping: the output ends at the first stop string, which is included.
    stop = out[2:3]
    stopped = scorer.greedy(prompt, max_bytes=12, stop=stop)
    assert stopped == out[: out.index(stop) + 1]


def test_blt_greedy_is_the_generation_engine(blt_loaded):
    prompt = b'Spell "cat": c a t\nSpell "dog":'
    expected = generate(blt_loaded, prompt, max_bytes=10)
    assert BLTScorer(blt_loaded).greedy(prompt, 10) == expected


def test_entropy_model_greedy_is_argmax_of_a_full_forward(entropy_loaded):
    prompt = b"abc"
    ids = encode(prompt)[None]
    out = bytearray()
    with torch.no_grad():
        for _ in range(5):
            nxt = int(entropy_loaded.model(ids)[0, -1].argmax())
            out.append(nxt - OFFSET)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert EntropyModelScorer(entropy_loaded).greedy(prompt, 5) == bytes(out)
