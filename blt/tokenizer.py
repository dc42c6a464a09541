"""Bytes <-> ids (docs/design.md §1).

260 ids: 0 = BOE/pad, 1 = BOS, 2 = EOS, 3 = BPE-boundary marker, and byte ``b`` is id ``b + 4``.
This is the layout of the released BLT checkpoints.

>>> encode(b"Hi").tolist()
[1, 76, 109]
>>> decode([1, 76, 109, 2])
b'Hi'
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

BOE_ID = 0  # beginning-of-example padding (static patching pads with it); also the pad id
PAD_ID = BOE_ID
BOS_ID = 1
EOS_ID = 2
BPE_ID = 3  # marks a BPE token boundary when patching with a BPE tokenizer
OFFSET = 4  # byte b has id b + OFFSET
VOCAB_SIZE = 256 + OFFSET
SPECIAL_NAMES = {BOE_ID: "<boe>", BOS_ID: "<bos>", EOS_ID: "<eos>", BPE_ID: "<bpe>"}


def encode(data: str | bytes | bytearray | memoryview, *, bos: bool = True, eos: bool = False) -> torch.Tensor:
    """Encode text (as UTF-8) or raw bytes to a 1-D LongTensor of ids, BOS first by default."""
    if isinstance(data, str):
        raw = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise TypeError(f"encode() takes str or bytes, not {type(data).__name__}")
    body = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) + OFFSET
    parts = ([np.array([BOS_ID])] if bos else []) + [body] + ([np.array([EOS_ID])] if eos else [])
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def decode(ids: torch.Tensor | np.ndarray | Iterable[int]) -> bytes:
    """Decode ids to bytes, dropping special ids (< 4). Raises ValueError on ids outside [0, 260)."""
    if isinstance(ids, torch.Tensor):
        arr = ids.detach().cpu().numpy()
    else:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    arr = arr.reshape(-1).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        bad = int(arr[(arr < 0) | (arr >= VOCAB_SIZE)][0])
        raise ValueError(f"id {bad} is outside the byte vocabulary [0, {VOCAB_SIZE}); was it produced by another tokenizer?")
    return (arr[arr >= OFFSET] - OFFSET).astype(np.uint8).tobytes()


def show(data: bytes) -> str:
    """Bytes as text for a terminal: UTF-8 with invalid sequences replaced."""
    return data.decode("utf-8", errors="replace")


def document_ids(ids: torch.Tensor) -> torch.Tensor:
    """Document index of every byte: documents end at EOS (the EOS belongs to the one it ends). (B, T) -> (B, T).

    >>> document_ids(torch.tensor([[1, 80, 2, 1, 81]])).tolist()
    [[0, 0, 0, 1, 1]]
    """
    ends = (ids == EOS_ID).long()
    return torch.cumsum(ends, dim=-1) - ends
