"""Hashed n-gram embeddings: the worked example of docs/design.md §3 and properties of the hash."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.config import HASH_PRIMES, HashEmbeddingConfig
from blt.model.hashing import HashNgramEmbedding, ngram_hashes
from blt.tokenizer import document_ids, encode

HELLO = encode("Hello")[None]  # [BOS] "Hello" = [1, 76, 105, 112, 112, 115]


def test_worked_example():
    assert HELLO.tolist() == [[1, 76, 105, 112, 112, 115]]
    assert ngram_hashes(HELLO, 3, HASH_PRIMES[0], 500002).tolist() == [[443987, 124875, 393970, 386145, 358223, 190185]]
    assert ngram_hashes(HELLO, 8, HASH_PRIMES[0], 500002).tolist() == [[172383, 205585, 456240, 129346, 299568, 322649]]


def python_hash(window: list[int], prime: int, rows: int) -> int:
    """The definition in plain Python: wrap to signed 64 bits, then a non-negative mod."""
    h = sum(g * pow(prime, j, 1 << 64) for j, g in enumerate(window)) % (1 << 64)
    h = h - (1 << 64) if h >= 1 << 63 else h
    return h % rows


ids_strategy = st.lists(st.integers(0, 259), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, n=st.integers(1, 8), f=st.integers(0, len(HASH_PRIMES) - 1), rows=st.integers(1, 10**6))
def test_hash_matches_definition(ids, n, f, rows):
    got = ngram_hashes(torch.tensor([ids]), n, HASH_PRIMES[f], rows)[0].tolist()
    padded = [0] * (n - 1) + ids
    want = [python_hash(padded[i : i + n], HASH_PRIMES[f], rows) for i in range(len(ids))]
    assert got == want


@settings(max_examples=40, deadline=None)
@given(ids=ids_strategy, n=st.integers(1, 8), data=st.data())
def test_hash_depends_only_on_the_last_n_ids(ids, n, data):
    i = data.draw(st.integers(0, len(ids) - 1))
    other = list(ids)
    for j in range(len(ids)):
        if not (i - n < j <= i):
            other[j] = data.draw(st.integers(0, 259))
    a = ngram_hashes(torch.tensor([ids]), n, HASH_PRIMES[0], 500002)[0, i]
    b = ngram_hashes(torch.tensor([other]), n, HASH_PRIMES[0], 500002)[0, i]
    assert a == b


def test_ngrams_stop_at_document_start():
    """After EOS, a document's n-grams hash as if the row started there."""
    doc2 = encode("Hello")
    packed = torch.cat([encode("abc", eos=True), doc2])[None]
    hashes = ngram_hashes(packed, 5, HASH_PRIMES[1], 1000, document_ids(packed))
    alone = ngram_hashes(doc2[None], 5, HASH_PRIMES[1], 1000)
    assert hashes[0, -len(doc2) :].tolist() == alone[0].tolist()


def test_fused_table_offsets_and_sum():
    cfg = HashEmbeddingConfig(ngram_sizes=(3, 4), num_functions=2, rows=50)
    emb = HashNgramEmbedding(cfg, dim=8)
    indices = emb.table_indices(HELLO)  # (1, 6, 4): table t = f * 2 + index of n
    for t in range(4):
        assert ((indices[..., t] >= t * 50) & (indices[..., t] < (t + 1) * 50)).all()
    expected = emb.table.weight[indices].sum(dim=2)
    torch.testing.assert_close(emb(HELLO), expected)


@pytest.mark.parametrize("num_functions", [1, 2, 11])
def test_last_table_indices_equal_the_last_position_of_table_indices(num_functions):
    emb = HashNgramEmbedding(HashEmbeddingConfig(rows=500002, num_functions=num_functions), dim=2)
    gen = torch.Generator().manual_seed(num_functions)
    windows = torch.randint(0, 260, (64, 8), generator=gen)
    windows[:8] = 259  # the largest id: the products wrap around most
    windows[8:16, :5] = 0  # short contexts, left-padded
    assert torch.equal(emb.last_table_indices(windows), emb.table_indices(windows)[:, -1])
    with pytest.raises(ValueError, match="last 8 ids"):
        emb.last_table_indices(windows[:, 1:])
