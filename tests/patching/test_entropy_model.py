"""The entropy model: exact chunking, row isolation, causality, value range."""

from __future__ import annotations

import math

import pytest
import torch

from blt.config import EntropyModelConfig
from blt.patching.entropy_model import EntropyModel, entropy_from_logits
from blt.tokenizer import BOS_ID, EOS_ID
from tests.helpers import random_ids


@pytest.fixture(scope="module")
def model() -> EntropyModel:
    cfg = EntropyModelConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, window=9, max_seq_len=128, chunk_len=16)
    return EntropyModel(cfg).init_weights(seed=0).eval()


def test_chunked_entropies_equal_one_full_pass(model):
    ids = random_ids(3, 100, torch.Generator().manual_seed(0))
    ids[1, 40], ids[1, 41] = EOS_ID, BOS_ID
    with torch.no_grad():
        full = entropy_from_logits(model(ids))
    for chunk_len in (1, 8, 9, 16, 37, 100, 1000):
        torch.testing.assert_close(model.entropies(ids, chunk_len=chunk_len), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.entropies(ids[2]), full[2], atol=1e-5, rtol=0)


def test_surprisals_are_the_loss_on_each_next_id_from_the_same_chunked_pass(model):
    ids = random_ids(3, 100, torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(ids)
    full = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    for chunk_len in (1, 9, 37, 100):
        entropies, surprisals = model.entropies_and_surprisals(ids, chunk_len=chunk_len, batch_size=2)
        torch.testing.assert_close(entropies, model.entropies(ids, chunk_len=chunk_len, batch_size=2), atol=0, rtol=0)
        torch.testing.assert_close(surprisals[:, :-1], full, atol=1e-5, rtol=0)
        assert surprisals[:, -1].isnan().all()
    one = model.entropies_and_surprisals(ids[1])
    torch.testing.assert_close(one[1][:-1], full[1], atol=1e-5, rtol=0)


def test_rows_never_see_each_other(model):
    """The reference's context-bleeding bug: here a row's entropies don't depend on the other rows."""
    gen = torch.Generator().manual_seed(1)
    ids = random_ids(4, 70, gen)
    alone = model.entropies(ids[2:3])
    other = ids.clone()
    other[[0, 1, 3]] = random_ids(3, 70, gen)
    for batch_size in (1, 3, 64):
        torch.testing.assert_close(model.entropies(other, batch_size=batch_size)[2:3], alone, atol=1e-5, rtol=0)


def test_entropies_are_causal_and_document_aware(model):
    gen = torch.Generator().manual_seed(2)
    ids = random_ids(1, 60, gen)
    ids[0, 29], ids[0, 30] = EOS_ID, BOS_ID
    t = 45
    changed = ids.clone()
    changed[0, t + 1 :] = random_ids(1, 60, gen)[0, t + 1 :]
    changed[0, 1:29] = random_ids(1, 60, gen)[0, 1:29]  # the previous document
    a, b = model.entropies(ids), model.entropies(changed)
    torch.testing.assert_close(a[0, 30 : t + 1], b[0, 30 : t + 1], atol=1e-5, rtol=0)
    assert not torch.allclose(a[0, t + 1 :], b[0, t + 1 :])


def test_entropy_range(model):
    h = model.entropies(random_ids(2, 50, torch.Generator().manual_seed(3)))
    assert h.dtype == torch.float32 and h.shape == (2, 50)
    assert (h >= 0).all() and (h <= math.log(260) + 1e-4).all()
    uniform = entropy_from_logits(torch.zeros(260))
    assert abs(uniform.item() - math.log(260)) < 1e-5


def test_bad_shapes(model):
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model.entropies(torch.ones(2, 3, 4, dtype=torch.long))


def test_default_chunk_length_is_exact_for_every_batch_shape(model):
    """`default_chunk_len` depends on the rows per call; every choice gives one full pass's entropies,
    with documents starting and ending anywhere (the one-document mask is shared, the others are built)."""
    gen = torch.Generator().manual_seed(4)
    ids = random_ids(5, 90, gen)
    ids[0, 9], ids[0, 10] = EOS_ID, BOS_ID  # a document boundary at a chunk edge
    ids[3, 50], ids[3, 51] = EOS_ID, BOS_ID
    ids[4, 70:] = 0  # padding after an EOS, as `blt patch --data` batches documents
    ids[4, 69] = EOS_ID
    with torch.no_grad():
        full = entropy_from_logits(model(ids))
    for batch_size in (1, 2, 5):
        torch.testing.assert_close(model.entropies(ids, batch_size=batch_size), full, atol=1e-5, rtol=0)


def test_default_chunk_length_follows_rows_window_and_config():
    cfg = EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=256, chunk_len=2048)
    model = EntropyModel(cfg)
    assert [model.default_chunk_len(rows) for rows in (1, 2, 4, 8, 64)] == [512, 256, 128, 64, 64]
    assert [model.default_chunk_len(rows, torch.bfloat16) for rows in (1, 4, 8, 16, 64)] == [512, 512, 256, 128, 64]
    assert EntropyModel(cfg.replace(chunk_len=100)).default_chunk_len(1) == 100
    assert EntropyModel(cfg.replace(window=16)).default_chunk_len(1) == 32
    assert EntropyModel(cfg.replace(window=None)).default_chunk_len(64) == 2048  # full causal: one pass anyway


def test_low_precision_entropies_are_close_to_float32(model):
    """bf16/fp16 compute (autocast) moves entropies by hundredths of a nat; the result is still float32."""
    ids = random_ids(3, 100, torch.Generator().manual_seed(5))
    exact = model.entropies(ids)
    for dtype in (torch.bfloat16, torch.float16):
        low = model.entropies(ids, dtype=dtype)
        assert low.dtype == torch.float32 and low.shape == exact.shape
        torch.testing.assert_close(low, exact, atol=0.05, rtol=0)
        assert (low - exact).abs().mean() < 0.01
    torch.testing.assert_close(model.entropies(ids, dtype=torch.bfloat16, chunk_len=7),
                               model.entropies(ids, dtype=torch.bfloat16), atol=0.05, rtol=0)


def test_a_model_without_layers_chunks_too():
    model = EntropyModel(EntropyModelConfig(dim=16, n_layers=0, n_heads=2, window=4, chunk_len=8)).init_weights(seed=0)
    ids = random_ids(2, 30, torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = entropy_from_logits(model(ids))
    torch.testing.assert_close(model.entropies(ids, chunk_len=3), full, atol=1e-6, rtol=0)


def test_bad_options(model):
    ids = random_ids(1, 10, torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="dtype must be"):
        model.entropies(ids, dtype=torch.float64)
    with pytest.raises(ValueError, match="batch_size and chunk_len must be >= 1"):
        model.entropies(ids, batch_size=0)
