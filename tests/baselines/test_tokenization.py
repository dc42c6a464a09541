"""Byte-level BPE and the byte tokenizer: exact round trips of any bytes, specials kept at blt's ids, rows
tokenized so that their tokens cover exactly their bytes, and bytes per token counted as the losses count."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from blt.baselines import BPETokenizer, ByteTokenizer, measure_bytes_per_token
from blt.baselines.tokenization import BYTE_CHARS, SPECIAL_TOKENS, bytes_to_text
from blt.data import validation_batches
from blt.errors import CheckpointError, ConfigError
from blt.tokenizer import BOS_ID, EOS_ID, PAD_ID, decode, encode

TRICKY = [b"", b"<bos>", "⟨bos⟩ ⟨eos⟩".encode(), bytes(range(256)), b"\xff\xfe\x80 invalid \xc3", "héllo 世界 🙂".encode(),
          b"  two  spaces\n\n\ttab", b"don't 12345 x==y"]


def test_byte_characters_are_a_bijection_onto_printable_characters():
    assert len(set(BYTE_CHARS)) == 256 and all(c.isprintable() and not c.isspace() for c in BYTE_CHARS)
    assert BYTE_CHARS[ord("A")] == "A" and BYTE_CHARS[0x20] == "Ġ" and BYTE_CHARS[0x0A] == "Ċ"
    assert bytes_to_text(b"a b\xff") == "aĠbÿ"


def test_specials_have_blt_ids_and_the_vocab_has_every_byte(bpe):
    assert [bpe.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert 260 < bpe.vocab_size <= 400
    assert all(bpe.decode(bpe.encode(bytes([b]))) == bytes([b]) for b in range(256))


@pytest.mark.parametrize("data", TRICKY)
def test_bpe_round_trips_tricky_bytes(bpe, data):
    tokens = bpe.encode(data)
    assert bpe.decode(tokens) == data
    assert all(t >= 4 for t in tokens)  # nothing in the data spells a special token


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_bpe_round_trips_any_bytes(bpe, data):
    assert bpe.decode(bpe.encode(data)) == data


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_bpe_round_trips_any_text(bpe, text):
    data = text.encode("utf-8", errors="surrogatepass")
    assert bpe.decode(bpe.encode(data)) == data


def test_bpe_merges_common_words_of_its_training_data(bpe):
    text = b" the model and the patch"
    assert len(bpe.encode(text)) < len(text) / 2


def test_save_and_load_give_the_same_tokenizer(bpe, tmp_path):
    bpe.save(tmp_path / "tokenizer.json")
    loaded = BPETokenizer.load(tmp_path / "tokenizer.json")
    for data in TRICKY:
        assert loaded.encode(data) == bpe.encode(data)
    assert loaded.vocab_size == bpe.vocab_size


def test_load_refuses_missing_corrupt_and_foreign_files(bpe, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid tokenizers JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])).save(str(tmp_path / "foreign.json"))
    with pytest.raises(CheckpointError, match="not a blt byte-level BPE"):
        BPETokenizer.load(tmp_path / "foreign.json")


def test_vocab_smaller_than_the_bytes_is_refused(text_data):
    with pytest.raises(ConfigError, match="at least 260"):
        BPETokenizer.train([b"abc"], vocab_size=100)


def _row(*parts) -> list[int]:
    ids = []
    for p in parts:
        ids.extend(encode(p, bos=False).tolist() if isinstance(p, bytes) else [p])
    return ids


def test_rows_keep_specials_and_cover_their_bytes_exactly(bpe):
    rows = [_row(BOS_ID, b"the model", EOS_ID, BOS_ID, b"patch \xff"), _row(BOS_ID, b"entropy", EOS_ID, PAD_ID, PAD_ID)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])
    tokens = bpe.tokenize_rows(ids)
    first = tokens[0].tolist()
    assert first[0] == BOS_ID and first.count(EOS_ID) == 1 and first.count(BOS_ID) == 2
    eos = first.index(EOS_ID)
    assert bpe.decode(first[1:eos]) == b"the model" and first[eos + 1] == BOS_ID
    assert bpe.decode(first[eos + 2:]) == b"patch \xff"
    for row_ids, row_tokens in zip(ids, tokens):
        assert bpe.decode(row_tokens.tolist()) == decode(row_ids)  # the same bytes, nothing more
    second = tokens[1].tolist()
    end = second.index(EOS_ID) + 1
    assert second[0] == BOS_ID and set(second[end:]) <= {PAD_ID}  # input padding is dropped, rows right-padded


def test_byte_tokenizer_is_the_identity_on_ids():
    tok = ByteTokenizer()
    ids = encode(b"any \xff bytes", eos=True)[None]
    assert torch.equal(tok.tokenize_rows(ids), ids)
    assert tok.encode(b"\x00\xff") == [4, 259] and tok.decode([1, 4, 259, 2]) == b"\x00\xff"
    assert measure_bytes_per_token(tok, [ids]) == (1.0, ids.shape[1] - 1)


def test_bytes_per_token_counts_bytes_and_eos_over_tokens_and_eos(bpe, text_data):
    batches = list(validation_batches(text_data, 64, 4))
    per_token, counted = measure_bytes_per_token(bpe, batches)
    tokens = sum(int(((t[:, 1:] != BOS_ID) & (t[:, 1:] > 0)).sum()) for t in map(bpe.tokenize_rows, batches))
    assert counted == sum(int(((b[:, 1:] != BOS_ID) & (b[:, 1:] > 0)).sum()) for b in batches)
    assert per_token == pytest.approx(counted / tokens) and 2 < per_token < 6
