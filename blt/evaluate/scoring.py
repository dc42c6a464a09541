"""How an evaluation asks any of our models about text: the `Scorer` protocol, and `scorer_for(run)`.

A scorer answers two questions about bytes:

- ``logprob(prompts, continuations)``: for each pair, the sum of the log-probabilities (nats) of the
  continuation's bytes given ``[BOS] + prompt`` and the continuation bytes before them;
- ``greedy(prompt, max_bytes, stop)``: greedy bytes after ``[BOS] + prompt``, ending after ``stop``
  (included) or after ``max_bytes`` bytes or at EOS.

BLT runs and entropy-model runs (plain byte LMs) are scored here; token-model runs (the BPE and byte
baselines) by `blt.evaluate.token_scoring`, whose tokenizer decides how bytes become tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from blt.errors import BLTError
from blt.evaluate.token_scoring import token_greedy, token_logprob
from blt.generation import looks_ahead, stream
from blt.tokenizer import PAD_ID, encode

DEFAULT_BATCH_SIZE = 16


class Scorer(Protocol):
    def logprob(self, prompts: Sequence[bytes], continuations: Sequence[bytes]) -> list[float]:
        """Sum of log-probabilities (nats) of each continuation's bytes after its prompt."""
        ...

    def greedy(self, prompt: bytes, max_bytes: int, stop: bytes | None = None,
               halt: Callable[[bytes], bool] | None = None) -> bytes:
        """Greedy bytes after the prompt, up to and including ``stop``, at most ``max_bytes``. ``halt(out)``
        True on the bytes so far may end it early: a caller who only needs to know whether the output
        matches something gives up on it once it cannot (scorers whose generation is cheap may ignore it)."""
        ...


def _check_pairs(prompts: Sequence[bytes], continuations: Sequence[bytes]) -> None:
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")


def _padded_rows(prompts: Sequence[bytes], continuations: Sequence[bytes], rows: Sequence[int]) -> torch.Tensor:
    """``[BOS] + prompt + continuation`` of the given rows, right-padded with PAD. -> (B, T)."""
    seqs = [encode(bytes(prompts[r]) + bytes(continuations[r])) for r in rows]
    ids = torch.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return ids


def _continuation_logprobs(logits: torch.Tensor, ids: torch.Tensor, starts: Sequence[int], ends: Sequence[int]) -> list[float]:
    """Sum over positions p in [start, end) of log P(ids[p] | logits[p - 1]) per row. logits (B, T, V)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    return [float(logp[i, s - 1 : e - 1].sum()) for i, (s, e) in enumerate(zip(starts, ends))]


@torch.no_grad()
def batched_logprob(logits_fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device, prompts: Sequence[bytes],
                    continuations: Sequence[bytes], batch_size: int = DEFAULT_BATCH_SIZE) -> list[float]:
    """`Scorer.logprob` for a byte model whose ``logits_fn`` maps ids (B, T) to logits (B, T, V).

    Rows are sorted by length so a batch pads little. Padding sits after every scored byte and the
    models are causal, so it changes nothing that is read.
    """
    _check_pairs(prompts, continuations)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(prompts)), key=lambda r: len(prompts[r]) + len(continuations[r]))
    out = [0.0] * len(prompts)
    for b in range(0, len(order), batch_size):
        rows = order[b : b + batch_size]
        ids = _padded_rows(prompts, continuations, rows).to(device)
        starts = [1 + len(prompts[r]) for r in rows]
        ends = [s + len(continuations[r]) for s, r in zip(starts, rows)]
        for r, value in zip(rows, _continuation_logprobs(logits_fn(ids), ids, starts, ends)):
            out[r] = value
    return out


class BLTScorer:
    """A BLT run: one forward over ``[BOS] + prompt + continuation`` patched by the run's patcher; greedy
    generation by the incremental engine (`blt.generation.Engine`), or, for a BLT patched by BPE (whose
    patching looks ahead), by a full forward per byte, which ``halt`` cuts short."""

    def __init__(self, run, batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = run.model
        self.patcher = run.patcher
        self.full_recompute = looks_ahead(run)
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        self._engine = None

    def logprob(self, prompts: Sequence[bytes], continuations: Sequence[bytes]) -> list[float]:
        return batched_logprob(lambda ids: self.model(ids, self.patcher(ids)), self.device, prompts, continuations,
                               self.batch_size)

    def greedy(self, prompt: bytes, max_bytes: int, stop: bytes | None = None,
               halt: Callable[[bytes], bool] | None = None) -> bytes:
        from blt.generation import Engine, stream_full_recompute

        if self.full_recompute:  # patching with no incremental form, as `blt.generation.stream` decides
            def ends(out: bytes) -> bool:
                return bool(stop) and out.endswith(stop) or halt is not None and halt(out)

            return bytes(stream_full_recompute(self.model, self.patcher, bytes(prompt), max_bytes, stop=ends))
        if self._engine is None:
            self._engine = Engine(self.model, self.patcher)
        return self._engine.generate([bytes(prompt)], max_bytes, stop=[stop] if stop else ())[0]


class EntropyModelScorer:
    """An entropy-model run, read as the byte-level language model it is."""

    def __init__(self, run, batch_size: int = DEFAULT_BATCH_SIZE):
        self.run, self.model = run, run.model
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size

    def logprob(self, prompts: Sequence[bytes], continuations: Sequence[bytes]) -> list[float]:
        return batched_logprob(self.model, self.device, prompts, continuations, self.batch_size)

    def greedy(self, prompt: bytes, max_bytes: int, stop: bytes | None = None,
               halt: Callable[[bytes], bool] | None = None) -> bytes:
        return bytes(stream(self.run, prompt, max_bytes, stop=[stop] if stop else []))


class TokenModelScorer:
    """A token-model run (BPE or byte baseline), scored by `blt.evaluate.token_scoring`."""

    def __init__(self, run):
        self.run = run

    def logprob(self, prompts: Sequence[bytes], continuations: Sequence[bytes]) -> list[float]:
        _check_pairs(prompts, continuations)
        return list(token_logprob(self.run, list(prompts), list(continuations)))

    def greedy(self, prompt: bytes, max_bytes: int, stop: bytes | None = None,
               halt: Callable[[bytes], bool] | None = None) -> bytes:
        return token_greedy(self.run, prompt, max_bytes, stop)


def scorer_for(run, batch_size: int = DEFAULT_BATCH_SIZE) -> Scorer:
    """The scorer of a loaded run (`blt.load`), chosen by its kind."""
    kind = getattr(run, "kind", None)
    if kind == "blt":
        return BLTScorer(run, batch_size)
    if kind == "entropy_model":
        return EntropyModelScorer(run, batch_size)
    if kind == "token_model":
        return TokenModelScorer(run)
    raise BLTError(f"runs of kind {kind!r} cannot be scored; expected a BLT, entropy-model or token-model run")


__all__ = ["BLTScorer", "EntropyModelScorer", "Scorer", "TokenModelScorer", "batched_logprob", "scorer_for"]
