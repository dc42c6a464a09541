"""Builders of small corpora on disk, shared by the data tests."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from blt.data import PreparedData

ALL_BYTES = bytes(range(256))


def write_tree(root: Path, files: Mapping[str | bytes, bytes]) -> Path:
    """Write ``{relative path: contents}`` under ``root`` (bytes paths allowed) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = Path(root, rel.decode("utf-8", "surrogateescape") if isinstance(rel, bytes) else rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def random_corpus(n: int, seed: int, max_len: int = 300) -> dict[str, bytes]:
    """``n`` documents of random length in [1, max_len] and random bytes, in a two-level tree."""
    rng = random.Random(seed)
    return {f"d{i % 3}/doc{i:03d}.bin": rng.randbytes(rng.randint(1, max_len)) for i in range(n)}


def read_documents(data: PreparedData, split: str) -> dict[bytes, bytes]:
    """``{name: bytes}`` of a split, read through the memory maps."""
    docs = data.split(split)
    return {docs.document_name(i): bytes(docs[i]) for i in range(len(docs))}
