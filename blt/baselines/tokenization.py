"""Tokenizers of the baselines: byte-level BPE (Hugging Face ``tokenizers``) and the identity over bytes.

Both keep blt's special ids: token 0 = BOE/pad, 1 = BOS, 2 = EOS, 3 = BPE marker (`blt.tokenizer`), so a
row of byte ids and its row of tokens share BOS, EOS and padding, and `blt.tokenizer.document_ids`
works on tokens too.

**Byte-level BPE.** Every byte is first mapped to one of 256 printable characters (GPT-2's
``bytes_to_unicode`` table: printable Latin-1 bytes map to themselves, the others to U+0100..U+0143), so
the tokenizer sees a string of exactly one character per byte whatever the bytes are (invalid UTF-8,
binary files). A GPT-2-style pre-tokenizer splits that string into words (``'s``-style contractions,
an optional space plus a run of letters, of 1-3 digits or of other symbols, runs of whitespace); bytes
0x80-0xFF count as letters, so UTF-8 words stay whole. BPE merges are learned within words, starting
from all 256 byte characters, so every byte string has a tokenization and decoding concatenates each
token's bytes: ``decode(encode(data)) == data`` for any ``data``. Special tokens are named with
characters outside the byte alphabet so that no input can spell one.

>>> tok = ByteTokenizer()
>>> tok.encode(b"Hi"), tok.decode([1, 76, 109, 2])
([76, 109], b'Hi')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from blt.data import PreparedData
from blt.data.iterator import epoch_order
from blt.errors import CheckpointError, ConfigError
from blt.fileio import atomic_write_text
from blt.model.byte_latent import byte_loss_mask
from blt.tokenizer import OFFSET, PAD_ID, VOCAB_SIZE

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

SPECIAL_TOKENS = ("⟨boe⟩", "⟨bos⟩", "⟨eos⟩", "⟨bpe⟩")  # token ids 0..3, the ids of blt's specials
NUM_SPECIALS = len(SPECIAL_TOKENS)
MIN_BPE_VOCAB = NUM_SPECIALS + 256  # the specials and one token per byte, before any merge
MAX_BPE_VOCAB = 2**24  # far past any data's merges; `tokenizers` sizes tables by the vocab asked for
DEFAULT_BPE_TRAIN_BYTES = 32_000_000  # bytes of training documents the merges are learned from
TOKENIZER_FILE = "tokenizer.json"


def byte_characters() -> list[str]:
    """GPT-2's ``bytes_to_unicode``: the character that stands for each byte 0..255 (index = byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


BYTE_CHARS = byte_characters()
_TO_CHARS = str.maketrans({b: c for b, c in enumerate(BYTE_CHARS)})  # applied to bytes decoded as Latin-1
_CHAR_TO_BYTE = {c: b for b, c in enumerate(BYTE_CHARS)}


def _byte_class(byte_values: Iterable[int]) -> str:
    """A regex character class of the characters that stand for ``byte_values``."""
    return "[" + "".join(f"\\x{{{ord(BYTE_CHARS[b]):X}}}" for b in sorted(byte_values)) + "]"


def _pre_tokenizer_pattern() -> str:
    letters = {*range(ord("A"), ord("Z") + 1), *range(ord("a"), ord("z") + 1), *range(0x80, 0x100)}
    digits = set(range(ord("0"), ord("9") + 1))
    spaces = {*range(0x09, 0x0E), 0x20}
    other = set(range(256)) - letters - digits - spaces
    space, quote = _byte_class([0x20]), _byte_class([ord("'")])
    L, D, O, W = (_byte_class(s) for s in (letters, digits, other, spaces))
    not_w = _byte_class(set(range(256)) - spaces)
    return f"{quote}(?:s|t|re|ve|m|ll|d)|{space}?{L}+|{space}?{D}{{1,3}}|{space}?{O}+|{W}+(?!{not_w})|{W}+"


