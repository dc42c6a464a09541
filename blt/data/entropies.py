"""Per-byte entropies precomputed beside a prepared data directory, so that training pays for patching once.

Layout, inside the prepared directory::

    entropies/<key>/manifest.json      what was computed, with which model, on which data; written last
    entropies/<key>/train-00000.f16    float16 (little-endian) values, whole documents in split order
    entropies/<key>/val-00000.f16      ...

``key`` names the entropy model: 16 hex digits of the sha256 of its config and weights
(`entropy_model_key`), so the entropies of several entropy models coexist, and a BLT run finds those of
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

Resuming. Each part is written under a temporary name and renamed; the manifest lists the finished parts
with their size and sha256, is rewritten after each one, and says ``"status": "complete"`` only at the
end. A rerun (same entropy model, same data) verifies the finished parts, keeps them and computes the
rest; a file that the manifest does not list is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from blt.data.manifest import ENTROPIES_DIR, SPLITS
from blt.data.prepared import PreparedData, Split, file_sha256
from blt.errors import DataError
from blt.fileio import AtomicFile, atomic_write_text, fsync_dir
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, PAD_ID

if TYPE_CHECKING:
    from blt.patching.entropy_model import EntropyModel

MANIFEST_NAME = "manifest.json"
FORMAT = "blt-entropies"
FORMAT_VERSION = 1
DTYPE = np.dtype("<f2")  # float16: entropies lie in [0, ln 260 ≈ 5.56] nats, kept to ~0.002
DEFAULT_BATCH_SIZE = 64  # documents per entropy-model call
_MIN_PART_VALUES = 2**20  # values per part file (2 MiB) at least: what a crash can cost to redo ...
_MAX_PARTS = 1024  # ... but about this many parts at most, since the manifest is rewritten after each
_MAX_BATCH_IDS = 2**20  # documents x padded length per entropy-model call (bounds memory)
_MAX_PADDING = 1.25  # padded ids per document id in one call, at most (padding is computed too)
_OWN_FILE = re.compile(r"^\.?(manifest\.json|(train|val)-\d{5}\.f16)(\.[0-9a-f]+\.tmp)?$")


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's weights: every state-dict tensor's name, dtype, shape and bytes, in name order.

    Independent of the file (final weights or a checkpoint, a run or a BLT run's copy) and of the device.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {t.dtype} {list(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def entropy_model_key(model: EntropyModel) -> str:
    """The name of an entropy model's directory under ``entropies/``: 16 hex digits of the sha256 of its
    config and weights (the config too, since e.g. its attention window changes the entropies)."""
    config = json.dumps(model.cfg.to_dict(), sort_keys=True)
    return hashlib.sha256(f"{config}\n{weights_sha256(model)}".encode()).hexdigest()[:16]


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

    def to_json(self) -> str:
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "complete" if self.complete else "incomplete",
            "key": self.key,
            "entropy_model": {"run": self.entropy_model, "weights_sha256": self.weights_sha256,
                              "config": self.model_config},
            "data_fingerprint": self.data_fingerprint,
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


def _check_part(directory: Path, part: EntropyPart, verify: bool) -> str | None:
    """Why a recorded part can't be used (missing, wrong size, wrong sha256), or None."""
    file = directory / part.file
    if not file.is_file():
        return f"{file} is missing"
    if file.stat().st_size != part.size:
        return f"{file} has {file.stat().st_size} bytes, the manifest says {part.size}"
    if verify and file_sha256(file) != part.sha256:
        return f"{file} is corrupt (its sha256 differs from the manifest)"
    return None


# --- computing -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrecomputeReport:
    """What `precompute_entropies` did."""

    path: Path  # the ``entropies/<key>`` directory
    key: str
    documents: int
    bytes: int  # document bytes covered (both splits)
    computed_bytes: int  # of which computed by this call (the rest was finished before)
    seconds: float

    @property
    def reused_bytes(self) -> int:
        return self.bytes - self.computed_bytes


