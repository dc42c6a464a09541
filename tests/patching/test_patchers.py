"""Patchers: worked examples, properties of every scheme, and bad input (docs/design.md §2)."""

from __future__ import annotations

import doctest
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from blt.config import PATCHING_MODES, PatchingConfig
from blt.errors import ConfigError
from blt.model.layout import check_patch_lengths, trim_padding
from blt.patching import patchers
from blt.patching.patchers import (
    cap_start_mask,
    lengths_from_start_mask,
    pad_for_static,
    patch_lengths_for,
    patch_lengths_from_entropies,
    split_long_patches,
    start_mask_bpe,
    start_mask_combined,
    start_mask_for,
    start_mask_from_lengths,
    start_mask_global,
    start_mask_monotonic,
    start_mask_space,
    start_mask_static,
)
from blt.tokenizer import BOE_ID, BOS_ID, EOS_ID, OFFSET, encode

PROPERTY = settings(max_examples=60, deadline=None)
ENTROPY_MODES = ("entropy", "monotonic", "combined")
CAUSAL_MODES = tuple(m for m in PATCHING_MODES if m != "bpe")

# docs/design.md §2 worked example.
H_EXAMPLE = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])

SENTENCES = [
    "hello hello hello world",
    "hello world, hello again",
    "the cat sat on the mat with a hello",
    "héllo wörld — 日本語 hello",
] * 20


