"""Patch bookkeeping: round trips and decoder causality, as properties (docs/design.md §2, §3)."""

from __future__ import annotations

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.model import layout as bookkeeping
from blt.model.layout import (
    check_patch_lengths,
    decoder_patch_ids,
    num_patches,
    pad_patch_lengths,
    patch_ids_from_lengths,
    patch_lengths_from_ids,
    patch_starts,
    trim_padding,
)
from blt.patching.patchers import lengths_from_start_mask, start_mask_from_lengths
from blt.tokenizer import BOS_ID, OFFSET

PROPERTY = settings(max_examples=80, deadline=None)


@st.composite
def patch_length_batches(draw, extra_padding: int = 2):
    """(B, P) lengths as our patchers make them: BOS alone, positive lengths summing to T, right padding."""
    seq_len = draw(st.integers(1, 30))
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        cuts = sorted(draw(st.sets(st.integers(2, seq_len - 1), max_size=seq_len)) if seq_len > 2 else set())
        starts = [0, 1][:seq_len] + cuts
        rows.append([end - start for start, end in zip(starts, starts[1:] + [seq_len])])
    width = max(map(len, rows)) + draw(st.integers(0, extra_padding))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows]), seq_len


def test_docstring_examples():
    assert doctest.testmod(bookkeeping).failed == 0


def test_design_decoder_example():
    # docs/design.md §3: lengths [1, 3, 4, 2] (starts 0, 1, 4, 8) -> decoder ids [0,0,0,1,1,1,1,2,2,2].
    assert decoder_patch_ids(torch.tensor([[1, 3, 4, 2]]), 10).tolist() == [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]


@given(patch_length_batches())
@PROPERTY
def test_patch_ids_and_lengths_round_trip(batch):
    patch_lengths, seq_len = batch
    patch_ids = patch_ids_from_lengths(patch_lengths, seq_len)
    assert patch_ids.shape == (patch_lengths.shape[0], seq_len)
    assert (patch_ids[:, 1:] - patch_ids[:, :-1]).ge(0).all() and (patch_ids[:, 1:] - patch_ids[:, :-1]).le(1).all()
    assert patch_ids[:, 0].eq(0).all() and patch_ids[:, -1].eq(num_patches(patch_lengths) - 1).all()
    assert torch.equal(patch_lengths_from_ids(patch_ids, patch_lengths.shape[1]), patch_lengths)
    assert torch.equal(patch_lengths_from_ids(patch_ids), trim_padding(patch_lengths))


@given(patch_length_batches())
@PROPERTY
def test_patch_starts_and_start_mask_agree(batch):
    patch_lengths, seq_len = batch
    mask = start_mask_from_lengths(patch_lengths)
    assert mask.shape == (patch_lengths.shape[0], seq_len)
    for row_mask, row_starts, row_lengths in zip(mask, patch_starts(patch_lengths), patch_lengths):
        assert row_mask.nonzero()[:, 0].tolist() == row_starts[row_lengths > 0].tolist()
    assert torch.equal(lengths_from_start_mask(mask), trim_padding(patch_lengths))


@given(patch_length_batches())
@PROPERTY
def test_decoder_reads_the_latest_complete_patch(batch):
    patch_lengths, seq_len = batch
    decoder_ids = decoder_patch_ids(patch_lengths, seq_len)
    last_byte = torch.cumsum(patch_lengths, dim=-1) - 1  # (B, P) index of each patch's last byte
    for row_ids, row_last, n in zip(decoder_ids.tolist(), last_byte.tolist(), num_patches(patch_lengths).tolist()):
        for b, read in enumerate(row_ids):
            assert row_last[read] <= b, "causal: the patch a byte reads ends at or before it"
            complete = [p for p in range(n) if row_last[p] <= b]
            # The latest complete patch, except that the row's final patch is never read.
            assert read == min(complete[-1], max(n - 2, 0))


@given(patch_length_batches(), st.integers(1, 3))
@PROPERTY
def test_decoder_ids_do_not_depend_on_padding_or_other_rows(batch, more_padding):
    patch_lengths, seq_len = batch
    padded = torch.cat([patch_lengths, torch.zeros(patch_lengths.shape[0], more_padding, dtype=torch.long)], dim=1)
    decoder_ids = decoder_patch_ids(patch_lengths, seq_len)
    assert torch.equal(decoder_patch_ids(padded, seq_len), decoder_ids)
    for r in range(patch_lengths.shape[0]):
        assert torch.equal(decoder_patch_ids(trim_padding(patch_lengths[r:r + 1]), seq_len), decoder_ids[r:r + 1])


@given(patch_length_batches())
@PROPERTY
def test_pad_and_trim_round_trip(batch):
    patch_lengths, _ = batch
    rows = [row[row > 0] for row in patch_lengths]
    assert torch.equal(pad_patch_lengths(rows), trim_padding(patch_lengths))
    assert torch.equal(pad_patch_lengths(rows, patch_lengths.shape[1]), patch_lengths)


@given(patch_length_batches())
@PROPERTY
def test_check_patch_lengths_accepts_valid_and_rejects_broken_lengths(batch):
    patch_lengths, seq_len = batch
    ids = torch.full((patch_lengths.shape[0], seq_len), OFFSET)
    ids[:, 0] = BOS_ID
    check_patch_lengths(ids, patch_lengths)
    broken = patch_lengths.clone()
    broken[0, 0] += 1
    with pytest.raises(ValueError, match="sum to"):
        check_patch_lengths(ids, broken)
    if seq_len >= 2:
        merged = torch.cat([(patch_lengths[:, :2].sum(1, keepdim=True)), patch_lengths[:, 2:]], dim=1)
        with pytest.raises(ValueError, match="BOS as a patch of its own"):
            check_patch_lengths(ids, merged)
        gap = torch.cat([patch_lengths[:, :1], torch.zeros_like(patch_lengths[:, :1]), patch_lengths[:, 1:]], dim=1)
        with pytest.raises(ValueError, match="only on the right"):
            check_patch_lengths(ids, gap)


def test_pad_patch_lengths_rejects_rows_that_do_not_fit():
    with pytest.raises(ValueError, match="more than the 2 allowed"):
        pad_patch_lengths([torch.tensor([1, 2, 3])], 2)
