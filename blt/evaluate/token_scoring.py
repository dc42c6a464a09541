"""Scoring and greedy generation with a token-model run (BPE or byte baseline), for evaluations that also
score BLT: the log-probability of a continuation given a prompt, and a greedy continuation in bytes.

The prompt and the continuation are tokenized separately and concatenated after BOS, so the
continuation's tokens cover exactly its bytes; its score is the sum of those tokens' log-probabilities
(nats), the probability of its canonical tokenization.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from blt.errors import ConfigError
from blt.generation import stream
from blt.run import Run, load
from blt.tokenizer import BOS_ID, PAD_ID

SCORE_BATCH = 16  # sequences per forward pass


def _token_run(run):
    if not isinstance(run, Run):
        return load(Path(run), expect="token_model")
    if run.kind != "token_model":
        raise ConfigError(f"{run.path} is a {run.kind} run; token_logprob and token_greedy need a token-model run "
                          "(from `blt train-baseline`)")
    return run


@torch.no_grad()
def token_logprob(run, prompts: list[bytes], continuations: list[bytes]) -> list[float]:
    """Sum of the log-probabilities (nats) of each continuation's tokens after BOS + its prompt's tokens.

    ``run``: a loaded token-model run (`blt.load`) or its directory. An empty continuation scores 0.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations; pass one of each per item")
    run = _token_run(run)
    tokenizer, model = run.tokenizer, run.model
    device = next(model.parameters()).device
    items = [([BOS_ID, *tokenizer.encode(p)], tokenizer.encode(c)) for p, c in zip(prompts, continuations)]
    scores: list[float] = []
    for start in range(0, len(items), SCORE_BATCH):
        batch = items[start:start + SCORE_BATCH]
        width = max(len(p) + len(c) for p, c in batch)
        tokens = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            tokens[i, :len(p) + len(c)] = torch.tensor(p + c)
        logp = F.log_softmax(model(tokens.to(device)).float(), dim=-1)  # (B, N, V)
        for i, (p, c) in enumerate(batch):
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)  # predict tokens len(p) ...
            targets = torch.tensor(c, dtype=torch.long, device=device)
            scores.append(float(logp[i, positions, targets].sum()))
    return scores


def token_greedy(run, prompt: bytes, max_bytes: int, stop: bytes | None = None) -> bytes:
    """Greedy continuation of ``prompt``: the most likely token at each step, decoded to bytes, until a special
    token, ``max_bytes`` bytes (the output is cut there), or the first ``stop`` (kept, the rest cut)."""
    return bytes(stream(_token_run(run), prompt, max_bytes, stop=[stop] if stop else []))
