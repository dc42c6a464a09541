"""The layout of a prepared data directory and its `manifest.json`.

A prepared directory holds, and nothing else:

- ``train-00000.bin``, ``val-00000.bin``, ...: raw document bytes, concatenated, one split per shard;
- ``index.npy``: int64 ``(N, 4)``, one row per document: ``split`` (0 train, 1 val), ``shard``, ``offset``,
  ``length``; row ``i`` describes ``manifest.documents[i]``;
- ``manifest.json``: written last, so a directory without it was never finished and is not trusted.

Document names are file paths as bytes. JSON needs text, so a name is stored as ``name`` (UTF-8, invalid
bytes shown as ``\\xNN``) plus ``name_hex`` (the exact bytes) when the name is not valid UTF-8.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blt.errors import DataError

FORMAT = "blt-prepared-bytes"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.npy"
SPLITS = ("train", "val")  # index column 0 holds the position in this tuple

ENTROPIES_DIR = "entropies"  # precomputed entropies live in this subfolder (blt.data.entropies)

# Every file a prepare run writes, including its temporary names; `--force` removes only these.
_OWN_NAMES = r"(manifest\.json|index\.npy|(train|val)-\d{5}\.bin)"
OWN_FILE = re.compile(rf"^({_OWN_NAMES}|\.{_OWN_NAMES}\.[0-9a-f]+\.tmp)$")  # tmp: see blt.fileio


def shard_file_name(split: str, number: int) -> str:
    """``train-00003.bin``."""
    return f"{split}-{number:05d}.bin"


def name_to_json(name: bytes) -> dict[str, str]:
    """A document name as JSON fields: readable ``name``, plus ``name_hex`` when it is not valid UTF-8.

    >>> name_to_json(b"a/b.txt")
    {'name': 'a/b.txt'}
    >>> name_to_json(b"caf\\xe9")
    {'name': 'caf\\\\xe9', 'name_hex': '636166e9'}
    """
    try:
        return {"name": name.decode("utf-8")}
    except UnicodeDecodeError:
        return {"name": name.decode("utf-8", errors="backslashreplace"), "name_hex": name.hex()}


def name_from_json(entry: dict[str, Any]) -> bytes:
    """Inverse of `name_to_json`."""
    if "name_hex" in entry:
        return bytes.fromhex(entry["name_hex"])
    return entry["name"].encode("utf-8")


@dataclass(frozen=True)
class DocumentEntry:
    """One input file (or in-memory document): its name, size, checksum and split."""

    name: bytes  # path relative to its source's root, '/'-separated; exact bytes
    size: int  # bytes
    sha256: str
    split: str  # "train" or "val"


@dataclass(frozen=True)
class ShardEntry:
    """One shard file of a split."""

    file: str  # name inside the prepared directory
    split: str
    size: int  # bytes
    sha256: str


@dataclass(frozen=True)
class SplitStats:
    """Totals of one split."""

    documents: int
    bytes: int
    shards: int
    byte_histogram: tuple[int, ...]  # 256 counts: how often each byte value occurs in the split


@dataclass(frozen=True)
class Manifest:
    """Everything `prepare` knows about a prepared directory; `manifest.json` is its JSON form."""

    sources: tuple[str, ...]  # as given, for people to read
    args: dict[str, Any]  # the other arguments of `prepare`: val_fraction, seed, shard_bytes
    documents: tuple[DocumentEntry, ...]  # in index order
    shards: tuple[ShardEntry, ...]
    splits: dict[str, SplitStats]  # keys: SPLITS
    skipped: dict[str, int]  # inputs that are not documents: "empty", "duplicate", "special"
    index_sha256: str
    created_by: str
    created_at: str  # ISO 8601, UTC
    format_version: int = FORMAT_VERSION
    format: str = FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.splits.values())

    @property
    def total_documents(self) -> int:
        return len(self.documents)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "sources": list(self.sources),
            "args": self.args,
            "splits": {k: {**asdict(v), "byte_histogram": list(v.byte_histogram)} for k, v in self.splits.items()},
            "skipped": self.skipped,
            "index_sha256": self.index_sha256,
            "shards": [asdict(s) for s in self.shards],
            "documents": [{**name_to_json(d.name), "size": d.size, "sha256": d.sha256, "split": d.split}
                          for d in self.documents],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"not a {FORMAT} manifest (its 'format' field is {data.get('format')!r})"
                            if isinstance(data, dict) else "the manifest is not a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise DataError(f"manifest format version {data.get('format_version')!r} is not supported by this blt "
                            f"(it reads version {FORMAT_VERSION}); prepare the data again")
        try:
            manifest = cls(
                sources=tuple(str(source) for source in data["sources"]),
                args=dict(data["args"]),
                documents=tuple(
                    DocumentEntry(name_from_json(d), int(d["size"]), str(d["sha256"]), str(d["split"]))
                    for d in data["documents"]
                ),
                shards=tuple(ShardEntry(str(s["file"]), str(s["split"]), int(s["size"]), str(s["sha256"]))
                             for s in data["shards"]),
                splits={k: SplitStats(int(v["documents"]), int(v["bytes"]), int(v["shards"]),
                                      tuple(int(c) for c in v["byte_histogram"]))
                        for k, v in data["splits"].items()},
                skipped={str(k): int(v) for k, v in data["skipped"].items()},
                index_sha256=str(data["index_sha256"]),
                created_by=str(data["created_by"]),
                created_at=str(data["created_at"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"the manifest is malformed ({type(err).__name__}: {err}); "
                            "prepare the data again") from None
        problem = _inconsistency(manifest)
        if problem is not None:
            raise DataError(f"the manifest is inconsistent: {problem}; prepare the data again")
        return manifest

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read ``DIR/manifest.json``; a missing or unreadable manifest is a `DataError` naming the file."""
        file = Path(path) / MANIFEST_NAME
        if not file.is_file():
            raise DataError(f"{file} is missing: {path} is not a prepared data directory, or its `blt data prepare` "
                            f"was interrupted; run `blt data prepare SOURCE... --out {path} --force`")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{file} is not valid JSON ({err}); prepare the data again with --force") from None
        try:
            return cls.from_dict(data)
        except DataError as err:
            raise DataError(f"{file}: {err}") from None


