"""Hashed byte n-gram embeddings (docs/design.md §3).

``x_i = E_byte[id_i] + Σ_n Σ_f E_hash[f, n][ h_f(id_{i-n+1..i}) mod V_h ]`` where ``h_f`` is a polynomial
hash in wrapping signed 64-bit arithmetic (the reference computes it with int64 tensors and lets it
overflow), the oldest id multiplied by ``p^0``, ids before the start of the row counting as 0, and a
non-negative ``mod V_h``. All (f, n) tables are fused into one embedding with table t at offset t * V_h,
``t = f * len(ngram_sizes) + index of n``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blt.config import HASH_PRIMES, HashEmbeddingConfig

_U64 = 1 << 64


def _as_int64(value: int) -> int:
    """Reduce an integer to the signed 64-bit value with the same low 64 bits."""
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


def ngram_hashes(ids: torch.Tensor, n: int, prime: int, rows: int, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Hash of the n ids ending at each position, mod ``rows``. (B, T) long -> (B, T) long in [0, rows).

    With ``doc_ids`` (B, T), ids of an earlier document count as 0, as if the row started at the
    document: packed documents don't leak into each other through their n-grams.

    >>> ngram_hashes(torch.tensor([[1, 76, 105, 112, 112, 115]]), 3, 1000000007, 500002).tolist()
    [[443987, 124875, 393970, 386145, 358223, 190185]]
    """
    padded = F.pad(ids.long(), (n - 1, 0))  # ids before the start count as 0
    windows = padded.unfold(-1, n, 1)  # (B, T, n), oldest id first
    if doc_ids is not None:
        doc_windows = F.pad(doc_ids, (n - 1, 0), value=-1).unfold(-1, n, 1)  # (B, T, n)
        windows = windows * (doc_windows == doc_ids[..., None])
    powers = torch.tensor([_as_int64(pow(prime, j, _U64)) for j in range(n)], dtype=torch.long, device=ids.device)
    return (windows * powers).sum(-1).remainder(rows)  # int64 wraps on overflow; remainder is >= 0


def _last_powers(primes: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
    """(N, num_tables) int64, N = max(sizes): column f * len(sizes) + j holds p_f^i at the last n_j rows
    (oldest id first, as in `ngram_hashes`) and 0 above, so a row of the last N ids times it gives every hash."""
    N = max(sizes)
    powers = torch.zeros(N, len(primes) * len(sizes), dtype=torch.long)
    for f, prime in enumerate(primes):
        for j, n in enumerate(sizes):
            for i in range(n):
                powers[N - n + i, f * len(sizes) + j] = _as_int64(pow(prime, i, _U64))
    return powers


class HashNgramEmbedding(nn.Module):
    """Sum of the hashed n-gram embeddings of every byte, from one fused table."""

    def __init__(self, cfg: HashEmbeddingConfig, dim: int):
        super().__init__()
        self.ngram_sizes = cfg.ngram_sizes
        self.primes = HASH_PRIMES[: cfg.num_functions]
        self.rows = cfg.rows
        self.dim = dim
        self.table = nn.Embedding(cfg.num_tables * cfg.rows, dim)
        self._last_powers: torch.Tensor | None = None  # for `last_table_indices`, built on first use

    def table_indices(self, ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Row of the fused table for every (byte, table). (B, T) -> (B, T, num_tables)."""
        indices = [
            ngram_hashes(ids, n, prime, self.rows, doc_ids) + (f * len(self.ngram_sizes) + j) * self.rows
            for f, prime in enumerate(self.primes)
            for j, n in enumerate(self.ngram_sizes)
        ]
        return torch.stack(indices, dim=-1)

    def last_table_indices(self, windows: torch.Tensor) -> torch.Tensor:
        """`table_indices` of the last position only, for rows of its last ``max(ngram_sizes)`` ids (id 0 for
        those before a row's start). (B, N) -> (B, num_tables), the hashes of all sizes and functions as one
        int64 matrix product (wrapping as `ngram_hashes` does): what a generation step needs.

        >>> h = HashNgramEmbedding(HashEmbeddingConfig(rows=97, num_functions=2), dim=4)
        >>> ids = torch.tensor([[1, 76, 105, 112, 112, 115, 40, 41]])
        >>> torch.equal(h.last_table_indices(ids), h.table_indices(ids)[:, -1])
        True
        """
        if windows.shape[-1] != max(self.ngram_sizes):
            raise ValueError(f"windows must hold the last {max(self.ngram_sizes)} ids, got {windows.shape[-1]}")
        if self._last_powers is None or self._last_powers.device != windows.device:
            self._last_powers = _last_powers(self.primes, self.ngram_sizes).to(windows.device)
        offsets = torch.arange(len(self.primes) * len(self.ngram_sizes), device=windows.device) * self.rows
        return (windows.long() @ self._last_powers).remainder(self.rows) + offsets

    def forward(self, ids: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, D): the sum over tables, one fused lookup."""
        B, T = ids.shape
        indices = self.table_indices(ids, doc_ids).flatten(1)  # (B, T, n_tables) -> (B, T * n_tables)
        summed = F.embedding_bag(indices.view(B * T, -1), self.table.weight, mode="sum")  # (B*T, D)
        return summed.view(B, T, self.dim)
