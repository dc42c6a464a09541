"""Computing the per-byte entropies that `blt.data.entropies` stores beside a prepared data directory, and
finding those of an entropy model.

Resuming. Each part is written under a temporary name and renamed; the manifest lists the finished parts
with their size and sha256, is rewritten after each one, and says ``"status": "complete"`` only at the
end. A rerun (same entropy model, same data) verifies the finished parts, keeps them and computes the
rest; a file that the manifest does not list is never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from blt.config import ENTROPY_PRECISIONS
from blt.data.entropies import (
    DTYPE,
    MANIFEST_NAME,
    EntropiesManifest,
    EntropyPart,
    PrecomputedEntropies,
    check_part,
    content_fingerprint,
    part_file_name,
    plan_parts,
)
from blt.data.manifest import ENTROPIES_DIR, SPLITS
from blt.data.prepared import PreparedData, Split
from blt.errors import DataError
from blt.fileio import AtomicFile, atomic_write_text, fsync_dir
from blt.patching.entropy_model import EntropyModel
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, PAD_ID
from blt.version import __version__

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


def entropy_model_key(model: EntropyModel, precision: str | None = None) -> str:
    """The name of an entropy model's directory under ``entropies/``: 16 hex digits of the sha256 of its
    config and weights (the config too, since e.g. its attention window or its precision changes the
    entropies), computing in ``precision`` (default: its config's). The default precision, fp32, is left out
    of the hash, so its keys are those of configs that had no precision field."""
    config = model.cfg.to_dict() | ({"precision": precision} if precision is not None else {})
    if config.get("precision") == "fp32":
        del config["precision"]
    text = json.dumps(config, sort_keys=True)
    return hashlib.sha256(f"{text}\n{weights_sha256(model)}".encode()).hexdigest()[:16]


def with_precision(model: EntropyModel, precision: str) -> EntropyModel:
    """``model`` with its config's ``precision`` set (in place: the weights are the same), which
    `EntropyModel.entropies` computes in and `entropy_model_key` hashes."""
    model.cfg = dataclasses.replace(model.cfg, precision=precision)
    return model


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
        entropy_model: runs on its own device, in its config's precision (`with_precision`); put it in eval
            mode.
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
            if split in SPLITS and match and check_part(root, part, verify=True) is None:
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


def find_entropies(data: PreparedData, entropy_model: EntropyModel, *, verify: bool = True,
               splits: tuple[str, ...] = SPLITS) -> PrecomputedEntropies | None:
    """The entropies of ``entropy_model`` stored in ``data`` (opened for ``splits``); None when none were
    ever computed for it, a `DataError` when some were but can't be used (unfinished, stale or corrupt)."""
    key = entropy_model_key(entropy_model)
    if not (data.path / ENTROPIES_DIR / key).is_dir():
        return None
    return PrecomputedEntropies.open(data, key, verify=verify, splits=splits)


def precomputed_precisions(data: PreparedData, entropy_model: EntropyModel) -> list[str]:
    """The precisions in which entropies of ``entropy_model``'s weights and config (but for its precision) have
    been precomputed in ``data``, complete or not; the model's own first."""
    own = entropy_model.cfg.precision
    return [precision for precision in (own, *(p for p in ENTROPY_PRECISIONS if p != own))
            if (data.path / ENTROPIES_DIR / entropy_model_key(entropy_model, precision)).is_dir()]


def usable_entropies(data: PreparedData, entropy_model: EntropyModel, log: Callable[[str], None],
                 fallback: str, splits: tuple[str, ...] = SPLITS) -> PrecomputedEntropies | None:
    """`find_entropies`, but None instead of a `DataError` for entropies that can't be used; logs one line saying
    which: where the entropies are, or why ``fallback`` (what is done instead, e.g. "computed during
    training") and how to precompute them."""
    try:
        stored = find_entropies(data, entropy_model, splits=splits)
    except DataError as err:
        log(f"entropies: {fallback}, since {err}")
        return None
    if stored is None:
        log(f"entropies: {fallback} (none precomputed in {entropy_model.cfg.precision} for this entropy model in "
            f"{data.path}; `blt patch --data {data.path} --entropy-model RUN` precomputes them)")
    else:
        log(f"entropies: precomputed ({stored.manifest.precision}) in {stored.path}")
    return stored