_SHARD_FILE = re.compile(r"^(train|val)-\d{5}\.bin$")
ARG_NAMES = ("val_fraction", "seed", "shard_bytes")


def _inconsistency(m: Manifest) -> str | None:
    """What in a parsed manifest contradicts the layout `prepare` writes, or None."""
    if set(m.splits) != set(SPLITS):
        return f"its splits are {sorted(m.splits)}, not {list(SPLITS)}"
    missing_args = [name for name in ARG_NAMES if name not in m.args]
    if missing_args:
        return f"its args lack {missing_args}"
    if any(n < 0 for n in m.skipped.values()):
        return "a skipped count is negative"
    for entry in m.shards:
        if entry.split not in SPLITS or not _SHARD_FILE.match(entry.file) or not entry.file.startswith(entry.split):
            return f"shard {entry.file!r} of split {entry.split!r} is not a shard file name of a split"
        if entry.size < 0:
            return f"shard {entry.file} has a negative size"
    if len({entry.file for entry in m.shards}) != len(m.shards):
        return "a shard is listed twice"
    for doc in m.documents:
        if doc.split not in SPLITS or doc.size < 0:
            return f"document {doc.name!r} has split {doc.split!r} and size {doc.size}"
    for name, stats in m.splits.items():
        docs = [d for d in m.documents if d.split == name]
        shards = [s for s in m.shards if s.split == name]
        if len(stats.byte_histogram) != 256 or any(c < 0 for c in stats.byte_histogram):
            return f"split {name}'s byte histogram is not 256 counts"
        if (stats.documents, stats.bytes, stats.shards) != (len(docs), sum(d.size for d in docs), len(shards)):
            return (f"split {name} claims {stats.documents} documents, {stats.bytes} bytes and {stats.shards} shards, "
                    f"its entries have {len(docs)}, {sum(d.size for d in docs)} and {len(shards)}")
        if sum(stats.byte_histogram) != stats.bytes or sum(s.size for s in shards) != stats.bytes:
            return f"split {name}'s byte histogram or shard sizes do not add up to its {stats.bytes} bytes"
    return None
