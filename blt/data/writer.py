"""`prepare`: documents -> uint8 shards, a document index and `manifest.json` in one directory.

Each document lands whole in one shard of its split; a split's shard is closed once the next document
would take it past ``shard_bytes`` (a larger document gets a shard of its own). Bytes are stored exactly
as in the files; BOS/EOS are added by the batch iterator, not stored.

Every file is written under a temporary name in the output directory, flushed to disk and renamed, and
`manifest.json` comes last: a directory without a manifest is never trusted, so an interrupted run costs
nothing but a rerun with ``--force``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from blt.data.manifest import (
    ENTROPIES_DIR,
    INDEX_NAME,
    MANIFEST_NAME,
    OWN_FILE,
    SPLITS,
    DocumentEntry,
    Manifest,
    ShardEntry,
    SplitStats,
    shard_file_name,
)
from blt.data.sources import (
    Scan,
    default_corpus_scan,
    default_corpus_sources,
    scan_sources,
)
from blt.errors import DataError
from blt.fileio import AtomicFile, fsync_dir
from blt.version import __version__

DEFAULT_SHARD_BYTES = 256 * 2**20
DEFAULT_VAL_FRACTION = 0.01


def _split_score(name: bytes, seed: int) -> float:
    """Where a name falls in [0, 1) for the split: a hash of the name and the seed."""
    digest = hashlib.sha256(f"{seed}\0".encode() + name).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def assign_split(name: bytes, seed: int, val_fraction: float) -> str:
    """``"val"`` for a fraction ``val_fraction`` of names, else ``"train"``; depends only on (name, seed).

    A document's split never changes when other documents are added or removed (but see `assign_splits`).
    """
    return "val" if _split_score(name, seed) < val_fraction else "train"


def assign_splits(names: Sequence[bytes], seed: int, val_fraction: float) -> list[str]:
    """`assign_split` of every name, except that of two or more documents each split gets at least one when
    ``val_fraction`` > 0: the name that hashes nearest to the other split moves there. (Training checks its
    validation split before step 1; a split left empty by chance is found here instead.)"""
    splits = [assign_split(name, seed, val_fraction) for name in names]
    if len(names) >= 2 and val_fraction > 0:
        scores = [_split_score(name, seed) for name in names]
        if "val" not in splits:
            splits[min(range(len(names)), key=scores.__getitem__)] = "val"
        elif "train" not in splits:
            splits[max(range(len(names)), key=scores.__getitem__)] = "train"
    return splits


def prepare(
    sources: Sequence[str | os.PathLike[str] | bytes] | str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    force: bool = False,
    progress: bool = True,
) -> Manifest:
    """Prepare files, directories and glob patterns (``None``: the default corpus) into ``out_dir``.

    Args:
        sources: paths and patterns, or one of them (None or empty: the default corpus); see
            `blt.data.sources` for how documents are found and named.
        out_dir: created if missing; an existing non-empty directory is refused unless ``force``, and even
            then only when it holds nothing but a previous prepare's files.
        val_fraction: expected fraction of documents in the validation split, in [0, 1).
        seed: seeds the split (hash of the document name and the seed).
        shard_bytes: target shard size.
        force: replace an existing prepared directory.
        progress: show a progress bar (bytes and bytes/s) on stderr.

    Returns the `Manifest` also written to ``out_dir/manifest.json``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_bytes < 1:
        raise DataError(f"shard_bytes must be positive, got {shard_bytes}")
    out = Path(out_dir)
    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    if not sources:
        scan, source_names = default_corpus_scan(), default_corpus_sources()
    else:
        scan = scan_sources(sources, exclude=os.fspath(out))
        source_names = tuple(os.fsencode(s).decode("utf-8", errors="backslashreplace") for s in sources)
    if not scan.documents:
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(scan.skipped.items())) or "nothing"
        raise DataError(f"no documents to prepare: the sources hold no non-empty files (skipped: {skipped})")
    _claim_output_dir(out, force)
    args = {"val_fraction": val_fraction, "seed": seed, "shard_bytes": shard_bytes}
    return _write(scan, out, source_names, args, progress)


