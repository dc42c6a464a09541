"""Batches of byte ids packed from a prepared split: resumable, deterministic, shardable across ranks.

The documents of a split, in some order, form one stream of ids: ``[BOS] doc [EOS] [BOS] doc [EOS] ...``.
Rows of ``seq_len`` ids are cut from it one after another. The model needs BOS first in every row, so a
row that starts inside a document gets an extra BOS and continues from there::

    stream:  BOS a b c d e EOS BOS f g EOS           seq_len = 4
    rows:    BOS a b c | BOS d e EOS | BOS f g EOS

Every stream id lands in exactly one row, so every byte is a target exactly once. (One exception: a row
never starts with a lone EOS; that EOS is dropped and the row starts at the next document.)

Training (`ByteBatchIterator`) visits the documents in a new order every epoch, drawn from (seed, epoch),
and runs forever: the stream goes straight on from one epoch into the next, so batches are always full.
By default (``order="shuffled"``) the rows that start in an epoch are then taken in a shuffled order,
also drawn from (seed, epoch), so the rows of one batch come from all over the split rather than from
the one or two documents that consecutive rows would hold; every id is still in exactly one row.
``order="stream"`` takes rows one after another. The position is an `IteratorState`; saving it after k
batches and loading it into a fresh iterator gives the same next batches. Validation
(`validation_batches`) is one pass in stored order, padded with PAD_ID at the end.

With ``world_size`` > 1, ``batch_size`` is the global batch and rank r gets rows r, r + world_size, ...
of it. Every rank walks the whole stream, so the state is global and identical on all ranks.

Given precomputed entropies (`blt.data.entropies`), both yield ``(ids, entropies)``: the same ids, and a
float32 tensor of the same shape whose value at each position is the stored entropy of that id in its
document's ``[BOS] bytes [EOS]`` (full-document context). A row that starts inside a document gets, for
its extra BOS, the value stored just before the row's first byte (that byte's prediction); PAD gets 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from blt.data.entropies import PrecomputedEntropies, SplitEntropies, content_fingerprint
from blt.data.prepared import PreparedData, Split
from blt.errors import DataError
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, PAD_ID

_MASK64 = 2**64 - 1
ROW_ORDERS = ("shuffled", "stream")  # rows of an epoch in a seeded shuffled order, or one after another
_ROW_SALT = 0x5F3759DF  # mixed into the seed for the order of rows, so it is not the order of documents


@dataclass(frozen=True)
class IteratorState:
    """Where a `ByteBatchIterator` is in its stream; JSON-able via `to_dict` / `from_dict`."""

    epoch: int
    position: int  # index into the epoch's document order of the document to continue (shuffled: where the
    offset: int  # epoch's rows begin); ids of that document already emitted, counting its BOS (0: none yet)
    seed: int
    split: str
    data_fingerprint: str  # `PreparedData.fingerprint` of the data it was taken on
    order: str = "stream"  # one of ROW_ORDERS (a saved state without one: stream)
    rows: int = 0  # shuffled: rows of the epoch already yielded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IteratorState:
        types = {f.name: f.type for f in fields(cls)}
        optional = {"order", "rows"}
        if not isinstance(data, dict) or not set(types) - optional <= set(data) <= set(types):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DataError(f"not an iterator state: expected the keys {sorted(types)}, got {got}")
        for name in data:
            if type(data[name]).__name__ != types[name]:  # annotations are strings here: "int" or "str"
                raise DataError(f"iterator state field {name!r} must be {types[name]}, got {data[name]!r}")
        if data.get("order", "stream") not in ROW_ORDERS:
            raise DataError(f"iterator state order must be one of {ROW_ORDERS}, got {data['order']!r}")
        return cls(**data)


def epoch_order(num_documents: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the documents: a permutation of ``range(num_documents)``.

    Sorts documents by a splitmix64 hash of (seed, epoch, document), so the order depends only on these
    three numbers, on every platform and numpy version.
    """
    key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(epoch & _MASK64))
    keys = _splitmix64(key + np.arange(num_documents, dtype=np.uint64))
    return np.argsort(keys, kind="stable")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 mixing function on uint64 arrays (arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Packer:
    """Cuts rows from the stream of a split's documents (see the module docstring).

    ``seed`` None: one pass in stored order. Otherwise endless: epoch e visits `epoch_order` (seed, e).
    With ``entropies`` (of the same split) it also cuts the entropy row of each row of ids.
    """

    def __init__(self, split: Split, seq_len: int, seed: int | None, entropies: SplitEntropies | None = None,
                 documents: np.ndarray | None = None) -> None:
        self.split, self.seq_len, self.seed, self.entropies = split, seq_len, seed, entropies
        self.documents = documents  # seed None: the documents of the pass, in this order (None: all of them)
        self._orders: dict[int, np.ndarray] = {}
        self.epoch = 0
        self.order = self._order(0)
        self.position = 0  # index into order
        self.offset = 0  # ids of the current document already emitted (its BOS counts as one)

    def _order(self, epoch: int) -> np.ndarray:
        if self.seed is None:
            return np.arange(len(self.split)) if self.documents is None else self.documents
        if epoch not in self._orders:  # the last two: shuffled rows seek within an epoch and into the next
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = epoch_order(len(self.split), self.seed, epoch)
        return self._orders[epoch]

    def seek(self, epoch: int, position: int, offset: int) -> None:
        """Continue from document ``position`` of epoch ``epoch``, with ``offset`` of its ids emitted."""
        order = self._order(epoch)
        if not (epoch >= 0 and 0 <= position < len(order)):
            raise DataError(f"position (epoch {epoch}, document {position}) is outside split {self.split.name!r} "
                            f"of {len(order)} documents")
        if not 0 <= offset <= int(self.split.lengths[order[position]]) + 1:
            raise DataError(f"offset {offset} is outside document {position} of epoch {epoch}")
        self.epoch, self.order, self.position, self.offset = epoch, order, position, offset

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.order)

    def next_document(self) -> None:
        self.position += 1
        self.offset = 0
        if self.exhausted and self.seed is not None:
            self.epoch += 1
            self.order = self._order(self.epoch)
            self.position = 0

    def fill_row(self, out: np.ndarray | None, out_entropies: np.ndarray | None = None) -> int:
        """Write the next row into ``out`` (int64, ``seq_len``), or only skip past it if ``out`` is None;
        with precomputed entropies, its entropies into ``out_entropies`` (float32, ``seq_len``) too.

        Returns how many ids were filled: ``seq_len``, or fewer once the documents run out.
        """
        filled = 0
        if self.offset > 0 and not self.exhausted:
            if self.offset == self._length() + 1:  # only EOS is left: drop it rather than start a row with it
                self.next_document()
            else:
                if out is not None:
                    out[0] = BOS_ID
                if out_entropies is not None:  # the prediction of the row's first id, from full context
                    out_entropies[0] = self._entropies()[self.offset - 1]
                filled = 1
        while filled < self.seq_len and not self.exhausted:
            length = self._length()
            n = min(self.seq_len - filled, length + 2 - self.offset)
            if out is not None:
                self._write(out[filled:filled + n], self.offset, length)
            if out_entropies is not None:  # stored values are aligned with [BOS] bytes [EOS]: same offsets
                out_entropies[filled:filled + n] = self._entropies()[self.offset:self.offset + n]
            filled += n
            self.offset += n
            if self.offset == length + 2:
                self.next_document()
        return filled

    def _length(self) -> int:
        return int(self.split.lengths[self.order[self.position]])

    def _entropies(self) -> np.ndarray:
        """The stored entropies of the current document's ``[BOS] bytes [EOS]``."""
        assert self.entropies is not None
        return self.entropies[int(self.order[self.position])]

    def _write(self, dst: np.ndarray, start: int, length: int) -> None:
        """Ids ``start : start + len(dst)`` of the current document's ``[BOS] bytes [EOS]`` into ``dst``."""
        i = 0
        if start == 0:
            dst[0] = BOS_ID
            i, start = 1, 1
        stop = min(start + len(dst) - i, length + 1)  # ids [start, stop) are bytes start-1 .. stop-2
        if stop > start:
            doc = self.split[int(self.order[self.position])]
            dst[i:i + stop - start] = doc[start - 1:stop - 1]
            dst[i:i + stop - start] += OFFSET
            i += stop - start
        if i < len(dst):
            dst[i] = EOS_ID


