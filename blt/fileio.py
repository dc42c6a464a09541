"""Atomic file writes: a temporary name in the target's folder, fsync, then a rename.

Readers (and a later run after a crash) see either the old file or the whole new one, never half of it.
Everything blt writes to disk — shards, manifests, checkpoints, weights, plots, pages — goes through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Self


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path`` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the renames inside a folder durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A binary file streamed under a temporary name and renamed into place on `commit`.

    Tracks the size and sha256 of what was written. Used as a context manager it commits on success
    and discards on any exception.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tmp = temporary_sibling(self.path)
        self.file: BinaryIO = open(self.tmp, "xb")  # umask permissions, unlike mkstemp's 0600
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def commit(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    with AtomicFile(path) as f:
        f.write(payload)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """For writers that take a file name (safetensors, matplotlib): yields a temporary path to write,
    then fsyncs it and renames it to ``path``; removes it if the block fails."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