@functools.cache
def tiny_bpe() -> Tokenizer:
    """A byte-level BPE trained on a few sentences (milliseconds); its alphabet covers all 256 bytes."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> character map of byte-level BPE, written out here independently of the code."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def split_row(row: torch.Tensor, row_lengths: list[int]) -> list[bytes]:
    """The bytes of each patch of a row (special ids shown as nothing)."""
    out, pos = [], 0
    for n in row_lengths:
        if n:
            out.append(bytes(i - OFFSET for i in row[pos:pos + n].tolist() if i >= OFFSET))
        pos += n
    return out


def truncate(row_lengths: list[int], t: int) -> list[int]:
    """The patching of the first t bytes implied by a patching: patches that start before t, the last cut."""
    out, pos = [], 0
    for n in row_lengths:
        if n == 0 or pos >= t:
            break
        out.append(min(n, t - pos))
        pos += n
    return out


def naive_spacelike(i: int) -> bool:
    b = i - OFFSET
    return i < OFFSET or not ((b < 128 and chr(b).isalnum()) or 0x80 <= b < 0xC0)


def naive_starts(ids: list[int], h: list[float], config: PatchingConfig) -> list[bool]:
    """docs/design.md §2, one byte at a time: does byte p start a patch? Byte p = i + 1 is decided by H_i."""
    mode, theta, theta_r = config.mode, config.threshold, config.relative_threshold
    starts = []
    for p in range(len(ids)):
        i = p - 1
        if p < 2:
            start = True
        elif mode == "entropy":
            start = h[i] > theta
        elif mode == "monotonic":
            start = i >= 2 and h[i] - h[i - 1] > theta
        elif mode == "combined":
            start = h[i] > theta and i >= 2 and h[i] - h[i - 1] > theta_r
        elif mode in ("static", "byte"):
            start = (p - 1) % (config.patch_size if mode == "static" else 1) == 0
        else:
            start = naive_spacelike(ids[p - 1]) and not naive_spacelike(ids[p - 2])
        starts.append(start)
    if config.max_patch_length is not None:
        run = 0
        for p, start in enumerate(starts):
            run = 1 if start or run == config.max_patch_length else run + 1
            starts[p] = run == 1
    return starts


# --- hypothesis strategies -----------------------------------------------------------------------

# Entropies and thresholds on grids exact in float32 and float64, so the naive definition (float64)
# and the tensors (float32) agree; the coarse grid makes ties and H_i == θ common.
GRID_ENTROPY = st.integers(0, 24).map(lambda k: k / 4)
GRID_THRESHOLD = st.integers(-16, 40).map(lambda k: k / 8)
TEXTY_IDS = st.sampled_from([c + OFFSET for c in b"ab ,.\n0\xc3\xa9\xe6\x97\xa5"] + [EOS_ID])
ANY_ID = st.integers(0, 259)


@st.composite
def patching_cases(draw, modes=PATCHING_MODES):
    """(ids (B, T), entropies (B, T), config) for a random scheme; every row starts with BOS."""
    mode = draw(st.sampled_from(modes))
    batch_size, seq_len = draw(st.integers(1, 3)), draw(st.integers(0, 20))
    ids = [[BOS_ID] + draw(st.lists(TEXTY_IDS | ANY_ID, min_size=seq_len - 1, max_size=seq_len - 1))
           for _ in range(batch_size)] if seq_len else [[] for _ in range(batch_size)]
    h = draw(st.lists(GRID_ENTROPY, min_size=batch_size * seq_len, max_size=batch_size * seq_len))
    config = PatchingConfig(
        mode=mode,
        threshold=draw(GRID_THRESHOLD) if mode in ENTROPY_MODES else None,
        relative_threshold=draw(GRID_THRESHOLD) if mode == "combined" else None,
        patch_size=draw(st.integers(1, 5)),
        max_patch_length=draw(st.none() | st.integers(1, 6)),
    )
    ids_t = torch.tensor(ids, dtype=torch.long).reshape(batch_size, seq_len)
    return ids_t, torch.tensor(h, dtype=torch.float32).reshape(batch_size, seq_len), config


def run(ids: torch.Tensor, h: torch.Tensor, config: PatchingConfig) -> torch.Tensor:
    return patch_lengths_for(ids, config, entropies=h, tokenizer=tiny_bpe())


def test_docstring_examples():
    assert doctest.testmod(patchers).failed == 0


# --- worked examples -----------------------------------------------------------------------------

def test_design_worked_example_global():
    assert start_mask_global(H_EXAMPLE, 1.0).nonzero()[:, 1].tolist() == [0, 1, 4, 8]
    assert patch_lengths_from_entropies(H_EXAMPLE, threshold=1.0).tolist() == [[1, 3, 4, 2]]
    assert patch_lengths_from_entropies(H_EXAMPLE, threshold=1.0, max_patch_length=2).tolist() == [[1, 2, 1, 2, 2, 2]]
    ids = torch.full_like(H_EXAMPLE, OFFSET, dtype=torch.long)
    config = PatchingConfig(mode="entropy", threshold=1.0, max_patch_length=2)
    assert patch_lengths_for(ids, config, entropies=H_EXAMPLE).tolist() == [[1, 2, 1, 2, 2, 2]]


def test_design_worked_example_monotonic():
    assert patch_lengths_from_entropies(H_EXAMPLE, threshold=1.0, monotonic=True).tolist() == [[1, 3, 4, 2]]
    ids = torch.full_like(H_EXAMPLE, OFFSET, dtype=torch.long)
    config = PatchingConfig(mode="monotonic", threshold=1.0)
    assert patch_lengths_for(ids, config, entropies=H_EXAMPLE).tolist() == [[1, 3, 4, 2]]


def test_monotonic_never_starts_at_byte_2_unlike_the_reference():
    h = torch.tensor([[0.0, 5.0, 9.0, 0.0, 0.0]])  # H_1 - H_0 = 5 is not tested; H_2 - H_1 = 4 starts byte 3
    assert start_mask_monotonic(h, 1.0).tolist() == [[True, True, False, True, False]]
    assert start_mask_global(h, 1.0).tolist() == [[True, True, True, True, False]]


def test_combined_needs_both_conditions():
    # H_3 = 3.0 rises by 2.6 (both pass); H_7 = 2.5 rises by 2.4 but is not above θ_g = 2.8.
    assert patch_lengths_from_entropies(H_EXAMPLE, threshold=2.8, relative_threshold=1.0).tolist() == [[1, 3, 6]]
    # H_0 = 2.0 and H_8 = 0.3 are above θ_g = 0.25 but do not rise: only the rises start patches.
    assert start_mask_combined(H_EXAMPLE, 0.25, 1.0).nonzero()[:, 1].tolist() == [0, 1, 4, 8]
    ids = torch.full_like(H_EXAMPLE, OFFSET, dtype=torch.long)
    config = PatchingConfig(mode="combined", threshold=0.25, relative_threshold=1.0)
    assert patch_lengths_for(ids, config, entropies=H_EXAMPLE).tolist() == [[1, 3, 4, 2]]


def test_entropy_threshold_is_strict():
    h = torch.tensor([[0.0, 1.0, 1.5, 1.0]])
    assert start_mask_global(h, 1.0).tolist() == [[True, True, False, True]]


def test_space_patching_sentence_with_multibyte_utf8():
    text = "Où est le café? Ça va."
    ids = encode(text)[None]
    patch_lengths = patch_lengths_for(ids, PatchingConfig(mode="space"))
    # The first spacelike byte of a run closes a patch. UTF-8 lead bytes (0xC3) are spacelike, so a
    # letter like "ù" after a letter splits after its lead byte; after a space it stays whole (" Ç").
    assert split_row(ids[0], patch_lengths[0].tolist()) == [
        b"", b"O\xc3", b"\xb9 ", b"est ", b"le ", b"caf\xc3", b"\xa9?", b" \xc3\x87a ", b"va."]
    assert patch_lengths[0, 0] == 1
    assert torch.equal(start_mask_space(ids), start_mask_from_lengths(patch_lengths))


def test_space_patching_treats_specials_as_spacelike():
    ids = torch.tensor([[BOS_ID, *(c + OFFSET for c in b"ab"), EOS_ID, *(c + OFFSET for c in b"cd")]])
    assert patch_lengths_for(ids, PatchingConfig(mode="space")).tolist() == [[1, 3, 2]]  # <bos> | ab<eos> | cd


def test_static_and_byte_patching():
    ids = encode("abcdefghi")[None]  # T = 10
    assert patch_lengths_for(ids, PatchingConfig(mode="static", patch_size=4)).tolist() == [[1, 4, 4, 1]]
    assert patch_lengths_for(ids, PatchingConfig(mode="static", patch_size=3)).tolist() == [[1, 3, 3, 3]]
    assert patch_lengths_for(ids, PatchingConfig(mode="static", patch_size=20)).tolist() == [[1, 9]]
    assert patch_lengths_for(ids, PatchingConfig(mode="byte")).tolist() == [[1] * 10]
    assert start_mask_static(0, 4).shape == (1, 0)


@given(seq_len=st.integers(1, 40), patch_size=st.integers(1, 8))
@PROPERTY
def test_static_patching_is_the_reference_boe_layout_without_its_padding(seq_len, patch_size):
    ids = torch.cat([torch.tensor([[BOS_ID]]), torch.full((1, seq_len - 1), OFFSET)], dim=1)
    padded = pad_for_static(ids, patch_size)
    assert padded.shape == (1, seq_len + patch_size - 1)
    assert padded[0, : patch_size - 1].eq(BOE_ID).all() and padded[0, patch_size - 1] == BOS_ID
    total = padded.shape[1]
    reference = [patch_size] * (total // patch_size) + ([total % patch_size] if total % patch_size else [])
    reference[0] -= patch_size - 1  # drop the BOE padding: the first patch is BOS alone
    ours = patch_lengths_for(ids, PatchingConfig(mode="static", patch_size=patch_size))
    assert ours.tolist() == [reference]


def test_bpe_patching_with_a_trained_tokenizer():
    tokenizer = tiny_bpe()
    text = "hello hello world"
    ids = encode(text)[None]
    patch_lengths = patch_lengths_for(ids, PatchingConfig(mode="bpe"), tokenizer=tokenizer)
    assert split_row(ids[0], patch_lengths[0].tolist()) == [b"", b"hello", b" hello", b" world"]
    assert tokenizer.encode(text).tokens == ["hello", "Ġhello", "Ġworld"]


@given(text=st.text(alphabet="helo wrd,é日本—\n", max_size=30))
@PROPERTY
def test_bpe_patches_are_the_tokens(text):
    ids = encode(text)[None]
    patch_lengths = start_mask_bpe(ids, tiny_bpe())
    patches = split_row(ids[0], lengths_from_start_mask(patch_lengths)[0].tolist())[1:]
    alphabet = byte_alphabet()
    as_tokens = ["".join(alphabet[b] for b in patch) for patch in patches]
    # Tokens that split a character (byte-level BPE may) are merged back to character starts.
    token_text = "".join(tiny_bpe().encode(text, add_special_tokens=False).tokens)
    assert "".join(as_tokens) == token_text
    assert all(not (0x80 <= patch[0] < 0xC0) for patch in patches)
    if text.isascii():
        assert as_tokens == tiny_bpe().encode(text).tokens


def test_bpe_patching_invalid_utf8_and_specials():
    data = b"hello \xff\xfe\x80 hello"
    ids = torch.cat([encode(data), torch.tensor([EOS_ID]), encode("hello", bos=False)])[None]
    patch_lengths = patch_lengths_for(ids, PatchingConfig(mode="bpe"), tokenizer=tiny_bpe())
    # Each invalid byte is read as U+FFFD (3 bytes the tokenizer never merged): one patch per byte.
    # The EOS id is a patch of its own (shown as b"") and the text after it is tokenized afresh.
    assert split_row(ids[0], patch_lengths[0].tolist()) == [
        b"", b"hello", b" ", b"\xff", b"\xfe", b"\x80", b" hello", b"", b"hello"]


def test_bpe_needs_a_byte_level_tokenizer():
    word_level = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="byte-level BPE"):
        start_mask_bpe(encode("hello world")[None], word_level)


def test_split_long_patches_worked_examples():
    assert split_long_patches(torch.tensor([[1, 3, 4, 2]]), 2).tolist() == [[1, 2, 1, 2, 2, 2]]
    assert split_long_patches(torch.tensor([[1, 10], [1, 10]]), 3).tolist() == [[1, 3, 3, 3, 1]] * 2
    assert split_long_patches(torch.tensor([[1, 3, 4, 2]]), 100).tolist() == [[1, 3, 4, 2]]
    assert split_long_patches(torch.zeros(2, 0, dtype=torch.long), 3).shape == (2, 0)


@given(rows=st.lists(st.lists(st.integers(1, 12), max_size=6), min_size=1, max_size=3), max_len=st.integers(1, 5))
@PROPERTY
def test_split_long_patches_matches_splitting_one_patch_at_a_time(rows, max_len):
    seq_len = 1 + max(sum(r) for r in rows)
    rows = [[1, *r, seq_len - 1 - sum(r)] if seq_len - 1 - sum(r) else [1, *r] for r in rows]
    expected = [[piece for n in r for piece in [max_len] * (n // max_len) + ([n % max_len] if n % max_len else [])]
                for r in rows]
    width = max(len(e) for e in expected)
    padded = torch.tensor([r + [0] * (max(map(len, rows)) - len(r)) for r in rows])
    assert split_long_patches(padded, max_len).tolist() == [e + [0] * (width - len(e)) for e in expected]


def test_ten_thousand_spaces_with_max_patch_length():
    ids = encode(" " * 10_000)[None]
    for config in (PatchingConfig(mode="space", max_patch_length=16),
                   PatchingConfig(mode="entropy", threshold=1.0, max_patch_length=16)):
        patch_lengths = patch_lengths_for(ids, config, entropies=torch.zeros(ids.shape))
        assert patch_lengths.tolist() == [[1] + [16] * 625]


# --- properties of every scheme ------------------------------------------------------------------

@given(patching_cases())
@PROPERTY
def test_patch_lengths_are_valid(case):
    ids, h, config = case
    patch_lengths = run(ids, h, config)
    batch_size, seq_len = ids.shape
    assert patch_lengths.dtype == torch.long and patch_lengths.shape[0] == batch_size
    assert patch_lengths.sum(dim=1).eq(seq_len).all()
    positive = patch_lengths > 0
    assert not (positive[:, 1:] & ~positive[:, :-1]).any(), "zeros only as right padding"
    assert patch_lengths.shape[1] == (int(positive.sum(1).max()) if seq_len else 0), "no all-padding column"
    if config.max_patch_length is not None:
        assert patch_lengths.le(config.max_patch_length).all()
    if seq_len:
        assert patch_lengths[:, 0].eq(1).all(), "BOS is a patch of its own"
    check_patch_lengths(ids, patch_lengths)


@given(patching_cases(CAUSAL_MODES))
@PROPERTY
def test_patching_follows_the_definition(case):
    ids, h, config = case
    mask = start_mask_for(ids, config, entropies=h)
    for row_ids, row_h, row_mask in zip(ids.tolist(), h.tolist(), mask.tolist()):
        assert row_mask == naive_starts(row_ids, row_h, config)


@given(patching_cases(CAUSAL_MODES))
@PROPERTY
def test_patching_a_prefix_gives_a_prefix_of_the_patching(case):
    ids, h, config = case
    full = run(ids, h, config).tolist()
    for t in range(ids.shape[1] + 1):
        prefix = run(ids[:, :t], h[:, :t], config).tolist()
        assert [[n for n in row if n] for row in prefix] == [truncate(row, t) for row in full]


@given(patching_cases())
@PROPERTY
def test_rows_are_patched_independently(case):
    ids, h, config = case
    batch = run(ids, h, config)
    for r in range(ids.shape[0]):
        alone = run(ids[r:r + 1], h[r:r + 1], config)
        assert torch.equal(trim_padding(batch[r:r + 1]), alone)
    flipped = run(ids.flip(0), h.flip(0), config)
    assert torch.equal(trim_padding(flipped), trim_padding(batch.flip(0)))


@given(patching_cases())
@PROPERTY
def test_lengths_and_start_mask_round_trip(case):
    ids, h, config = case
    mask = start_mask_for(ids, config, entropies=h, tokenizer=tiny_bpe())
    patch_lengths = lengths_from_start_mask(mask)
    assert torch.equal(start_mask_from_lengths(patch_lengths), mask)
    assert torch.equal(lengths_from_start_mask(start_mask_from_lengths(patch_lengths)), patch_lengths)


@given(patching_cases(ENTROPY_MODES), st.integers(1, 6))
@PROPERTY
def test_max_patch_length_equals_splitting_afterwards(case, max_len):
    ids, h, config = case
    config = config.replace(max_patch_length=None)
    capped = run(ids, h, config.replace(max_patch_length=max_len))
    assert torch.equal(capped, split_long_patches(run(ids, h, config), max_len))
    assert torch.equal(cap_start_mask(start_mask_for(ids, config, entropies=h), max_len),
                       start_mask_for(ids, config.replace(max_patch_length=max_len), entropies=h))


@given(h=st.lists(st.floats(0, 6, width=32), min_size=4, max_size=30), theta=st.floats(-1, 6, width=32))
@PROPERTY
def test_entropy_patching_is_the_same_in_any_float_dtype(h, theta):
    h32 = torch.tensor([h])
    expected = patch_lengths_from_entropies(h32, theta)
    assert torch.equal(patch_lengths_from_entropies(h32.double(), theta), expected)
    h16 = h32.half()
    assert torch.equal(patch_lengths_from_entropies(h16, theta), patch_lengths_from_entropies(h16.float(), theta))


# --- edge cases and bad input --------------------------------------------------------------------

@pytest.mark.parametrize("mode", PATCHING_MODES)
@pytest.mark.parametrize("seq_len", [0, 1, 2])
def test_empty_and_bos_only_sequences(mode, seq_len):
    ids = torch.tensor([[BOS_ID, OFFSET][:seq_len]] * 2, dtype=torch.long).reshape(2, seq_len)
    config = PatchingConfig(mode=mode, threshold=1.0, relative_threshold=0.5, max_patch_length=3)
    patch_lengths = patch_lengths_for(ids, config, entropies=torch.full((2, seq_len), 9.0), tokenizer=tiny_bpe())
    assert patch_lengths.tolist() == [[1] * seq_len] * 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_entropies_are_rejected(bad):
    h = H_EXAMPLE.clone()
    h[0, 5] = bad
    with pytest.raises(ValueError, match=r"entropies\[0, 5\].*finite"):
        patch_lengths_from_entropies(h, 1.0)
    with pytest.raises(ValueError, match="finite"):
        start_mask_monotonic(h, 1.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None, "1.0", True])
def test_invalid_thresholds_are_rejected(bad):
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        patch_lengths_from_entropies(H_EXAMPLE, bad)
    with pytest.raises(ValueError, match="relative_threshold must be a finite number"):
        patch_lengths_from_entropies(H_EXAMPLE, 1.0, relative_threshold=bad if bad is not None else math.nan)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_invalid_max_patch_length_is_rejected(bad):
    with pytest.raises(ValueError, match="max_patch_length must be a positive int"):
        patch_lengths_from_entropies(H_EXAMPLE, 1.0, max_patch_length=bad)
    with pytest.raises(ValueError, match="max_patch_length must be a positive int"):
        split_long_patches(torch.tensor([[1, 3]]), bad)


def test_bad_shapes_and_types_are_rejected():
    with pytest.raises(ValueError, match="add a batch dimension"):
        patch_lengths_from_entropies(H_EXAMPLE[0], 1.0)
    with pytest.raises(ValueError, match="floating-point"):
        start_mask_global(torch.ones(1, 4, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="add a batch dimension"):
        start_mask_space(encode("hi"))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 260\)"):
        start_mask_space(torch.tensor([[1, 260]]))
    with pytest.raises(ValueError, match="integer tensor"):
        start_mask_space(torch.tensor([[1.0, 70.0]]))
    with pytest.raises(ValueError, match="shape of ids"):
        patch_lengths_for(encode("hi")[None], PatchingConfig(threshold=1.0), entropies=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="same sequence length"):
        split_long_patches(torch.tensor([[1, 3], [1, 4]]), 2)
    with pytest.raises(ValueError, match="must be >= 0"):
        start_mask_from_lengths(torch.tensor([[1, 4, -1]]))
    with pytest.raises(ValueError, match="start_mask\\[:, 0\\] must be True"):
        lengths_from_start_mask(torch.tensor([[False, True]]))
    with pytest.raises(ValueError, match="bool tensor"):
        lengths_from_start_mask(torch.tensor([[1, 1]]))
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        start_mask_static(10, 0)
    with pytest.raises(ValueError, match="relative_threshold is for combined mode"):
        patch_lengths_from_entropies(H_EXAMPLE, 1.0, monotonic=True, relative_threshold=1.0)


def test_dispatcher_says_what_is_missing():
    ids = encode("hello")[None]
    with pytest.raises(ValueError, match="needs entropies"):
        patch_lengths_for(ids, PatchingConfig(mode="entropy", threshold=1.0))
    with pytest.raises(ConfigError, match="calibrate"):
        patch_lengths_for(ids, PatchingConfig(mode="monotonic", target_patch_size=6.0),
                          entropies=torch.zeros(ids.shape))
    with pytest.raises(ConfigError, match="calibrate"):
        patch_lengths_for(ids, PatchingConfig(mode="combined", threshold=1.0, target_patch_size=6.0),
                          entropies=torch.zeros(ids.shape))
    with pytest.raises(ValueError, match="needs a byte-level BPE tokenizer"):
        patch_lengths_for(ids, PatchingConfig(mode="bpe"))
