"""Per-byte entropies stored beside a prepared data directory, so that training pays for patching once: the
format and reading them (`blt.patching.precompute` computes them).

Layout, inside the prepared directory::

    entropies/<key>/manifest.json      what was computed, with which model, on which data; written last
    entropies/<key>/train-00000.f16    float16 (little-endian) values, whole documents in split order
    entropies/<key>/val-00000.f16      ...

``key`` names the entropy model: 16 hex digits of the sha256 of its config and weights
(`blt.patching.precompute.entropy_model_key`), so the entropies of several entropy models coexist, and a
BLT run finds those of
the entropy model it carries whichever run directory they were computed from.

Values. The entropy model sees each document alone, as ``[BOS] bytes [EOS]``, and a document of ``L``
bytes gets ``L + 2`` values: value ``j`` is ``H_j``, the entropy in nats of the next-id distribution
after id ``j`` (value 0, after BOS, decides whether byte 1 starts a patch; value ``L + 1`` is EOS's).
That is exactly the document's stretch of the batch iterator's stream ``[BOS] doc [EOS] [BOS] ...``, so
the iterator copies ids and entropies at the same offsets. A split's documents are cut into parts of
whole documents of about ``part_values`` values each (a longer document gets a part of its own).

Context. Every value sees the whole document before it and nothing of other documents (the models are
document-masked anyway), as in the reference implementation. Patching on the fly sees only the row: for
a row that starts inside a document (after the BOS the iterator puts in front of it), the first bytes
then get entropies from a truncated context. Precomputed ones keep the full context, so the two can
place different boundaries in such rows; rows that start at a document's start get the same ones. For
that row-initial BOS the iterator gives the value stored just before the row's first byte: the
prediction of that byte from its full context.

"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blt.data.manifest import ENTROPIES_DIR, SPLITS
from blt.data.prepared import PreparedData, file_sha256
from blt.errors import DataError

MANIFEST_NAME = "manifest.json"
FORMAT = "blt-entropies"
FORMAT_VERSION = 1
DTYPE = np.dtype("<f2")  # float16: entropies lie in [0, ln 260 ≈ 5.56] nats, kept to ~0.002


def content_fingerprint(data: PreparedData) -> str:
    """Identifies a prepared directory's contents: its index and every shard's sha256 (from the manifest).

    Unlike `PreparedData.fingerprint`, which covers only the index (document positions and lengths),
    this changes when a document's bytes change.
    """
    digest = hashlib.sha256(data.manifest.index_sha256.encode())
    for shard in data.manifest.shards:
        digest.update(f"\n{shard.file} {shard.sha256}".encode())
    return digest.hexdigest()[:16]


def part_file_name(split: str, number: int) -> str:
    """``train-00003.f16``."""
    return f"{split}-{number:05d}.f16"


def plan_parts(lengths: np.ndarray, part_values: int) -> list[tuple[int, int]]:
    """Cut documents (``lengths`` in bytes, in split order) into parts ``[(first, stop), ...]`` of whole
    consecutive documents, each of at most ``part_values`` values (``length + 2`` per document) unless a
    single document needs more.

    >>> plan_parts(np.array([3, 3, 10, 1]), part_values=10)
    [(0, 2), (2, 3), (3, 4)]
    """
    parts, first, total = [], 0, 0
    for i, length in enumerate(lengths.tolist()):
        if total and total + length + 2 > part_values:
            parts.append((first, i))
            first, total = i, 0
        total += length + 2
    if total:
        parts.append((first, len(lengths)))
    return parts


# --- the manifest ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EntropyPart:
    """One finished part file: documents ``first_document .. first_document + documents - 1`` of its split."""

    file: str
    first_document: int
    documents: int
    size: int  # bytes: 2 per value
    sha256: str


@dataclass(frozen=True)
class EntropiesManifest:
    """``entropies/<key>/manifest.json``: which model, which data, which parts are finished."""

    key: str
    entropy_model: str  # the run directory they were computed with, for people to read
    weights_sha256: str  # `weights_sha256` of that entropy model
    model_config: dict[str, Any]  # its `EntropyModelConfig` as a dict
    data_fingerprint: str  # `content_fingerprint` of the prepared data
    part_values: int
    parts: dict[str, tuple[EntropyPart, ...]]  # finished parts per split, ordered by file name
    complete: bool
    created_by: str
    updated_at: str  # ISO 8601, UTC

    @property
    def precision(self) -> str:
        """What the entropies were computed in (fp32 or bf16): the model config's ``precision``."""
        return str(self.model_config.get("precision", "fp32"))

    def to_json(self) -> str:
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "complete" if self.complete else "incomplete",
            "key": self.key,
            "entropy_model": {"run": self.entropy_model, "weights_sha256": self.weights_sha256,
                              "config": self.model_config},
            "data_fingerprint": self.data_fingerprint,
            "precision": self.precision,  # of the computation; stored as float16 either way
            "dtype": "float16",
            "values": "per document of L bytes, L + 2 entropies (nats) of [BOS] bytes [EOS], next-id distributions",
            "part_values": self.part_values,
            "splits": {split: [vars(p) for p in parts] for split, parts in self.parts.items()},
            "created_by": self.created_by,
            "updated_at": self.updated_at,
        }
        return json.dumps(record, indent=1) + "\n"

    @classmethod
    def read(cls, directory: Path) -> EntropiesManifest:
        """Read ``directory/manifest.json``; a missing, foreign or malformed one is a `DataError`."""
        file = directory / MANIFEST_NAME
        if not file.is_file():
            raise DataError(f"{file} is missing")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{file} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{file} is not a version {FORMAT_VERSION} {FORMAT} manifest")
        try:
            model = data["entropy_model"]
            return cls(
                key=str(data["key"]),
                entropy_model=str(model["run"]),
                weights_sha256=str(model["weights_sha256"]),
                model_config=dict(model["config"]),
                data_fingerprint=str(data["data_fingerprint"]),
                part_values=int(data["part_values"]),
                parts={split: tuple(EntropyPart(str(p["file"]), int(p["first_document"]), int(p["documents"]),
                                                int(p["size"]), str(p["sha256"])) for p in parts)
                       for split, parts in data["splits"].items()},
                complete=data["status"] == "complete",
                created_by=str(data["created_by"]),
                updated_at=str(data["updated_at"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{file} is malformed ({type(err).__name__}: {err})") from None


def check_part(directory: Path, part: EntropyPart, verify: bool) -> str | None:
    """Why a recorded part can't be used (missing, wrong size, wrong sha256), or None."""
    file = directory / part.file
    if not file.is_file():
        return f"{file} is missing"
    if file.stat().st_size != part.size:
        return f"{file} has {file.stat().st_size} bytes, the manifest says {part.size}"
    if verify and file_sha256(file) != part.sha256:
        return f"{file} is corrupt (its sha256 differs from the manifest)"
    return None


# --- reading -------------------------------------------------------------------------------------------

class SplitEntropies:
    """The precomputed entropies of one split: ``entropies[i]`` is float16 ``(len(split[i]) + 2,)``, the
    values of document ``i``'s ``[BOS] bytes [EOS]``."""

    def __init__(self, name: str, lengths: np.ndarray, parts: list[tuple[EntropyPart, np.memmap]]) -> None:
        self.name = name
        self._sizes = lengths + 2
        self._part = np.repeat(np.arange(len(parts)), [part.documents for part, _ in parts])
        starts = np.concatenate(([0], np.cumsum(self._sizes)))[:-1]  # of each document in the split's values
        firsts = np.array([part.first_document for part, _ in parts], dtype=np.int64)
        self._offset = starts - starts[firsts][self._part]  # of each document in its part
        self._values = [values for _, values in parts]

    def __len__(self) -> int:
        return len(self._sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        """Values of document ``i`` as a read-only float16 view of its part file (no copy)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for split {self.name!r} of {len(self)} documents")
        start = int(self._offset[i])
        return self._values[int(self._part[i])][start:start + int(self._sizes[i])]


class PrecomputedEntropies:
    """A finished ``entropies/<key>`` directory of a prepared directory (see the module docstring).

    >>> stored = PrecomputedEntropies.open(data, key)                    # doctest: +SKIP
    >>> it = ByteBatchIterator(data, "train", 512, 8, entropies=stored)   # yields (ids, entropies)  # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: EntropiesManifest, splits: dict[str, SplitEntropies]) -> None:
        self.path = path
        self.manifest = manifest
        self._splits = splits

    @property
    def key(self) -> str:
        return self.manifest.key

    @property
    def data_fingerprint(self) -> str:
        """`content_fingerprint` of the data they were computed on."""
        return self.manifest.data_fingerprint

    def split(self, name: str) -> SplitEntropies:
        """The entropies of split ``name``, aligned with ``data.split(name)``."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        if name not in self._splits:
            raise DataError(f"split {name!r} of {self.path} was not opened (opened: {', '.join(self._splits)})")
        return self._splits[name]

    @classmethod
    def open(cls, data: PreparedData, key: str, *, verify: bool = True,
             splits: tuple[str, ...] = SPLITS) -> PrecomputedEntropies:
        """Open the entropies ``key`` of ``data`` for ``splits`` after checking them against their manifest
        (with ``verify``, also the sha256 of every part of those splits: only the splits a caller reads are
        hashed, so evaluating on ``val`` does not read the whole training split's entropies). Missing,
        unfinished, stale or corrupt ones are a `DataError` that says how to (re)compute them."""
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise DataError(f"unknown split(s) {unknown}; splits are {', '.join(SPLITS)}")
        root = data.path / ENTROPIES_DIR / key
        redo = f"run `blt patch --data {data.path} --entropy-model RUN` with the entropy model"
        if not root.is_dir():
            raise DataError(f"no precomputed entropies {key} in {data.path}; {redo} to compute them")
        try:
            manifest = EntropiesManifest.read(root)
        except DataError as err:
            raise DataError(f"precomputed entropies {root} are unusable: {err}; {redo} to compute them again") from None
        if not manifest.complete:
            raise DataError(f"precomputed entropies {root} are unfinished; {redo} to finish them")
        if manifest.data_fingerprint != content_fingerprint(data):
            raise DataError(f"precomputed entropies {root} were computed on other data (was {data.path} prepared "
                            f"again?); {redo} to compute them again")
        opened_splits = {}
        for split in SPLITS:
            if split not in splits:
                continue
            documents = data.split(split)
            parts = manifest.parts.get(split, ())
            covered = [(p.first_document, p.documents) for p in parts]
            expected = [(first, stop - first) for first, stop in plan_parts(documents.lengths, manifest.part_values)]
            if covered != expected:
                raise DataError(f"precomputed entropies {root} do not cover split {split!r} as planned; {redo} "
                                "to compute them again")
            opened = []
            for part in parts:
                problem = check_part(root, part, verify)
                if problem is not None:
                    raise DataError(f"precomputed entropies: {problem}; {redo} to compute them again")
                opened.append((part, np.memmap(root / part.file, dtype=DTYPE, mode="r")))
            opened_splits[split] = SplitEntropies(split, documents.lengths, opened)
        return cls(root, manifest, opened_splits)