def _claim_output_dir(out: Path, force: bool) -> None:
    """Make ``out`` an empty directory we may fill, removing a previous prepare's files only with ``force``."""
    if not out.exists() and not out.is_symlink():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise DataError(f"output {out} exists and is not a directory; choose another --out")
    entries = sorted(out.iterdir())
    if not entries:
        return
    def own(e: Path) -> bool:  # shards, index, manifest, temporaries, and precomputed entropies
        if e.name == ENTROPIES_DIR:
            return e.is_dir() and not e.is_symlink()
        return bool(OWN_FILE.match(e.name)) and e.is_file() and not e.is_symlink()

    foreign = [e.name for e in entries if not own(e)]
    if foreign:
        raise DataError(f"output directory {out} exists and holds files that are not prepared data "
                        f"(e.g. {foreign[0]!r}); choose another --out")
    if not force:
        raise DataError(f"output directory {out} already holds prepared data; pass --force to replace it")
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # first, so the directory is never trusted half-replaced
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)  # entropies of the replaced data are stale
        else:
            entry.unlink(missing_ok=True)


class _SplitWriter:
    """Appends the documents of one split to its shards."""

    def __init__(self, out: Path, split: str, shard_bytes: int) -> None:
        self.out, self.split, self.shard_bytes = out, split, shard_bytes
        self.current: AtomicFile | None = None
        self.shards: list[ShardEntry] = []
        self.documents = 0
        self.histogram = np.zeros(256, dtype=np.int64)

    def start_document(self, size: int) -> tuple[int, int]:
        """Pick the shard for a document of ``size`` bytes; returns (shard number, offset in it)."""
        if self.current is not None and self.current.size > 0 and self.current.size + size > self.shard_bytes:
            self._close_shard()
        if self.current is None:
            self.current = AtomicFile(self.out / shard_file_name(self.split, len(self.shards)))
        self.documents += 1
        return len(self.shards), self.current.size

    def write(self, chunk: bytes) -> None:
        assert self.current is not None
        self.current.write(chunk)
        self.histogram += np.bincount(np.frombuffer(chunk, dtype=np.uint8), minlength=256)

    def finish(self) -> SplitStats:
        if self.current is not None:
            self._close_shard()
        return SplitStats(self.documents, sum(s.size for s in self.shards), len(self.shards),
                          tuple(int(c) for c in self.histogram))

    def discard(self) -> None:
        if self.current is not None:
            self.current.discard()

    def _close_shard(self) -> None:
        assert self.current is not None
        self.current.commit()
        self.shards.append(ShardEntry(self.current.path.name, self.split, self.current.size,
                                      self.current.sha256.hexdigest()))
        self.current = None


def _write(scan: Scan, out: Path, source_names: tuple[str, ...], args: dict, progress: bool) -> Manifest:
    seed, val_fraction, shard_bytes = args["seed"], args["val_fraction"], args["shard_bytes"]
    writers = {split: _SplitWriter(out, split, shard_bytes) for split in SPLITS}
    index = np.zeros((len(scan.documents), 4), dtype=np.int64)
    entries: list[DocumentEntry] = []
    bar = tqdm(total=scan.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="prepare",
               disable=not progress, dynamic_ncols=True)
    assigned = assign_splits([doc.name for doc in scan.documents], seed, val_fraction)
    try:
        for row, (doc, split) in enumerate(zip(scan.documents, assigned)):
            writer = writers[split]
            shard, offset = writer.start_document(doc.size)
            digest, size = hashlib.sha256(), 0
            for chunk in doc.chunks():
                writer.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
            if size != doc.size:
                raise DataError(f"{doc.origin} changed while being read (it had {doc.size} bytes, then {size}); "
                                "prepare again once it is stable")
            index[row] = (SPLITS.index(split), shard, offset, size)
            entries.append(DocumentEntry(doc.name, size, digest.hexdigest(), split))
        splits = {split: writer.finish() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    finally:
        bar.close()

    buffer = io.BytesIO()
    np.save(buffer, index, allow_pickle=False)
    index_file = AtomicFile(out / INDEX_NAME)
    index_file.write(buffer.getvalue())
    index_file.commit()
    manifest = Manifest(
        sources=source_names,
        args=args,
        documents=tuple(entries),
        shards=tuple(s for writer in writers.values() for s in writer.shards),
        splits=splits,
        skipped=dict(sorted(scan.skipped.items())),
        index_sha256=index_file.sha256.hexdigest(),
        created_by=f"blt {__version__}",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    manifest_file = AtomicFile(out / MANIFEST_NAME)
    manifest_file.write(manifest.to_json().encode("utf-8"))
    manifest_file.commit()
    fsync_dir(out)
    return manifest
