"""Patchers: where patches start, as small pure functions on tensors (docs/design.md §2).

Every scheme builds a start mask ``BoolTensor[B, T]`` (True where a patch starts) and turns it into
``patch_lengths: LongTensor[B, P]`` (right-padded with 0, each row summing to T). In every scheme
position 0 (BOS) is a patch of its own and position 1 starts a patch, so the first patch is exactly one
byte, which `blt.model.layout.decoder_patch_ids` needs to be causal.

Boundaries are causal: whether byte ``i + 1`` starts a patch depends only on bytes ``<= i`` (through
``H_i`` and ``H_{i-1}`` for entropy patching, bytes ``i`` and ``i - 1`` for space patching, the position
for static patching, the distance to the last start for `cap_start_mask`). So patching a prefix gives
a prefix of the patching. BPE patching is the exception: BPE merges look ahead.

>>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
>>> patch_lengths_from_entropies(H, threshold=1.0).tolist()
[[1, 3, 4, 2]]
>>> patch_lengths_from_entropies(H, threshold=1.0, max_patch_length=2).tolist()
[[1, 2, 1, 2, 2, 2]]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from blt.config import PatchingConfig
from blt.errors import ConfigError
from blt.model.layout import patch_ids_from_lengths, patch_lengths_from_ids
from blt.tokenizer import BOE_ID, BOS_ID, EOS_ID, OFFSET, VOCAB_SIZE

if TYPE_CHECKING:
    from tokenizers import Tokenizer



@runtime_checkable
class BytesTokenizer(Protocol):
    """A tokenizer of raw bytes that knows each token's bytes, such as `blt.baselines.BPETokenizer` (what
    `blt train-baseline --kind bpe` learns and `blt train --patching bpe` patches with)."""

    def encode_batch(self, items: Sequence[bytes]) -> list[list[int]]: ...

    def token_bytes(self, token: int) -> bytes: ...


# surrogateescape decodes each invalid UTF-8 byte 0x80-0xFF to U+DC80-U+DCFF; BPE reads them as U+FFFD.
_ESCAPED_TO_REPLACEMENT = {0xDC80 + b: "\ufffd" for b in range(128)}
_REPLACEMENT_UTF8_BYTES = 3


# --- input checks --------------------------------------------------------------------------------

def _shape(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"


def _check_entropies(entropies: torch.Tensor) -> None:
    if not isinstance(entropies, torch.Tensor) or entropies.dim() != 2:
        raise ValueError(f"entropies must be a (B, T) tensor, got {_shape(entropies)}; "
                         "add a batch dimension with entropies[None]")
    if not entropies.is_floating_point():
        raise ValueError(f"entropies must be a floating-point tensor (nats), got {entropies.dtype}")
    bad = ~torch.isfinite(entropies)
    if bool(bad.any()):
        row, pos = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"entropies[{row}, {pos}] is {float(entropies[row, pos])}; entropies must be finite "
                         "(check the entropy model's logits for NaN or inf)")


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of nats (e.g. 1.335), got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_ids(ids: torch.Tensor) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(f"ids must be a (B, T) tensor, got {_shape(ids)}; add a batch dimension with ids[None]")
    if ids.dtype not in (torch.int64, torch.int32, torch.int16):
        raise ValueError(f"ids must be an integer tensor (torch.long), got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= VOCAB_SIZE):
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE}); got min {int(ids.min())}, max {int(ids.max())}; "
                         "use blt.encode() to turn bytes into ids")


def _check_start_mask(start_mask: torch.Tensor) -> None:
    if not isinstance(start_mask, torch.Tensor) or start_mask.dim() != 2 or start_mask.dtype != torch.bool:
        raise ValueError(f"start_mask must be a (B, T) bool tensor, got {_shape(start_mask)}"
                         + (f" of {start_mask.dtype}" if isinstance(start_mask, torch.Tensor) else ""))
    if start_mask.shape[1] and not bool(start_mask[:, 0].all()):
        raise ValueError("start_mask[:, 0] must be True: the first position (BOS) always starts a patch")


def _check_patch_lengths(patch_lengths: torch.Tensor) -> int:
    """Validate (B, P) lengths whose rows all sum to the same T; return T."""
    if not isinstance(patch_lengths, torch.Tensor) or patch_lengths.dim() != 2 or patch_lengths.is_floating_point():
        raise ValueError(f"patch_lengths must be a (B, P) integer tensor, got {_shape(patch_lengths)}")
    if patch_lengths.numel() and int(patch_lengths.min()) < 0:
        raise ValueError("patch_lengths must be >= 0")
    sums = patch_lengths.sum(dim=-1)
    if sums.numel() and bool((sums != sums[0]).any()):
        raise ValueError(f"every row of patch_lengths must sum to the same sequence length T; got sums {sums.tolist()}")
    return int(sums[0]) if sums.numel() else 0


def _forced_starts(batch_size: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """(B, T) mask with only BOS (position 0) and the first byte after it (position 1) starting."""
    mask = torch.zeros(batch_size, seq_len, dtype=torch.bool, device=device)
    mask[:, :2] = True
    return mask


def _comparison_dtype(entropies: torch.Tensor) -> torch.dtype:
    """The dtype entropy thresholds are compared in: float16/bfloat16 are upcast to float32.

    A Python-float threshold is rounded to this dtype before comparing (PyTorch's scalar promotion),
    which `calibrate_threshold_from_entropies` takes into account.
    """
    return torch.promote_types(entropies.dtype, torch.float32)


def _relative_scores(entropies: torch.Tensor) -> torch.Tensor:
    """``H_i - H_{i-1}`` for ``i = 2 .. T-2``: the scores that decide bytes ``3 .. T-1`` in monotonic
    mode. (B, T) -> (B, max(T - 3, 0)), in `_comparison_dtype`.

    >>> _relative_scores(torch.tensor([[2.0, 0.5, 0.25, 3.0, 0.25]])).tolist()
    [[-0.25, 2.75]]
    """
    h = entropies.to(_comparison_dtype(entropies))
    return h[:, 2:-1] - h[:, 1:-2]


# --- start masks ---------------------------------------------------------------------------------

def start_mask_global(entropies: torch.Tensor, threshold: float) -> torch.Tensor:
    """Global-threshold patch starts: byte ``i + 1`` starts a patch when ``H_i > threshold``.
    (B, T) float -> (B, T) bool. Positions 0 (BOS) and 1 always start; ``H_0`` and ``H_{T-1}`` decide
    nothing (byte 1 starts anyway, byte T is outside the sequence).

    >>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
    >>> start_mask_global(H, 1.0).nonzero()[:, 1].tolist()
    [0, 1, 4, 8]
    """
    _check_entropies(entropies)
    threshold = _check_threshold("threshold", threshold)
    mask = _forced_starts(*entropies.shape, device=entropies.device)
    mask[:, 2:] = entropies[:, 1:-1].to(_comparison_dtype(entropies)) > threshold
    return mask


def start_mask_monotonic(entropies: torch.Tensor, threshold: float) -> torch.Tensor:
    """Monotonic (relative) patch starts: byte ``i + 1`` starts a patch when ``H_i - H_{i-1} > threshold``,
    tested for ``i >= 2``. (B, T) float -> (B, T) bool. Positions 0 and 1 always start.

    ``H_0`` (the prediction from BOS alone) never places a boundary, so the first difference is
    ``H_2 - H_1``. Byte 2 therefore never starts a patch; the reference starts one there unconditionally
    because it has no difference to test, which we don't copy.

    >>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
    >>> start_mask_monotonic(H, 1.0).nonzero()[:, 1].tolist()
    [0, 1, 4, 8]
    >>> start_mask_monotonic(torch.tensor([[0.0, 5.0, 0.0, 0.0]]), 1.0).tolist()  # H_1 - H_0 is not tested
    [[True, True, False, False]]
    """
    _check_entropies(entropies)
    threshold = _check_threshold("threshold", threshold)
    mask = _forced_starts(*entropies.shape, device=entropies.device)
    mask[:, 3:] = _relative_scores(entropies) > threshold
    return mask


def start_mask_combined(entropies: torch.Tensor, threshold: float, relative_threshold: float) -> torch.Tensor:
    """Combined patch starts (the reference's ``threshold_add``): byte ``i + 1`` starts a patch when both
    ``H_i > threshold`` and ``H_i - H_{i-1} > relative_threshold`` (the latter tested for ``i >= 2``, so
    byte 2 never starts). (B, T) float -> (B, T) bool. Positions 0 and 1 always start.

    >>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
    >>> start_mask_combined(H, 2.8, 1.0).nonzero()[:, 1].tolist()  # 2.5 - 0.1 passes θ_r but not θ_g
    [0, 1, 4]
    """
    relative_threshold = _check_threshold("relative_threshold", relative_threshold)
    return start_mask_global(entropies, threshold) & start_mask_monotonic(entropies, relative_threshold)


def start_mask_static(seq_len: int, patch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Static patch starts: BOS alone, then patches of ``patch_size`` bytes (the last one may be shorter).
    -> (1, T) bool; ``.expand(B, -1)`` it for a batch. ``patch_size=1`` is byte-level patching.

    The reference prepends ``patch_size - 1`` BOE ids so that its first ``k``-byte patch ends at BOS
    (see `pad_for_static`). Dropping those BOE ids gives exactly these boundaries, lengths
    ``[1, k, k, ..., remainder]``: the first patch is BOS alone, so the decoder's one-patch shift stays
    causal, and hash n-grams already read ids before the start as BOE, so the padding carries nothing.

    >>> start_mask_static(10, 4).int().tolist()
    [[1, 1, 0, 0, 0, 1, 0, 0, 0, 1]]
    >>> lengths_from_start_mask(start_mask_static(10, 4)).tolist()
    [[1, 4, 4, 1]]
    """
    seq_len = int(seq_len)
    if seq_len < 0:
        raise ValueError(f"seq_len must be >= 0, got {seq_len}")
    patch_size = _check_positive_int("patch_size", patch_size)
    positions = torch.arange(seq_len, device=device)
    return ((positions == 0) | ((positions - 1) % patch_size == 0)).unsqueeze(0)


def pad_for_static(ids: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The reference's static-patching layout: prepend ``patch_size - 1`` BOE ids (id 0) to each row, so
    plain ``patch_size``-byte patches of the padded row put BOS last in the first patch.
    (B, T) -> (B, T + patch_size - 1).

    Our models do not take this layout: its first patch has ``patch_size`` bytes, so the BOE positions
    would read a global state that ends after them (`decoder_patch_ids` is causal only when the first
    patch is one byte, and `check_patch_lengths` rejects it). Use it to exchange data with the reference;
    dropping the padding shrinks the first patch to BOS alone and gives exactly `start_mask_static`'s patches.

    >>> pad_for_static(torch.tensor([[1, 76, 109]]), 4).tolist()
    [[0, 0, 0, 1, 76, 109]]
    """
    _check_ids(ids)
    patch_size = _check_positive_int("patch_size", patch_size)
    padding = ids.new_full((ids.shape[0], patch_size - 1), BOE_ID)
    return torch.cat([padding, ids], dim=1)


def spacelike(ids: torch.Tensor) -> torch.Tensor:
    """Which ids are "spacelike" for space patching: not an ASCII letter or digit and not a UTF-8
    continuation byte (0x80-0xBF). UTF-8 lead bytes (>= 0xC0) and special ids (< 4) are spacelike.
    Same shape in, bool out.

    >>> spacelike(torch.tensor([ord(c) + 4 for c in "a1 ."] + [0xC3 + 4, 0xA9 + 4, 1])).tolist()
    [False, False, True, True, True, False, True]
    """
    byte = ids.long() - OFFSET  # specials become negative and so spacelike
    alnum = (((byte >= ord("0")) & (byte <= ord("9"))) | ((byte >= ord("A")) & (byte <= ord("Z")))
             | ((byte >= ord("a")) & (byte <= ord("z"))))
    continuation = (byte >= 0x80) & (byte < 0xC0)
    return ~(alnum | continuation)


def start_mask_space(ids: torch.Tensor) -> torch.Tensor:
    """Space patch starts: byte ``p >= 2`` starts a patch when byte ``p - 1`` is `spacelike` and byte
    ``p - 2`` is not, so the first spacelike byte of a run ends the patch before it and the rest of the
    run opens the next one. Positions 0 and 1 always start. (B, T) ids -> (B, T) bool.

    Because UTF-8 lead bytes count as spacelike, a multi-byte character after a letter is split after
    its lead byte (as in the reference).

    >>> from blt.tokenizer import encode
    >>> ids = encode("Hi, you!")[None]
    >>> lengths_from_start_mask(start_mask_space(ids)).tolist()  # <bos> | Hi, | ␣you!
    [[1, 3, 5]]
    >>> lengths_from_start_mask(start_mask_space(encode("café au")[None])).tolist()  # caf\\xc3 | \\xa9␣ | au
    [[1, 4, 2, 2]]
    """
    _check_ids(ids)
    is_space = spacelike(ids)
    mask = _forced_starts(*ids.shape, device=ids.device)
    mask[:, 2:] = is_space[:, 1:-1] & ~is_space[:, :-2]
    return mask


def _utf8_width(code_points: np.ndarray) -> np.ndarray:
    return 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)


def _characters(data: bytes) -> tuple[str, np.ndarray, np.ndarray]:
    """``data`` as text for a tokenizer, each invalid UTF-8 byte read as U+FFFD, and the width in bytes of
    each of its characters in ``data`` and in the text's own UTF-8."""
    text = data.decode("utf-8", errors="surrogateescape")
    code_points = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4").astype(np.int64)
    escaped = (code_points >= 0xDC80) & (code_points <= 0xDCFF)
    data_width = np.where(escaped, 1, _utf8_width(code_points))
    text_width = np.where(escaped, _REPLACEMENT_UTF8_BYTES, data_width)
    return text.translate(_ESCAPED_TO_REPLACEMENT), data_width, text_width


def _token_starts(tokens: list[str], data_width: np.ndarray, text_width: np.ndarray) -> np.ndarray:
    """Byte offsets in the data where byte-level BPE ``tokens`` of its text (see `_characters`) start."""
    # A byte-level BPE token is a string over a 256-character alphabet: one character per byte.
    token_width = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    if int(token_width.sum()) != int(text_width.sum()):
        raise ValueError("start_mask_bpe needs a byte-level BPE tokenizer whose tokens cover every byte "
                         "(pre_tokenizers.ByteLevel(add_prefix_space=False), trained with "
                         "initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), no normalizer); "
                         f"its tokens {tokens[:8]} add up to {int(token_width.sum())} bytes, "
                         f"not {int(text_width.sum())}")
    char_text_starts = np.cumsum(text_width) - text_width
    char_data_starts = np.cumsum(data_width) - data_width
    token_text_starts = np.cumsum(token_width) - token_width
    # A token that starts inside a character (a partial UTF-8 sequence) starts at that character.
    chars = np.searchsorted(char_text_starts, token_text_starts, side="right") - 1
    return char_data_starts[chars]


def start_mask_bpe(ids: torch.Tensor, tokenizer: Tokenizer | BytesTokenizer) -> torch.Tensor:
    """BPE patch starts: the starts of the tokens of a byte-level BPE tokenizer: a Hugging Face
    ``tokenizers.Tokenizer`` over text (from ``transformers`` pass ``tok.backend_tokenizer``), or a
    `BytesTokenizer` over raw bytes (blt's own BPE; its tokens' bytes give the widths directly, so the rest
    of this paragraph is about text tokenizers). (B, T) ids -> (B, T) bool.

    Each run of data bytes between special ids is tokenized on its own; each special id is a patch of
    its own. Positions 0 and 1 always start. Bytes that are not valid UTF-8 are read by the tokenizer as
    U+FFFD, one per byte, so any file works; a token that starts inside a character starts at it.
    Not strictly causal: BPE merges look ahead, so a boundary can depend on the bytes after it and
    patching a prefix need not give a prefix of the patching.

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "Ġ": 3}, merges=[("a", "b")]))
    >>> tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    >>> from blt.tokenizer import encode
    >>> lengths_from_start_mask(start_mask_bpe(encode("abab ab")[None], tok)).tolist()  # ab | ab | ␣ | ab
    [[1, 2, 2, 1, 2]]
    """
    _check_ids(ids)
    rows = ids.long().cpu().numpy()
    mask = np.zeros(rows.shape, dtype=bool)
    mask[:, :2] = True
    runs: list[tuple[int, int, int]] = []  # (row, start, end) of maximal runs of data bytes
    for r, row in enumerate(rows):
        special = np.flatnonzero(row < OFFSET)
        mask[r, special] = True
        mask[r, special[special + 1 < len(row)] + 1] = True
        edges = np.diff(np.concatenate([[0], (row >= OFFSET).astype(np.int8), [0]]))
        runs += [(r, s, e) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
    pieces = [(rows[r, s:e] - OFFSET).astype(np.uint8).tobytes() for r, s, e in runs]
    if isinstance(tokenizer, BytesTokenizer):
        for (r, s, e), tokens in zip(runs, tokenizer.encode_batch(pieces) if runs else []):
            widths = np.array([len(tokenizer.token_bytes(t)) for t in tokens], dtype=np.int64)
            if int(widths.sum()) != e - s:
                raise ValueError(f"the tokenizer's tokens cover {int(widths.sum())} of {e - s} bytes; it must "
                                 "tokenize every byte (a byte-level BPE)")
            mask[r, s + np.cumsum(widths) - widths] = True
        return torch.from_numpy(mask).to(ids.device)
    characters = [_characters(piece) for piece in pieces]
    encodings = tokenizer.encode_batch([text for text, _, _ in characters], add_special_tokens=False) if runs else []
    for (r, s, _), (_, data_width, text_width), encoding in zip(runs, characters, encodings):
        mask[r, s + _token_starts(encoding.tokens, data_width, text_width)] = True
    return torch.from_numpy(mask).to(ids.device)


# --- one object per scheme: its start mask over a batch, and the same rule one byte at a time ------

_SPACELIKE: list[bool] = []  # spacelike(id) for every id, built on first use


def _spacelike_ids() -> list[bool]:
    if not _SPACELIKE:
        _SPACELIKE.extend(spacelike(torch.arange(VOCAB_SIZE)).tolist())
    return _SPACELIKE


@dataclass(frozen=True)
class Scheme:
    """A patching scheme: ``mask(ids, entropies, config, tokenizer)`` -> (B, T) bool starts of a batch, and
    ``starts(p, ids, entropies, rule)``: whether byte ``p >= 2`` starts a patch given the last ids and
    entropies before it (lists ending at byte ``p - 1``; the same comparisons as ``mask``, in float32, with
    the thresholds of an `IncrementalStarts` ``rule``), or None when the scheme looks ahead (bpe). Neither
    applies ``max_patch_length`` (see `IncrementalStarts`)."""

    mask: Callable[..., torch.Tensor]
    starts: Callable[[int, Sequence[int], Sequence[np.float32], IncrementalStarts], bool] | None


def _static_mask(ids, entropies, config, tokenizer):
    size = config.patch_size if config.mode == "static" else 1
    return start_mask_static(ids.shape[1], size, device=ids.device).repeat(ids.shape[0], 1)


SCHEMES: dict[str, Scheme] = {
    "entropy": Scheme(lambda ids, H, cfg, tok: start_mask_global(H, cfg.threshold),
                      lambda p, ids, H, r: bool(H[-1] > r.threshold)),
    "monotonic": Scheme(lambda ids, H, cfg, tok: start_mask_monotonic(H, cfg.threshold),
                        lambda p, ids, H, r: p >= 3 and bool(H[-1] - H[-2] > r.threshold)),
    "combined": Scheme(lambda ids, H, cfg, tok: start_mask_combined(H, cfg.threshold, cfg.relative_threshold),
                       lambda p, ids, H, r: (bool(H[-1] > r.threshold) and p >= 3
                                             and bool(H[-1] - H[-2] > r.relative_threshold))),
    "static": Scheme(_static_mask, lambda p, ids, H, r: (p - 1) % r.patch_size == 0),
    "byte": Scheme(_static_mask, lambda p, ids, H, r: True),
    "space": Scheme(lambda ids, H, cfg, tok: start_mask_space(ids),
                    lambda p, ids, H, r: r.spacelike[ids[-1]] and not r.spacelike[ids[-2]]),
    "bpe": Scheme(lambda ids, H, cfg, tok: start_mask_bpe(ids, tok), None),
}


def start_mask_for(
    ids: torch.Tensor,
    config: PatchingConfig,
    entropies: torch.Tensor | None = None,
    tokenizer: Tokenizer | BytesTokenizer | None = None,
) -> torch.Tensor:
    """Patch starts for ``config.mode``, with ``config.max_patch_length`` applied. (B, T) -> (B, T) bool.

    ``entropies`` (B, T) are needed by the modes entropy, monotonic and combined, ``tokenizer`` by bpe.
    Since every scheme but bpe is causal, ``start_mask_for(ids[:, :t + 1], ...)[:, t]`` says whether
    byte t starts a patch, e.g. during generation.

    >>> from blt.tokenizer import encode
    >>> start_mask_for(encode("abcdef")[None], PatchingConfig(mode="static", patch_size=2)).int().tolist()
    [[1, 1, 0, 1, 0, 1, 0]]
    """
    _check_ids(ids)
    batch_size, seq_len = ids.shape
    mode = config.mode
    if config.uses_entropy_model:
        if entropies is None:
            raise ValueError(f"patching mode {mode!r} needs entropies: pass entropies=entropy_model.entropies(ids)")
        if not isinstance(entropies, torch.Tensor) or entropies.shape != ids.shape:
            raise ValueError(f"entropies must have the shape of ids {tuple(ids.shape)}, got {_shape(entropies)}")
        if config.threshold is None or (mode == "combined" and config.relative_threshold is None):
            raise ConfigError(f"patching mode {mode!r} has no threshold yet (target_patch_size="
                              f"{config.target_patch_size}): calibrate one with blt.patching.calibration and "
                              "set it with config.replace(threshold=...)")
    if mode not in SCHEMES:
        raise ConfigError(f"unknown patching mode {mode!r}")
    if mode == "bpe" and tokenizer is None:
        raise ValueError("patching mode 'bpe' needs a byte-level BPE tokenizer: pass "
                         "tokenizer=tokenizers.Tokenizer(...) or a blt.baselines.BPETokenizer")
    mask = SCHEMES[mode].mask(ids, entropies, config, tokenizer)
    return mask if config.max_patch_length is None else cap_start_mask(mask, config.max_patch_length)


class IncrementalStarts:
    """`Patcher.start_mask`, one position at a time: does byte ``p`` start a patch, given bytes ``< p``?

    The scheme's own ``starts`` rule (`SCHEMES`), then `cap_start_mask` (which counts from the last
    *uncapped* start) and the document starts of `Patcher` (after BOS and EOS). BPE patching looks ahead
    and has no incremental form.
    """

    def __init__(self, config: PatchingConfig):
        if config.mode not in SCHEMES:
            raise ConfigError(f"unknown patching mode {config.mode!r}")
        if SCHEMES[config.mode].starts is None:
            raise ConfigError(f"the generation engine does not support patching mode {config.mode!r} (BPE merges "
                              "look ahead); use full_recompute=True (`blt generate --full-recompute`)")
        if config.uses_entropy_model and (config.threshold is None
                                          or (config.mode == "combined" and config.relative_threshold is None)):
            raise ConfigError(f"patching mode {config.mode!r} has no threshold yet: calibrate one first")
        self.config = config
        self.rule = SCHEMES[config.mode].starts
        # what the rules compare with, once: float32 thresholds as `start_mask_for` compares in float32
        self.threshold = np.float32(config.threshold) if config.threshold is not None else None
        self.relative_threshold = np.float32(config.relative_threshold) if config.relative_threshold is not None else None
        self.patch_size = config.patch_size
        self.spacelike = _spacelike_ids()
        self.last_uncapped_start = 0

    def starts(self, p: int, ids: Sequence[int], entropies: Sequence[np.float32]) -> bool:
        """Whether byte ``p`` starts a patch. ``ids`` / ``entropies`` end at byte ``p - 1`` (at least the last two)."""
        if p <= 1 or self.rule(p, ids, entropies, self):
            self.last_uncapped_start = p
            return True
        m = self.config.max_patch_length
        if m is not None and (p - self.last_uncapped_start) % m == 0:
            return True
        return ids[-1] in (BOS_ID, EOS_ID)

    def sync(self, ids: torch.Tensor, entropies: torch.Tensor | None) -> None:
        """Set the state after a prefix whose every position (last one included) was decided by the patcher.
        ids (1, T), entropies (1, T) or None."""
        uncapped = start_mask_for(ids, self.config.replace(max_patch_length=None), entropies=entropies)
        self.last_uncapped_start = int(uncapped[0].nonzero()[-1])


# --- start masks <-> lengths ---------------------------------------------------------------------

def lengths_from_start_mask(start_mask: torch.Tensor) -> torch.Tensor:
    """Patch lengths from patch starts. (B, T) bool -> (B, P) long, right-padded with 0, P the most
    patches in a row. ``start_mask[:, 0]`` must be True (when T > 0).

    >>> starts = torch.tensor([[1, 1, 0, 0, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]).bool()
    >>> lengths_from_start_mask(starts).tolist()
    [[1, 3, 4, 2], [1, 9, 0, 0]]
    """
    _check_start_mask(start_mask)
    batch_size, seq_len = start_mask.shape
    if seq_len == 0 or batch_size == 0:
        return torch.zeros(batch_size, 0, dtype=torch.long, device=start_mask.device)
    patch_ids = torch.cumsum(start_mask, dim=-1) - 1  # (B, T) index of each byte's patch
    return patch_lengths_from_ids(patch_ids, int(patch_ids[:, -1].max()) + 1)


def start_mask_from_lengths(patch_lengths: torch.Tensor) -> torch.Tensor:
    """Patch starts from patch lengths, the inverse of `lengths_from_start_mask`. (B, P) -> (B, T) bool,
    T the common row sum. Zero-length patches (padding) start nowhere.

    >>> start_mask_from_lengths(torch.tensor([[1, 3, 4, 2], [1, 9, 0, 0]])).int().tolist()
    [[1, 1, 0, 0, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]
    """
    seq_len = _check_patch_lengths(patch_lengths)
    patch_ids = patch_ids_from_lengths(patch_lengths, seq_len)  # (B, T)
    mask = torch.ones_like(patch_ids, dtype=torch.bool)
    mask[:, 1:] = patch_ids[:, 1:] != patch_ids[:, :-1]
    return mask


def cap_start_mask(start_mask: torch.Tensor, max_patch_length: int) -> torch.Tensor:
    """Split patches longer than ``max_patch_length``: a new patch starts every ``max_patch_length`` bytes
    after the last start, so a patch of L bytes becomes ``[m, ..., m, L - m * (ceil(L / m) - 1)]``.
    Causal: it depends only on the distance to the previous start. (B, T) bool -> (B, T) bool.

    >>> cap_start_mask(torch.tensor([[1, 1, 0, 0, 1, 0, 0, 0, 1, 0]]).bool(), 2).int().tolist()
    [[1, 1, 0, 1, 1, 0, 1, 0, 1, 0]]
    """
    _check_start_mask(start_mask)
    max_patch_length = _check_positive_int("max_patch_length", max_patch_length)
    positions = torch.arange(start_mask.shape[1], device=start_mask.device)  # (T,)
    last_start = torch.cummax(torch.where(start_mask, positions, 0), dim=-1).values  # (B, T)
    return (positions - last_start) % max_patch_length == 0


def split_long_patches(patch_lengths: torch.Tensor, max_patch_length: int) -> torch.Tensor:
    """Split every patch longer than ``max_patch_length`` into full-size pieces and a remainder.
    (B, P) -> (B, P') right-padded with 0; rows must share their sum T, as in a batch.

    >>> split_long_patches(torch.tensor([[1, 3, 4, 2], [1, 9, 0, 0]]), 3).tolist()
    [[1, 3, 3, 1, 2], [1, 3, 3, 3, 0]]
    """
    return lengths_from_start_mask(cap_start_mask(start_mask_from_lengths(patch_lengths), max_patch_length))


# --- patch lengths -------------------------------------------------------------------------------

def patch_lengths_from_entropies(
    entropies: torch.Tensor,
    threshold: float,
    monotonic: bool = False,
    max_patch_length: int | None = None,
    relative_threshold: float | None = None,
) -> torch.Tensor:
    """Entropy patching (docs/design.md §2). (B, T) float -> (B, P) long, right-padded with 0.

    ``monotonic=False``: global threshold, byte ``i + 1`` starts when ``H_i > threshold``; with
    ``relative_threshold`` as well, combined mode (both must hold). ``monotonic=True``: ``threshold`` is
    θ_r, byte ``i + 1`` starts when ``H_i - H_{i-1} > threshold`` (``i >= 2``). BOS is a patch of its own
    and byte 1 always starts. Longer patches than ``max_patch_length`` are split.

    >>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
    >>> patch_lengths_from_entropies(H, threshold=1.0, monotonic=True).tolist()
    [[1, 3, 4, 2]]
    >>> patch_lengths_from_entropies(H, threshold=2.8, relative_threshold=1.0).tolist()
    [[1, 3, 6]]
    """
    if monotonic and relative_threshold is not None:
        raise ValueError("monotonic=True takes θ_r as threshold; relative_threshold is for combined mode "
                         "(monotonic=False, threshold=θ_g, relative_threshold=θ_r)")
    if monotonic:
        mask = start_mask_monotonic(entropies, threshold)
    elif relative_threshold is not None:
        mask = start_mask_combined(entropies, threshold, relative_threshold)
    else:
        mask = start_mask_global(entropies, threshold)
    if max_patch_length is not None:
        mask = cap_start_mask(mask, max_patch_length)
    return lengths_from_start_mask(mask)


def patch_lengths_for(
    ids: torch.Tensor,
    config: PatchingConfig,
    entropies: torch.Tensor | None = None,
    tokenizer: Tokenizer | BytesTokenizer | None = None,
) -> torch.Tensor:
    """Patch lengths for ``config.mode`` (entropy, monotonic, combined, static, space, bpe, byte), with
    ``config.max_patch_length`` applied; see `start_mask_for`. (B, T) -> (B, P) long, right-padded with 0.

    >>> from blt.tokenizer import encode
    >>> patch_lengths_for(encode("abcdef")[None], PatchingConfig(mode="static", patch_size=4)).tolist()
    [[1, 4, 2]]
    >>> patch_lengths_for(encode("abc")[None], PatchingConfig(mode="byte")).tolist()
    [[1, 1, 1, 1]]
    """
    return lengths_from_start_mask(start_mask_for(ids, config, entropies=entropies, tokenizer=tokenizer))