def _check_shape(seq_len: int, batch_size: int, world_size: int, rank: int) -> None:
    if seq_len < 2:
        raise DataError(f"seq_len must be at least 2 (BOS and one byte), got {seq_len}")
    if batch_size < 1 or world_size < 1 or batch_size % world_size:
        raise DataError(f"batch_size ({batch_size}) must be a positive multiple of world_size ({world_size})")
    if not 0 <= rank < world_size:
        raise DataError(f"rank must be in [0, world_size) = [0, {world_size}), got {rank}")


def _nonempty_split(data: PreparedData, split: str) -> Split:
    documents = data.split(split)
    if len(documents) == 0:
        raise DataError(f"split {split!r} of {data.path} has no documents; prepare with more data"
                        + (" or a larger --val-fraction" if split == "val" else ""))
    return documents


def _split_entropies(data: PreparedData, split: str, entropies: PrecomputedEntropies | None) -> SplitEntropies | None:
    """``entropies`` of ``split``, after checking that they were computed on ``data``."""
    if entropies is None:
        return None
    if entropies.data_fingerprint != content_fingerprint(data):
        raise DataError(f"the precomputed entropies {entropies.path} belong to other data than {data.path}; "
                        "open them from the prepared directory they are in")
    return entropies.split(split)


def _new_batch(rows: int, seq_len: int, with_entropies: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids (PAD) and, if ``with_entropies``, entropies (0) of a batch, to be filled row by row."""
    ids = np.full((rows, seq_len), PAD_ID, dtype=np.int64)
    return ids, np.zeros((rows, seq_len), dtype=np.float32) if with_entropies else None


def _tensors(ids: np.ndarray, entropies: np.ndarray | None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(ids) if entropies is None else (torch.from_numpy(ids), torch.from_numpy(entropies))


class ByteBatchIterator:
    """Endless shuffled training batches ``LongTensor[batch_size // world_size, seq_len]`` of ids; with
    ``entropies``, pairs ``(ids, FloatTensor[batch_size // world_size, seq_len])`` (module docstring).

    >>> it = ByteBatchIterator(PreparedData.open("data_cache/stdlib"), "train", 512, 8, seed=0)  # doctest: +SKIP
    >>> batch = next(it); saved = it.state().to_dict()                                           # doctest: +SKIP
    """

    def __init__(self, data: PreparedData, split: str, seq_len: int, batch_size: int, seed: int = 0, *,
                 world_size: int = 1, rank: int = 0, entropies: PrecomputedEntropies | None = None,
                 order: str = "shuffled") -> None:
        """``order``: "shuffled" (the rows of each epoch in a seeded order) or "stream" (one after another)."""
        _check_shape(seq_len, batch_size, world_size, rank)
        if order not in ROW_ORDERS:
            raise DataError(f"order must be one of {ROW_ORDERS}, not {order!r}")
        documents = _nonempty_split(data, split)
        stream = documents.total_bytes + 2 * len(documents)
        if stream < seq_len:
            raise DataError(f"split {split!r} of {data.path} holds {documents.total_bytes} bytes in {len(documents)} "
                            f"documents ({stream} ids with BOS/EOS), less than one sequence of {seq_len}; "
                            "use a smaller seq_len or more data")
        self.split, self.seq_len, self.batch_size, self.seed = split, seq_len, batch_size, seed
        self.world_size, self.rank, self.order = world_size, rank, order
        self._fingerprint = data.fingerprint
        self._packer = _Packer(documents, seq_len, seed, _split_entropies(data, split, entropies))
        if order == "shuffled":
            self._start_epoch(0, 0, 0)

    def _start_epoch(self, epoch: int, position: int, offset: int) -> None:
        """Find where each row that starts in ``epoch`` starts (its first at ``position``, ``offset``), and
        shuffle them."""
        packer = self._packer
        packer.seek(epoch, position, offset)
        starts = []
        while packer.epoch == epoch:
            starts.append((packer.position, packer.offset))
            packer.fill_row(None)
        self._epoch_start = (epoch, position, offset)
        self._next_epoch_start = (packer.epoch, packer.position, packer.offset)
        shuffle = epoch_order(len(starts), self.seed ^ _ROW_SALT, epoch)
        self._row_starts = np.asarray(starts, dtype=np.int64).reshape(-1, 2)[shuffle]
        self._rows_done = 0

    def _fill_row(self, out: np.ndarray | None, out_entropies: np.ndarray | None = None) -> None:
        """The next row into ``out`` (or only past it, for ``out`` None)."""
        if self.order == "stream":
            self._packer.fill_row(out, out_entropies)
            return
        if self._rows_done == len(self._row_starts):
            self._start_epoch(*self._next_epoch_start)
        position, offset = (int(v) for v in self._row_starts[self._rows_done])
        self._rows_done += 1
        if out is not None:
            self._packer.seek(self._epoch_start[0], position, offset)
            self._packer.fill_row(out, out_entropies)

    @property
    def epoch(self) -> int:
        """The epoch the next row starts in."""
        if self.order == "stream":
            return self._packer.epoch
        return self._epoch_start[0] + (self._rows_done == len(self._row_starts))

    def __iter__(self) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ids, entropies = _new_batch(self.batch_size // self.world_size, self.seq_len, self._packer.entropies is not None)
        for row in range(self.batch_size):
            if row % self.world_size == self.rank:
                mine = row // self.world_size
                self._fill_row(ids[mine], entropies[mine] if entropies is not None else None)
            else:
                self._fill_row(None)
        return _tensors(ids, entropies)

    def state(self) -> IteratorState:
        """The position after the batches yielded so far."""
        if self.order == "shuffled":
            epoch, position, offset = self._epoch_start
            return IteratorState(epoch, position, offset, self.seed, self.split, self._fingerprint, "shuffled",
                                 self._rows_done)
        p = self._packer
        return IteratorState(p.epoch, p.position, p.offset, self.seed, self.split, self._fingerprint)

    def load_state(self, state: IteratorState | dict[str, Any]) -> None:
        """Continue from ``state`` (from `state`, or its dict), taken with the same seed, split and data.

        Batch size, world size and rank may differ from when it was saved: the position is in the stream.
        """
        if isinstance(state, dict):
            state = IteratorState.from_dict(state)
        expected = {"seed": self.seed, "split": self.split, "data_fingerprint": self._fingerprint, "order": self.order}
        for key, value in expected.items():
            if getattr(state, key) != value:
                raise DataError(f"iterator state has {key}={getattr(state, key)!r} but this iterator has {value!r}; "
                                "resume with the seed, split, prepared data and row order it was saved with")
        if self.order == "stream":
            self._packer.seek(state.epoch, state.position, state.offset)
            return
        self._start_epoch(state.epoch, state.position, state.offset)
        if not 0 <= state.rows <= len(self._row_starts):
            raise DataError(f"iterator state has {state.rows} rows done of epoch {state.epoch}, which has "
                            f"{len(self._row_starts)}")
        self._rows_done = state.rows


def validation_batches(data: PreparedData, seq_len: int, batch_size: int, *, split: str = "val",
                       world_size: int = 1, rank: int = 0, entropies: PrecomputedEntropies | None = None,
                       documents: Sequence[int] | None = None,
                       ) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """One deterministic pass over ``split`` in stored order, as ``LongTensor[batch_size // world_size, seq_len]``
    (with ``entropies``: ``(ids, entropies)`` pairs, as `ByteBatchIterator`). ``documents``: only these
    documents of the split (indices, in the order given), e.g. the files of one kind.

    The last row is padded with PAD_ID and rows after it are ``[BOS, PAD, ...]``, so every rank gets the
    same number of full-shape batches; `blt.model.next_byte_loss` ignores PAD (and BOS) targets.

    The split, shapes and entropies are checked here, before the first batch is asked for: a trainer
    calls this before its first step.
    """
    _check_shape(seq_len, batch_size, world_size, rank)
    whole = _nonempty_split(data, split)
    chosen = None
    if documents is not None:
        chosen = np.asarray(documents, dtype=np.int64).reshape(-1)
        if len(chosen) == 0:
            raise DataError(f"no documents of split {split!r} of {data.path} were chosen to evaluate")
        outside = chosen[(chosen < 0) | (chosen >= len(whole))]
        if len(outside):
            raise DataError(f"document {int(outside[0])} is outside split {split!r} of {data.path} "
                            f"({len(whole)} documents)")
    packer = _Packer(whole, seq_len, None, _split_entropies(data, split, entropies), chosen)
    return _validation_pass(packer, seq_len, batch_size, world_size, rank)


def _validation_pass(packer: _Packer, seq_len: int, batch_size: int, world_size: int, rank: int,
                     ) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    while not packer.exhausted:
        ids, row_entropies = _new_batch(batch_size // world_size, seq_len, packer.entropies is not None)
        for row in range(batch_size):
            if row % world_size == rank:
                mine = row // world_size
                if packer.fill_row(ids[mine], row_entropies[mine] if row_entropies is not None else None) == 0:
                    ids[mine, 0] = BOS_ID
            else:
                packer.fill_row(None)
        yield _tensors(ids, row_entropies)
