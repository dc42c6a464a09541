"""Batch packing: BOS-first rows, EOS between documents, exact coverage, resume, rank sharding, validation.

The `packed` fixture's documents each repeat one byte value of their own, so a row's bytes say which
documents (and how much of each) it holds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blt.data import (
    ByteBatchIterator,
    IteratorState,
    PreparedData,
    Split,
    epoch_order,
    validation_batches,
)
from blt.errors import DataError
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, PAD_ID
from tests.data.corpora import ALL_BYTES, write_tree

fixture_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def stream_of(split: Split, order: np.ndarray) -> list[int]:
    """The documents in ``order`` as ids without BOS: bytes then EOS for each."""
    out: list[int] = []
    for i in order:
        out += (np.asarray(split[int(i)], dtype=np.int64) + OFFSET).tolist() + [EOS_ID]
    return out


def assert_packed(rows: np.ndarray, expected: list[int]) -> int:
    """Rows are ``expected`` cut into rows with BOS in front of each row and each document, an EOS that
    would start a row dropped, and PAD only at the end. Returns how many ids of ``expected`` they consumed."""
    assert (rows[:, 0] == BOS_ID).all(), "every row starts with BOS"
    before, after = rows[:, :-1], rows[:, 1:]
    assert (before[after == BOS_ID] == EOS_ID).all(), "BOS inside a row only after EOS"
    assert np.isin(after[before == EOS_ID], [BOS_ID, PAD_ID]).all(), "EOS followed by the next document's BOS"
    padding = np.cumsum(rows == PAD_ID, axis=1) > 0
    assert (rows[padding] == PAD_ID).all(), "nothing after PAD"
    j = 0
    for row in rows:
        body = row[(row != BOS_ID) & (row != PAD_ID)].tolist()
        if j < len(expected) and expected[j] == EOS_ID and body[:1] != [EOS_ID]:
            j += 1  # the previous document's EOS would have started this row: dropped
        assert body == expected[j:j + len(body)]
        j += len(body)
    return j


def test_epoch_order_is_a_pinned_permutation_of_seed_and_epoch():
    assert epoch_order(8, 0, 0).tolist() == [4, 0, 1, 7, 6, 2, 5, 3]
    assert epoch_order(8, 0, 1).tolist() == [4, 0, 1, 5, 7, 3, 2, 6]
    assert epoch_order(8, 1, 0).tolist() == [3, 5, 2, 4, 1, 0, 6, 7]
    assert sorted(epoch_order(1000, 5, 3).tolist()) == list(range(1000))


def ids(text: str) -> list[int]:
    """Worked-example notation: ``"<a b>"`` is BOS, a, b, EOS; ``"_"`` is PAD."""
    special = {"<": BOS_ID, ">": EOS_ID, "_": PAD_ID}
    return [special.get(c, ord(c) + OFFSET) for c in text.replace(" ", "")]


@pytest.mark.parametrize("documents, seq_len, rows", [
    (["abcde", "fg"], 4, ["<abc", "<de>", "<fg>"]),  # a row inside a document gets its own BOS
    (["abc", "de"], 4, ["<abc", "<de>"]),  # ... and never starts with a lone EOS: that one is dropped
    (["abc", "de"], 6, ["<abc><", "<de>__"]),  # the last row is padded
    (["a", "b", "c"], 5, ["<a><b", "<c>__"]),  # b's EOS would start row 2: dropped
])
def test_worked_examples_of_packing(tmp_path, prepare_dir, documents, seq_len, rows):
    files = {f"{i}": doc.encode() for i, doc in enumerate(documents)}
    data = prepare_dir([write_tree(tmp_path / "c", files)], val_fraction=0.0)
    batches = list(validation_batches(data, seq_len, 1, split="train"))  # stored order: by name
    assert [b[0].tolist() for b in batches] == [ids(r) for r in rows]


@fixture_settings
@given(seq_len=st.integers(2, 150), batch_size=st.integers(1, 4), seed=st.integers(0, 3))
def test_every_train_byte_is_covered_once_per_epoch_in_rows_that_start_with_bos(packed, seq_len, batch_size, seed):
    split = packed.split("train")
    it = ByteBatchIterator(packed, "train", seq_len, batch_size, seed, order="stream")
    batches = []
    while it.epoch == 0:
        batches.append(next(it))
    rows = torch.cat(batches).numpy()
    assert rows.shape[1] == seq_len and rows.dtype == np.int64
    first_epoch = stream_of(split, epoch_order(len(split), seed, 0))
    consumed = assert_packed(rows, first_epoch + stream_of(split, epoch_order(len(split), seed, 1)))
    assert consumed >= len(first_epoch)


@fixture_settings
@given(seq_len=st.integers(2, 150), seed=st.integers(0, 3))
def test_shuffled_rows_are_the_stream_rows_of_each_epoch_in_another_order(packed, seq_len, seed):
    stream = ByteBatchIterator(packed, "train", seq_len, 1, seed, order="stream")
    shuffled = ByteBatchIterator(packed, "train", seq_len, 1, seed)
    for epoch in range(2):
        in_order = []
        while stream.epoch == epoch:
            in_order.append(next(stream)[0].tolist())
        assert shuffled.epoch == epoch
        rows = [next(shuffled)[0].tolist() for _ in in_order]
        assert sorted(rows) == sorted(in_order)  # every id in exactly one row, as in the stream
        if len(in_order) >= 8:
            assert rows != in_order
    assert shuffled.epoch == 2


def test_shuffled_batches_hold_rows_from_all_over_the_split(packed):
    """Consecutive rows hold one or two documents; shuffled ones, many (each document of the fixture
    repeats a byte of its own)."""
    documents = lambda batch: len({int(v) for v in batch.flatten().tolist() if v >= OFFSET})
    assert documents(next(ByteBatchIterator(packed, "train", 16, 8, 0))) > \
        documents(next(ByteBatchIterator(packed, "train", 16, 8, 0, order="stream")))


@fixture_settings
@given(k=st.integers(0, 40), seed=st.integers(0, 3), order=st.sampled_from(["shuffled", "stream"]))
def test_resuming_from_a_saved_state_gives_the_same_next_batches(packed, k, seed, order):
    it = ByteBatchIterator(packed, "train", 64, 3, seed, order=order)
    for _ in range(k):
        next(it)
    saved = json.dumps(it.state().to_dict())
    expected = [next(it) for _ in range(5)]
    fresh = ByteBatchIterator(PreparedData.open(packed.path), "train", 64, 3, seed, order=order)
    fresh.load_state(IteratorState.from_dict(json.loads(saved)))
    assert all(torch.equal(next(fresh), e) for e in expected)


def test_resume_across_an_epoch_boundary_and_with_another_batch_size(packed):
    it = ByteBatchIterator(packed, "train", 64, 3, 0)
    while it.epoch < 2:
        next(it)
    state = it.state()
    assert state.epoch == 2
    fresh = ByteBatchIterator(packed, "train", 64, 3, 0)
    fresh.load_state(state.to_dict())
    assert torch.equal(next(fresh), next(it))

    halves, whole = ByteBatchIterator(packed, "train", 64, 2, 0), ByteBatchIterator(packed, "train", 64, 4, 0)
    for _ in range(7):
        assert torch.equal(torch.cat([next(halves), next(halves)]), next(whole))
    assert halves.state() == whole.state()


def test_same_seed_same_batches_other_seed_other_order(packed):
    a, b, c = (ByteBatchIterator(packed, "train", 100, 2, seed) for seed in (0, 0, 1))
    for _ in range(20):
        assert torch.equal(next(a), next(b))
    assert not torch.equal(next(a), next(c))


def test_ranks_get_disjoint_rows_whose_union_is_the_global_batch(packed):
    world = 3
    global_it = ByteBatchIterator(packed, "train", 50, 6, 0)
    ranks = [ByteBatchIterator(packed, "train", 50, 6, 0, world_size=world, rank=r) for r in range(world)]
    for _ in range(10):
        batch = next(global_it)
        local = [next(it) for it in ranks]
        for r in range(world):
            assert local[r].shape == (2, 50) and torch.equal(local[r], batch[r::world])
    assert all(it.state() == global_it.state() for it in ranks)


def test_validation_is_one_deterministic_pass_in_stored_order_padded_at_the_end(packed):
    split = packed.split("val")
    assert len(split) > 0
    batches = list(validation_batches(packed, 40, 3))
    assert all(b.shape == (3, 40) for b in batches)
    assert all(torch.equal(x, y) for x, y in zip(batches, validation_batches(packed, 40, 3)))
    rows = torch.cat(batches).numpy()
    expected = stream_of(split, np.arange(len(split)))
    assert assert_packed(rows, expected) == len(expected)
    assert (rows[-1] == PAD_ID).any() and not (rows[:-4] == PAD_ID).any()

    for rank in range(2):
        sharded = list(validation_batches(packed, 40, 4, world_size=2, rank=rank))
        whole = list(validation_batches(packed, 40, 4))
        assert len(sharded) == len(whole) and all(torch.equal(s, w[rank::2]) for s, w in zip(sharded, whole))


def test_validation_of_chosen_documents_packs_only_them_in_the_order_given(packed):
    split = packed.split("train")
    chosen = [7, 2, 11]
    rows = torch.cat(list(validation_batches(packed, 16, 2, split="train", documents=chosen))).numpy()
    expected = stream_of(split, np.array(chosen))
    assert assert_packed(rows, expected) == len(expected)
    assert set(np.unique(rows[rows >= OFFSET]) - OFFSET) == {10 + int(split.document_name(i)[-2:]) for i in chosen}
    for bad, message in (([], "no documents"), ([len(split)], "outside"), ([-1], "outside")):
        with pytest.raises(DataError, match=message):
            validation_batches(packed, 16, 2, split="train", documents=bad)


def test_binary_document_with_every_byte_value_round_trips_through_the_iterator(tmp_path, prepare_dir):
    data = prepare_dir([write_tree(tmp_path / "c", {"all.bin": ALL_BYTES})], val_fraction=0.0)
    row = next(ByteBatchIterator(data, "train", 258, 1, 0))[0]
    assert row.tolist() == [BOS_ID] + [b + OFFSET for b in ALL_BYTES] + [EOS_ID]


def test_corpus_smaller_than_one_sequence_and_empty_splits_are_clear_errors(tmp_path, prepare_dir):
    data = prepare_dir([write_tree(tmp_path / "c", {"tiny": b"12345"})], val_fraction=0.0)
    ByteBatchIterator(data, "train", 7, 1, 0)  # BOS + 5 bytes + EOS fill one row exactly
    with pytest.raises(DataError, match="holds 5 bytes in 1 documents .* less than one sequence of 8"):
        ByteBatchIterator(data, "train", 8, 1, 0)
    with pytest.raises(DataError, match="split 'val' .* has no documents.*--val-fraction"):
        next(validation_batches(data, 8, 1))


@pytest.mark.parametrize("kwargs, message", [
    ({"seq_len": 1}, "seq_len must be at least 2"),
    ({"batch_size": 5, "world_size": 2}, r"batch_size \(5\) must be a positive multiple of world_size \(2\)"),
    ({"batch_size": 4, "world_size": 2, "rank": 2}, r"rank must be in \[0, world_size\)"),
])
def test_bad_shapes(packed, kwargs, message):
    args = {"seq_len": 16, "batch_size": 2, "world_size": 1, "rank": 0, **kwargs}
    with pytest.raises(DataError, match=message):
        ByteBatchIterator(packed, "train", args["seq_len"], args["batch_size"], 0,
                          world_size=args["world_size"], rank=args["rank"])


def test_states_from_another_seed_split_or_data_are_refused(packed, corpus, prepare_dir):
    it = ByteBatchIterator(packed, "train", 16, 2, 0)
    next(it)
    state = it.state()
    for other, message in [
        (ByteBatchIterator(packed, "train", 16, 2, 1), "seed=0 but this iterator has 1"),
        (ByteBatchIterator(packed, "val", 16, 2, 0), "split='train' but this iterator has 'val'"),
        (ByteBatchIterator(prepare_dir([corpus]), "train", 16, 2, 0), "data_fingerprint="),
        (ByteBatchIterator(packed, "train", 16, 2, 0, order="stream"), "order='shuffled' but this iterator has 'stream'"),
    ]:
        with pytest.raises(DataError, match=message):
            other.load_state(state)
    with pytest.raises(DataError, match="not an iterator state"):
        it.load_state({"epoch": 0})
    with pytest.raises(DataError, match="field 'epoch' must be int, got '1'"):
        it.load_state({**state.to_dict(), "epoch": "1"})
    with pytest.raises(DataError, match="outside split 'train'"):
        it.load_state({**state.to_dict(), "position": 10_000})
    with pytest.raises(DataError, match="offset 10000 is outside"):
        it.load_state({**state.to_dict(), "offset": 10_000})
