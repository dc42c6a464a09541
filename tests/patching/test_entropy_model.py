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
