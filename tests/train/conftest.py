"""A small deterministic text corpus, prepared once per session, and micro configs that train in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
    PatchingConfig,
)
from blt.data import PreparedData, prepare
from blt.train import TrainConfig

WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she", "all", "there", "one", "been", "their", "we", "has", "would", "when", "what", "more", "if", "no", "out", "so", "said", "who", "its", "bytes", "patch", "entropy", "model", "global", "local", "encoder", "decoder", "transformer", "attention"]


def synthetic_documents(n: int, seed: int) -> dict[str, bytes]:
    """Pseudo-English documents from a fixed vocabulary (numpy's PCG64 is stable across versions)."""
    rng = np.random.default_rng(seed)
    docs = {}
    for i in range(n):
        sentences = []
        for _ in range(int(rng.integers(3, 12))):
            words = [WORDS[j] for j in rng.integers(0, len(WORDS), int(rng.integers(4, 14)))]
            sentences.append(" ".join(words).capitalize() + ".")
        docs[f"doc{i:03d}.txt"] = " ".join(sentences).encode() + b"\n"
    return docs


@pytest.fixture(scope="session")
def text_data(tmp_path_factory) -> PreparedData:
    root = tmp_path_factory.mktemp("text")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, data in synthetic_documents(80, seed=0).items():
        (corpus / name).write_bytes(data)
    prepare([str(corpus)], root / "prepared", val_fraction=0.1, seed=0, progress=False)
    return PreparedData.open(root / "prepared")


def micro_blt_config(patching: PatchingConfig | None = None) -> BLTConfig:
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=32, n_layers=1, n_heads=2, window=32),
        global_model=GlobalConfig(dim=64, n_layers=1, n_heads=2),
        decoder=LocalDecoderConfig(dim=32, n_layers=1, n_heads=2, window=32),
        hash=HashEmbeddingConfig(rows=257),
        patching=patching or PatchingConfig(mode="space"),
        cross_attn_k=2,
        max_seq_len=64,
    )


def micro_entropy_config() -> EntropyModelConfig:
    return EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=32, max_seq_len=64)


def micro_train_config(**changes) -> TrainConfig:
    base = TrainConfig(steps=8, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=2, eval_every=4, eval_batches=2,
                       checkpoint_every=2, keep_checkpoints=10, log_every=1, seed=0)
    return base.replace(**changes)


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"