def bytes_to_text(data: bytes) -> str:
    """Bytes as the tokenizer's string: one character per byte (module docstring)."""
    return bytes(data).decode("latin-1").translate(_TO_CHARS)


def _rows_to_tokens(ids: torch.Tensor, encode_batch) -> torch.Tensor:
    """Tokenize rows of byte ids (B, T): each run of data bytes with ``encode_batch`` (list of bytes -> list
    of token lists), each special id as itself; padding dropped. -> (B, N) right-padded with PAD."""
    rows = ids.cpu().numpy()
    pieces: list[list[list[int] | int]] = []
    runs: list[bytes] = []
    for row in rows:
        row = row[row != PAD_ID]
        is_byte = row >= OFFSET
        edges = np.flatnonzero(np.diff(is_byte.astype(np.int8))) + 1  # where a run of bytes or specials ends
        parts: list[list[int] | int] = []
        for segment in np.split(row, edges):
            if len(segment) and segment[0] >= OFFSET:
                parts.append(len(runs))  # index of its run of bytes, tokenized below in one batch
                runs.append((segment - OFFSET).astype(np.uint8).tobytes())
            else:
                parts.extend([[int(s)] for s in segment])
        pieces.append(parts)
    encoded = encode_batch(runs) if runs else []
    token_rows = [[t for part in parts for t in (encoded[part] if isinstance(part, int) else part)] for parts in pieces]
    width = max(1, max(len(r) for r in token_rows))
    out = np.full((len(token_rows), width), PAD_ID, dtype=np.int64)
    for i, r in enumerate(token_rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out).to(ids.device)


def count_token_targets(tokens: torch.Tensor) -> int:
    """Token targets that count in the loss (tokens and EOS; not BOS or padding), as bytes do for BLT."""
    return int(byte_loss_mask(tokens[:, 1:]).sum())


class ByteTokenizer:
    """The identity over blt's 260 ids: with it a token model is a plain byte-level transformer."""

    kind = "byte"
    vocab_size = VOCAB_SIZE

    def encode(self, data: bytes) -> list[int]:
        """Data bytes -> token ids (no BOS/EOS)."""
        return [b + OFFSET for b in bytes(data)]

    def encode_batch(self, items: Sequence[bytes]) -> list[list[int]]:
        return [self.encode(item) for item in items]

    def decode(self, tokens: Iterable[int]) -> bytes:
        """Token ids -> bytes; special tokens decode to nothing."""
        return bytes(t - OFFSET for t in tokens if t >= OFFSET)

    def token_bytes(self, token: int) -> bytes:
        return bytes([token - OFFSET]) if token >= OFFSET else b""

    def tokenize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of byte ids (B, T) -> the same rows (B, T): bytes are the tokens."""
        return ids

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size}


class BPETokenizer:
    """Byte-level BPE over any bytes (module docstring); wraps a ``tokenizers.Tokenizer``."""

    kind = "bpe"

    def __init__(self, tokenizer: HFTokenizer):
        vocab = tokenizer.get_vocab()
        specials_ok = all(vocab.get(name) == i for i, name in enumerate(SPECIAL_TOKENS))
        if not specials_ok or any(c not in vocab for c in BYTE_CHARS):
            raise CheckpointError("not a blt byte-level BPE tokenizer (its first tokens must be "
                                  f"{list(SPECIAL_TOKENS)} and it must hold all 256 byte characters); "
                                  "train one with `blt train-baseline --kind bpe`")
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self._bytes = [b""] * self.vocab_size
        for token, i in vocab.items():
            if i >= NUM_SPECIALS:
                self._bytes[i] = bytes(_CHAR_TO_BYTE[c] for c in token)

    @classmethod
    def train(cls, documents: Iterable[bytes], vocab_size: int) -> BPETokenizer:
        """Learn merges from ``documents`` up to ``vocab_size`` tokens (fewer if the data has no more pairs)."""
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        if not MIN_BPE_VOCAB <= vocab_size <= MAX_BPE_VOCAB:
            raise ConfigError(f"BPE vocab size must be at least {MIN_BPE_VOCAB} (4 specials + 256 bytes) and at most "
                              f"{MAX_BPE_VOCAB:,}, got {vocab_size}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(_pre_tokenizer_pattern()), behavior="isolated")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      initial_alphabet=BYTE_CHARS, show_progress=False)
        tokenizer.train_from_iterator((bytes_to_text(doc) for doc in documents), trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} does not exist; train one with `blt train-baseline --kind bpe`")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001  (tokenizers raises a bare Exception on malformed files)
            raise CheckpointError(f"{path} is not a valid tokenizers JSON file: {str(err).splitlines()[0]}") from None
        return cls(tokenizer)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.tokenizer.to_str(pretty=True))

    def encode(self, data: bytes) -> list[int]:
        """Data bytes -> token ids (no BOS/EOS)."""
        return self.tokenizer.encode(bytes_to_text(data), add_special_tokens=False).ids

    def encode_batch(self, items: Sequence[bytes]) -> list[list[int]]:
        texts = [bytes_to_text(item) for item in items]
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, tokens: Iterable[int]) -> bytes:
        """Token ids -> bytes; special tokens decode to nothing."""
        return b"".join(self._bytes[t] for t in tokens)

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token]

    def tokenize_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of byte ids (B, T) -> rows of tokens (B, N), N <= T, right-padded with PAD.

        Each run of data bytes between special ids is tokenized on its own; each special id is one token.
        """
        return _rows_to_tokens(ids, self.encode_batch)

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "file": TOKENIZER_FILE}


