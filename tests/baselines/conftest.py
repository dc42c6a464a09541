"""Fixtures of the baseline tests: the small text corpus of tests/train, a BPE tokenizer learned from it,
micro configs, and a micro entropy model run (for `blt compare`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blt.baselines import BPETokenizer, TokenModelConfig, train_bpe
from blt.bench import torch_threads
from blt.data import PreparedData
from blt.pipelines.recipes import RunOptions, train_entropy_model
from tests.train.conftest import text_data  # noqa: F401  (the session fixture, shared)

MICRO_TOKEN_SET = ["dim=32", "n_layers=1", "n_heads=2"]
MICRO_BLT_SET = ["encoder.dim=32", "encoder.n_layers=1", "encoder.n_heads=2", "encoder.window=32", "global_model.dim=64",
                 "global_model.n_layers=1", "global_model.n_heads=2", "decoder.dim=32", "decoder.n_layers=1",
                 "decoder.n_heads=2", "decoder.window=32", "hash.rows=257", "max_seq_len=64"]
MICRO_TRAIN_SET = ["batch_size=4", "seq_len=64", "eval_batches=2", "log_every=1", "warmup_steps=1"]
MICRO_ENTROPY_SET = ["dim=32", "n_layers=1", "n_heads=2", "window=32", "max_seq_len=64"]


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from threads, and on shared cores spinning worker threads slow every op ~10x."""
    with torch_threads(1):
        yield


def micro_token_config(vocab_size: int = 260) -> TokenModelConfig:
    return TokenModelConfig(dim=32, n_layers=2, n_heads=2, vocab_size=vocab_size)


@pytest.fixture(scope="session")
def bpe(text_data: PreparedData) -> BPETokenizer:  # noqa: F811
    with torch_threads(1):
        return train_bpe(text_data, vocab_size=400)


@pytest.fixture(scope="session")
def entropy_run(text_data: PreparedData, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("entropy") / "ent"
    with torch_threads(1):
        train_entropy_model(RunOptions(data=text_data.path, out=out, model_overrides=MICRO_ENTROPY_SET,
                                       train_overrides=MICRO_TRAIN_SET, steps=6, progress=False))
    return out
