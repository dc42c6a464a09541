"""Tiny runs and word lists for the evaluation tests: random micro models (a BLT patched by an entropy model,
and that entropy model as a run of its own) that answer in milliseconds, with a small prepared corpus."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from blt.bench import torch_threads
from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
    PatchingConfig,
)
from blt.data import prepare
from blt.model import ByteLatentTransformer
from blt.patching.entropy_model import EntropyModel
from blt.run import write_run_config
from blt.train import TrainConfig
from blt.train.checkpoint import save_tensors

ENTROPY_THRESHOLD = 2.0  # the scaled random entropy model below spreads entropies over ~0-5 nats


def pseudo_words() -> list[str]:
    """~600 pronounceable lower-case words of 3 to 6 letters, always the same."""
    short = ["".join(p) for p in itertools.product("bdgklmnprst", "aeiou", "bdgklmnprst")]
    long_ = ["".join(p) for p in itertools.product(["ka", "lo", "mi", "ne", "ru", "ta"], "aeiou", ["rd", "st", "nk"])]
    return short[::2] + long_


def documents(n: int, seed: int) -> dict[str, bytes]:
    """Short pseudo-English documents (numpy's PCG64 is stable across versions)."""
    words = pseudo_words()
    rng = np.random.default_rng(seed)
    docs = {}
    for i in range(n):
        sentences = [" ".join(words[j] for j in rng.integers(0, len(words), int(rng.integers(5, 12)))).capitalize() + "."
                     for _ in range(int(rng.integers(4, 10)))]
        docs[f"doc{i:03d}.txt"] = " ".join(sentences).encode() + b"\n"
    return docs


def micro_blt_config() -> BLTConfig:
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=32, n_layers=1, n_heads=2, window=32),
        global_model=GlobalConfig(dim=48, n_layers=1, n_heads=2),
        decoder=LocalDecoderConfig(dim=32, n_layers=1, n_heads=2, window=32),
        hash=HashEmbeddingConfig(rows=257),
        patching=PatchingConfig(mode="entropy", threshold=ENTROPY_THRESHOLD),
        cross_attn_k=2,
        max_seq_len=64,
    )


def micro_train_config() -> TrainConfig:
    return TrainConfig(steps=4, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=1, eval_every=0, eval_batches=2,
                       checkpoint_every=0, log_every=1, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny forwards: one intra-op thread is faster, and steady on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def words_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(pseudo_words() + ["Capital", "it's", "x"]) + "\n")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_data")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, data in documents(40, seed=0).items():
        (corpus / name).write_bytes(data)
    prepare([str(corpus)], root / "prepared", val_fraction=0.25, seed=0, progress=False)
    return root / "prepared"


@pytest.fixture(scope="session")
def entropy_run(tmp_path_factory, data_dir) -> Path:
    """A random entropy model whose output is scaled up, so entropies spread over ~0-5 nats."""
    root = tmp_path_factory.mktemp("entropy_run")
    em = EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=32, max_seq_len=64)).init_weights(seed=1)
    with torch.no_grad():
        em.output.weight.mul_(4.0)
    write_run_config(root, "entropy_model", em.cfg, {"train": micro_train_config().to_dict(), "data": str(data_dir)})
    save_tensors(root / "model.safetensors", em.state_dict())
    return root


@pytest.fixture(scope="session")
def blt_run(tmp_path_factory, entropy_run, data_dir) -> Path:
    """A random micro BLT, entropy-patched by ``entropy_run`` (copied in, as `blt train` does)."""
    from blt.run import copy_entropy_model

    root = tmp_path_factory.mktemp("blt_run")
    cfg = micro_blt_config()
    model = ByteLatentTransformer(cfg).init_weights(seed=0)
    write_run_config(root, "blt", cfg, {"train": micro_train_config().to_dict(), "data": str(data_dir)})
    save_tensors(root / "model.safetensors", model.state_dict())
    copy_entropy_model(entropy_run, root)
    return root


@pytest.fixture(scope="session")
def token_run(tmp_path_factory, data_dir) -> Path:
    """A random micro token-model baseline over bytes (`blt.baselines`, byte tokenizer)."""
    from blt.baselines import TokenLM, TokenModelConfig

    root = tmp_path_factory.mktemp("token_run")
    model = TokenLM(TokenModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=260)).init_weights(seed=2)
    write_run_config(root, "token_model", model.cfg, {"train": micro_train_config().to_dict(), "data": str(data_dir),
                                                      "tokenizer": {"kind": "byte"}})
    save_tensors(root / "model.safetensors", model.state_dict())
    return root