BaselineTokenizer = ByteTokenizer | BPETokenizer


def training_documents(data: PreparedData, max_bytes: int = DEFAULT_BPE_TRAIN_BYTES, seed: int = 0) -> Iterable[bytes]:
    """Documents of the training split in a shuffled order (fixed by ``seed``), until ``max_bytes``."""
    split = data.split("train")
    total = 0
    for i in epoch_order(len(split), seed, 0):
        if total >= max_bytes:
            return
        doc = bytes(split[int(i)][: max_bytes - total])
        total += len(doc)
        yield doc


def train_bpe(data: PreparedData, vocab_size: int, max_bytes: int = DEFAULT_BPE_TRAIN_BYTES, seed: int = 0) -> BPETokenizer:
    """A byte-level BPE learned from (up to ``max_bytes`` of) the training split of ``data``."""
    if max_bytes < 1:
        raise ConfigError(f"a BPE is learned from at least 1 training byte (--bpe-train-bytes), got {max_bytes}")
    return BPETokenizer.train(training_documents(data, max_bytes, seed), vocab_size)


def tokenizer_from_record(record: dict, run_dir: Path) -> BaselineTokenizer:
    """The tokenizer a token-model run's config.json describes (``record["tokenizer"]``)."""
    info = record.get("tokenizer")
    if not isinstance(info, dict) or info.get("kind") not in ("bpe", "byte"):
        raise CheckpointError(f"{Path(run_dir) / 'config.json'} has no tokenizer of kind bpe or byte")
    if info["kind"] == "byte":
        return ByteTokenizer()
    return BPETokenizer.load(Path(run_dir) / info.get("file", TOKENIZER_FILE))


def measure_bytes_per_token(tokenizer: BaselineTokenizer, batches: Iterable[torch.Tensor]) -> tuple[float, int]:
    """Mean bytes per token over rows of byte ids, counted as the losses count them: (data bytes + EOS) /
    (tokens + EOS) over the targets after each row's BOS. Returns (bytes per token, bytes)."""
    byte_targets, token_targets = 0, 0
    for ids in batches:
        byte_targets += int(byte_loss_mask(ids[:, 1:]).sum())
        token_targets += count_token_targets(tokenizer.tokenize_rows(ids))
    if token_targets == 0:
        raise ConfigError("no data to measure bytes per token on")
    return byte_targets / token_targets, byte_targets
