"""Small corpora on disk and prepared directories for the data tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from blt.data import PreparedData, prepare
from tests.data.corpora import ALL_BYTES, random_corpus, write_tree


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A directory ``corpus/`` of 40 random binary documents plus one with all 256 byte values."""
    files: dict[str | bytes, bytes] = dict(random_corpus(40, seed=1))
    files["all_bytes.bin"] = ALL_BYTES
    return write_tree(tmp_path / "corpus", files)


@pytest.fixture
def prepare_dir(tmp_path: Path) -> Callable[..., PreparedData]:
    """``prepare_dir(sources, name="out", **kwargs)``: prepare quietly into ``tmp_path/name`` and open it."""

    def run(sources, name: str = "out", **kwargs) -> PreparedData:
        kwargs.setdefault("progress", False)
        prepare([str(s) for s in sources], tmp_path / name, **kwargs)
        return PreparedData.open(tmp_path / name)

    return run


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """A prepared corpus for iterator tests: 30 train-heavy documents of 1..120 bytes, each byte value
    unique to its document (byte = 10 + document number), so any byte tells which document it is from."""
    rng = np.random.default_rng(0)
    files = {f"doc{i:02d}": bytes([10 + i]) * int(rng.integers(1, 121)) for i in range(30)}
    root = write_tree(tmp_path_factory.mktemp("packed") / "docs", files)
    out = root.parent / "prepared"
    prepare([str(root)], out, val_fraction=0.2, seed=0, progress=False)
    return PreparedData.open(out)