def precompute_entropies(
    data: PreparedData,
    entropy_model: EntropyModel,
    *,
    source: str | os.PathLike[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    part_values: int | None = None,
    progress: bool = True,
) -> PrecomputeReport:
    """Compute (or finish computing) ``entropy_model``'s per-byte entropies of every document of ``data``
    into ``data.path / "entropies" / entropy_model_key(entropy_model)``; see the module docstring.

    Args:
        data: an opened prepared directory; the entropies are written inside it.
        entropy_model: runs on its own device, in float32; put it in eval mode.
        source: the run directory it was loaded from, recorded in the manifest for people to read.
        batch_size: documents per entropy-model call (fewer when they are long).
        part_values: values per part file for a new directory (default: 2**20, or more to keep to about
            1024 parts); an unfinished one keeps its own.
        progress: show a progress bar (document bytes and bytes/s) on stderr.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if part_values is not None and part_values < 2:
        raise DataError(f"part_values must be at least 2, got {part_values}")
    start_time = time.perf_counter()
    key, weights = entropy_model_key(entropy_model), weights_sha256(entropy_model)
    fingerprint = content_fingerprint(data)
    root = data.path / ENTROPIES_DIR / key
    root.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_run(root, weights, fingerprint)
    _remove_own_files(root, temporaries_only=earlier is not None)  # without an earlier run: start clean
    splits = {split: data.split(split) for split in SPLITS}
    finished: dict[tuple[str, int], EntropyPart] = {}
    if earlier is not None:
        part_values, finished = earlier
    elif part_values is None:
        values = sum(docs.total_bytes + 2 * len(docs) for docs in splits.values())
        part_values = max(_MIN_PART_VALUES, -(-values // _MAX_PARTS))

    def record(complete: bool) -> None:
        from blt import __version__

        manifest = EntropiesManifest(
            key=key, entropy_model=str(Path(source).resolve()), weights_sha256=weights,
            model_config=entropy_model.cfg.to_dict(), data_fingerprint=fingerprint, part_values=part_values,
            parts={split: tuple(part for (s, _), part in sorted(finished.items()) if s == split) for split in SPLITS},
            complete=complete, created_by=f"blt {__version__}",
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        atomic_write_text(root / MANIFEST_NAME, manifest.to_json())

    plans = {split: plan_parts(docs.lengths, part_values) for split, docs in splits.items()}
    todo = [(split, n, first, stop) for split, plan in plans.items() for n, (first, stop) in enumerate(plan)
            if not _holds(finished.get((split, n)), first, stop)]
    total = sum(docs.total_bytes for docs in splits.values())
    computed = sum(int(splits[split].lengths[first:stop].sum()) for split, _, first, stop in todo)
    bar = tqdm(total=total, initial=total - computed, unit="B", unit_scale=True, unit_divisor=1024, desc="entropies",
               disable=not progress, dynamic_ncols=True)
    try:
        for split, number, first, stop in todo:
            values = _part_entropies(entropy_model, splits[split], first, stop, batch_size, bar.update)
            with AtomicFile(root / part_file_name(split, number)) as f:
                f.write(values.tobytes())
            finished[split, number] = EntropyPart(f.path.name, first, stop - first, f.size, f.sha256.hexdigest())
            record(complete=False)
    finally:
        bar.close()
    record(complete=True)
    fsync_dir(root)
    return PrecomputeReport(root, key, sum(len(d) for d in splits.values()), total, computed,
                            time.perf_counter() - start_time)


def _holds(part: EntropyPart | None, first: int, stop: int) -> bool:
    """Whether ``part`` is a finished part of exactly documents ``first .. stop - 1``."""
    return part is not None and (part.first_document, part.documents) == (first, stop - first)


def _earlier_run(root: Path, weights: str, fingerprint: str) -> tuple[int, dict[tuple[str, int], EntropyPart]] | None:
    """The part size of an earlier run in ``root`` and its verified finished parts by (split, number), or
    None when there is no usable earlier run (no manifest, or one for other weights or other data)."""
    try:
        previous = EntropiesManifest.read(root)
    except DataError:
        return None
    if previous.weights_sha256 != weights or previous.data_fingerprint != fingerprint:
        return None
    parts = {}
    for split, recorded in previous.parts.items():
        for part in recorded:
            match = re.fullmatch(rf"{re.escape(split)}-(\d{{5}})\.f16", part.file)
            if split in SPLITS and match and _check_part(root, part, verify=True) is None:
                parts[split, int(match.group(1))] = part
    return previous.part_values, parts


def _remove_own_files(root: Path, temporaries_only: bool) -> None:
    """Delete what an earlier run left in ``root``: its temporary files, or (not ``temporaries_only``)
    everything it writes, manifest first so that the directory is never trusted half-cleaned."""
    if not temporaries_only:
        (root / MANIFEST_NAME).unlink(missing_ok=True)
    for entry in root.iterdir():
        match = _OWN_FILE.match(entry.name)
        if match and entry.is_file() and (match.group(3) is not None or not temporaries_only):
            entry.unlink()


def _batches(sizes: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Indices of documents (``sizes`` in ids) grouped for one entropy-model call each, shortest first:
    at most ``batch_size`` documents, at most `_MAX_BATCH_IDS` ids once padded to the longest (a longer
    document goes alone), and at most `_MAX_PADDING` times as many ids padded as unpadded.

    >>> [g.tolist() for g in _batches(np.array([10, 3, 3, 4, 9]), batch_size=4)]
    [[1, 2, 3], [4, 0]]
    """
    group: list[int] = []
    real = 0  # ids of the group without padding
    for d in np.argsort(sizes, kind="stable").tolist():
        padded = (len(group) + 1) * int(sizes[d])  # sorted: document d would be the longest
        if group and (len(group) == batch_size or padded > _MAX_BATCH_IDS
                      or padded > _MAX_PADDING * (real + int(sizes[d]))):
            yield np.array(group)
            group, real = [], 0
        group.append(d)
        real += int(sizes[d])
    if group:
        yield np.array(group)


def _part_entropies(model: EntropyModel, docs: Split, first: int, stop: int, batch_size: int,
                    on_bytes: Callable[[int], Any]) -> np.ndarray:
    """Values of documents ``first .. stop - 1`` of a split, concatenated: float16 (Σ (length + 2),)."""
    sizes = docs.lengths[first:stop] + 2  # ids per document: BOS, bytes, EOS
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    out = np.empty(int(offsets[-1]), dtype=DTYPE)
    device = next(model.parameters()).device
    for group in _batches(sizes, batch_size):
        ids = np.full((len(group), int(sizes[group].max())), PAD_ID, dtype=np.int64)  # (B, T), padded after EOS
        for row, d in enumerate(group.tolist()):
            n = int(sizes[d])
            ids[row, 0], ids[row, n - 1] = BOS_ID, EOS_ID
            ids[row, 1:n - 1] = docs[first + d]
            ids[row, 1:n - 1] += OFFSET
        # The model picks its chunk length for the number of rows (`EntropyModel.default_chunk_len`).
        entropies = model.entropies(torch.from_numpy(ids).to(device), batch_size=len(group)).cpu().numpy()  # (B, T)
        for row, d in enumerate(group.tolist()):
            out[offsets[d]:offsets[d + 1]] = entropies[row, :sizes[d]]
        on_bytes(int(sizes[group].sum()) - 2 * len(group))
    return out


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

    >>> stored = PrecomputedEntropies.find(data, entropy_model)          # doctest: +SKIP
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
                problem = _check_part(root, part, verify)
                if problem is not None:
                    raise DataError(f"precomputed entropies: {problem}; {redo} to compute them again")
                opened.append((part, np.memmap(root / part.file, dtype=DTYPE, mode="r")))
            opened_splits[split] = SplitEntropies(split, documents.lengths, opened)
        return cls(root, manifest, opened_splits)

    @classmethod
    def find(cls, data: PreparedData, entropy_model: EntropyModel, *, verify: bool = True,
             splits: tuple[str, ...] = SPLITS) -> PrecomputedEntropies | None:
        """The entropies of ``entropy_model`` stored in ``data`` (opened for ``splits``); None when none were
        ever computed for it, a `DataError` when some were but can't be used (unfinished, stale or corrupt)."""
        key = entropy_model_key(entropy_model)
        if not (data.path / ENTROPIES_DIR / key).is_dir():
            return None
        return cls.open(data, key, verify=verify, splits=splits)

    @classmethod
    def find_usable(cls, data: PreparedData, entropy_model: EntropyModel, log: Callable[[str], None],
                    fallback: str, splits: tuple[str, ...] = SPLITS) -> PrecomputedEntropies | None:
        """`find`, but None instead of a `DataError` for entropies that can't be used; logs one line saying
        which: where the entropies are, or why ``fallback`` (what is done instead, e.g. "computed during
        training") and how to precompute them."""
        try:
            stored = cls.find(data, entropy_model, splits=splits)
        except DataError as err:
            log(f"entropies: {fallback}, since {err}")
            return None
        if stored is None:
            log(f"entropies: {fallback} (none precomputed for this entropy model in {data.path}; "
                f"`blt patch --data {data.path} --entropy-model RUN` precomputes them)")
        else:
            log(f"entropies: precomputed in {stored.path}")
        return stored
