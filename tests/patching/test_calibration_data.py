"""Calibrating on a prepared split: the sample is spread over the whole split, so the threshold holds on all of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from blt.config import PatchingConfig
from blt.data import ByteBatchIterator, PreparedData, prepare, validation_batches
from blt.patching import Patcher, mean_patch_size
from blt.patching.calibration import spread_sample
from blt.pipelines.recipes import calibrate_on_training_data
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET


def prepared(root: Path, documents: list[bytes]) -> PreparedData:
    corpus = root / "corpus"
    corpus.mkdir()
    for i, document in enumerate(documents):
        (corpus / f"doc{i:03d}.bin").write_bytes(document)
    prepare([str(corpus)], root / "prepared", val_fraction=0.0, seed=0, progress=False)
    return PreparedData.open(root / "prepared")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> PreparedData:
    """40 documents of 300 bytes; every byte of document i is 10 + i, so any byte tells its document."""
    return prepared(tmp_path_factory.mktemp("labelled"), [bytes([10 + i]) * 300 for i in range(40)])


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> PreparedData:
    """40 documents of 1200 random bytes that differ in difficulty: document i draws from 8 + 6i values."""
    rng = np.random.default_rng(0)
    return prepared(tmp_path_factory.mktemp("uneven"),
                    [rng.integers(0, 8 + 6 * i, size=1200, dtype=np.uint8).tobytes() for i in range(40)])


class ByteValueEntropy(torch.nn.Module):
    """A stand-in entropy model: a byte's "entropy" grows with its value (plus a small jitter against ties),
    so a document of small byte values is easy and one of large values hard."""

    def entropies(self, ids: torch.Tensor) -> torch.Tensor:
        position = torch.arange(ids.shape[1])
        jitter = ((ids * 7919 + position * 104729) % 1000).float() / 1e5
        return (ids - OFFSET).clamp(min=0).float() / 32 + jitter


def documents_of(rows: torch.Tensor) -> set[int]:
    values = rows[rows >= OFFSET] - OFFSET
    return set((values - 10).tolist())


def test_spread_sample_rows_are_training_rows_from_all_over_the_split(labelled):
    sample = spread_sample(labelled, "train", seq_len=32, rows=20, seed=3)
    assert sample.shape == (20, 32) and (sample[:, 0] == BOS_ID).all()
    # Row r starts in the r-th of 20 equal slices of the 40-document stream: 20 different documents.
    assert len({int(row[1]) for row in sample}) == 20
    for row in sample:  # BOS, then the bytes of one document, and the next one packed after its EOS
        eos = (row == EOS_ID).nonzero().flatten().tolist()
        first = row[1 : eos[0] if eos else None]
        assert (first == first[0]).all() and first[0] >= OFFSET + 10
        if eos:
            assert row[eos[0] + 1] == BOS_ID
    assert spread_sample(labelled, "train", 32, 20, seed=3).equal(sample)  # deterministic
    assert not spread_sample(labelled, "train", 32, 20, seed=4).equal(sample)
    # Twenty consecutive rows of the stream (a first batch in stream order) see 2 or 3 documents.
    assert len(documents_of(next(ByteBatchIterator(labelled, "train", 32, 20, seed=3, order="stream")))) <= 3
    assert len(documents_of(sample)) >= 20


def test_spread_sample_checks_rows(labelled):
    with pytest.raises(ValueError, match="rows must be a positive"):
        spread_sample(labelled, "train", 32, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_calibrated_on_training_data_holds_on_the_whole_split(uneven, seed):
    """The threshold calibrated to 4.5 bytes gives about 4.5 bytes per patch on all the training rows, as
    training patches them, though documents range from all-easy to all-hard. (Calibrating on the first
    batch of the training iterator, a few documents, gave 5.19, 3.47 and 4.35 for these seeds.)"""
    entropy_model = ByteValueEntropy()
    config = PatchingConfig(mode="entropy", threshold=None, target_patch_size=4.5)
    calibrated, sample_size = calibrate_on_training_data(config, entropy_model, uneven, seq_len=64, seed=seed, rows=128)
    assert calibrated.threshold is not None and sample_size == pytest.approx(4.5, rel=0.02)
    patcher = Patcher(calibrated, entropy_model)
    rows = [patcher(ids)[0] for ids in validation_batches(uneven, 64, 1, split="train")]  # each row once
    whole_split = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    assert mean_patch_size(whole_split) == pytest.approx(4.5, rel=0.06)
