"""Read a prepared directory: checked on open, documents memory-mapped from their shards."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from blt.data.manifest import INDEX_NAME, SPLITS, Manifest
from blt.errors import DataError

_HASH_CHUNK_BYTES = 16 * 2**20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class Split:
    """The documents of one split: ``len(split)`` documents, ``split[i]`` the bytes of document ``i``."""

    def __init__(self, name: str, manifest: Manifest, rows: np.ndarray, index: np.ndarray,
                 shards: list[np.memmap]) -> None:
        self.name = name
        self._manifest = manifest
        self._rows = rows  # position of each document in the manifest / index
        self._shard = index[rows, 1]
        self._offset = index[rows, 2]
        self.lengths: np.ndarray = index[rows, 3]  # int64, bytes per document
        self._shards = shards
        self.total_bytes = int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Document ``i`` as a read-only uint8 view of its shard (no copy)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for split {self.name!r} of {len(self)} documents")
        start = int(self._offset[i])
        return self._shards[int(self._shard[i])][start:start + int(self.lengths[i])]

    def document_name(self, i: int) -> bytes:
        """The name (path relative to its source's root) of document ``i``."""
        return self._manifest.documents[int(self._rows[i])].name


class PreparedData:
    """A prepared data directory (see `blt.data.manifest` for its layout).

    >>> data = PreparedData.open("data_cache/stdlib")   # doctest: +SKIP
    >>> train = data.split("train"); len(train), train.total_bytes, bytes(train[0][:20])  # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: Manifest, index: np.ndarray, shards: dict[str, list[np.memmap]]) -> None:
        self.path = path
        self.manifest = manifest
        self._index = index
        self._shards = shards

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> PreparedData:
        """Open a prepared directory after checking it against its manifest.

        Always checks the manifest, the sha256 of the index and that every shard exists with the recorded
        size; with ``verify`` also the sha256 of every shard (reads all the data once, about 1 GB/s).
        Any mismatch is a `DataError` naming the file.
        """
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"{root} is not a directory; prepare data with `blt data prepare SOURCE... --out {root}`")
        manifest = Manifest.read(root)
        index = _load_index(root, manifest)
        shards: dict[str, list[np.memmap]] = {split: [] for split in SPLITS}
        for entry in manifest.shards:
            file = root / entry.file
            if not file.is_file():
                raise DataError(f"shard {file} is missing; prepare the data again with --force")
            size = file.stat().st_size
            if size != entry.size:
                raise DataError(f"shard {file} has {size} bytes, the manifest says {entry.size}: it is truncated "
                                "or was changed; prepare the data again with --force")
            if verify and file_sha256(file) != entry.sha256:
                raise DataError(f"shard {file} is corrupt (its sha256 differs from the manifest); "
                                "prepare the data again with --force")
            shards[entry.split].append(np.memmap(file, dtype=np.uint8, mode="r"))
        return cls(root, manifest, index, shards)

    def split(self, name: str) -> Split:
        """The documents of split ``name`` ("train" or "val")."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        rows = np.flatnonzero(self._index[:, 0] == SPLITS.index(name))
        return Split(name, self.manifest, rows, self._index, self._shards[name])

    @property
    def fingerprint(self) -> str:
        """Identifies the prepared contents (the index's sha256, shortened); iterator states record it."""
        return self.manifest.index_sha256[:16]


def _load_index(root: Path, manifest: Manifest) -> np.ndarray:
    file = root / INDEX_NAME
    if not file.is_file():
        raise DataError(f"index {file} is missing; prepare the data again with --force")
    if file_sha256(file) != manifest.index_sha256:
        raise DataError(f"index {file} is corrupt (its sha256 differs from the manifest); "
                        "prepare the data again with --force")
    try:
        index = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"index {file} is not a readable .npy file ({err}); prepare the data again with --force") from None
    if index.dtype != np.int64 or index.shape != (len(manifest.documents), 4):
        raise DataError(f"index {file} has shape {index.shape} ({index.dtype}), expected "
                        f"({len(manifest.documents)}, 4) int64; prepare the data again with --force")
    problem = _index_inconsistency(index, manifest)
    if problem is not None:
        raise DataError(f"index {file} does not match the manifest: {problem}; prepare the data again with --force")
    return index


def _index_inconsistency(index: np.ndarray, manifest: Manifest) -> str | None:
    """What in the index contradicts the manifest (splits, sizes, shard bounds), or None."""
    splits = np.array([SPLITS.index(d.split) for d in manifest.documents], dtype=np.int64)
    sizes = np.array([d.size for d in manifest.documents], dtype=np.int64)
    split, shard, offset, length = (index[:, i] for i in range(4))
    if not (np.array_equal(split, splits) and np.array_equal(length, sizes)):
        return "the documents' splits or sizes differ"
    for number, name in enumerate(SPLITS):
        shard_sizes = np.array([s.size for s in manifest.shards if s.split == name], dtype=np.int64)
        rows = split == number
        if rows.any() and (shard[rows].min() < 0 or shard[rows].max() >= len(shard_sizes)):
            return f"a {name} document lies in a shard the manifest does not list"
        if rows.any() and (offset[rows].min() < 0 or np.any(offset[rows] + length[rows] > shard_sizes[shard[rows]])):
            return f"a {name} document lies outside its shard"
    return None


def byte_summary(histogram: np.ndarray | tuple[int, ...] | list[int]) -> dict[str, float]:
    """Fractions of byte classes in a 256-bin histogram (0 for an empty one).

    Keys: ``printable_ascii`` (0x20-0x7e, tab, newline, carriage return), ``other_control`` (other bytes
    below 0x20 and 0x7f, NUL excluded), ``nul``, ``high`` (0x80 and above), and ``distinct`` (how many byte
    values occur at all, as a count).

    >>> s = byte_summary([0] * 10 + [1] + [0] * 21 + [3] + [0] * 223); s["printable_ascii"], s["distinct"]
    (1.0, 2.0)
    """
    counts = np.asarray(histogram, dtype=np.float64)
    total = counts.sum()
    printable = counts[0x20:0x7F].sum() + counts[[0x09, 0x0A, 0x0D]].sum()
    control = counts[1:0x20].sum() - counts[[0x09, 0x0A, 0x0D]].sum() + counts[0x7F]
    fractions = {"printable_ascii": printable, "other_control": control, "nul": counts[0], "high": counts[0x80:].sum()}
    out = {k: float(v / total) if total else 0.0 for k, v in fractions.items()}
    out["distinct"] = float((counts > 0).sum())
    return out
