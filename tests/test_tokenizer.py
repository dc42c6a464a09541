"""Byte tokenizer: ids as in docs/design.md §1 and exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import blt
from blt.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, document_ids


def test_ids_layout():
    assert VOCAB_SIZE == 260
    assert blt.encode(b"\x00\xff").tolist() == [BOS_ID, 4, 259]
    assert blt.encode("é").tolist() == [BOS_ID, 0xC3 + 4, 0xA9 + 4]
    assert blt.encode(b"a", bos=False, eos=True).tolist() == [97 + 4, EOS_ID]
    assert blt.encode(b"").tolist() == [BOS_ID]


@given(st.binary(max_size=300))
def test_round_trip_bytes(data):
    ids = blt.encode(data, eos=True)
    assert ids.dtype == torch.long
    assert blt.decode(ids) == data
    assert blt.decode(ids.numpy()) == data
    assert blt.decode(ids.tolist()) == data


@given(st.text(max_size=200))
def test_round_trip_text(text):
    assert blt.decode(blt.encode(text)).decode("utf-8") == text


def test_decode_rejects_foreign_ids():
    with pytest.raises(ValueError, match="outside the byte vocabulary"):
        blt.decode([1, 300])
    with pytest.raises(TypeError):
        blt.encode(123)  # type: ignore[arg-type]


def test_decode_drops_specials():
    assert blt.decode(np.array([0, 1, 3, 72 + 4, 2])) == b"H"


def test_document_ids():
    ids = torch.cat([blt.encode("ab", eos=True), blt.encode("c", eos=True), blt.encode("d")])[None]
    assert document_ids(ids).tolist() == [[0, 0, 0, 0, 1, 1, 1, 2, 2]]
