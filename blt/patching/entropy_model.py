"""The entropy model (docs/design.md §2): a small causal byte LM whose next-byte entropies place patch boundaries.

Entropy of position i is that of its next-byte distribution, ``H_i = -Σ_v p_i(v) log p_i(v)`` in nats.
`entropies()` works on any length with bounded memory: it runs the sequence in chunks and carries each
layer's last ``window - 1`` keys/values, which makes the chunked result equal to a full pass (a sliding
window never looks further back). Rows are independent: a row's entropies never depend on other rows
(the reference flattens a batch into one stream before chunking, so context bleeds between sequences).

Speed (CPU, `blt bench patching`): the work is mostly the matmuls of the layers, so rows are batched, the
chunk length follows the number of rows (`EntropyModel.default_chunk_len`), the attention mask of a chunk
inside one document is built once per chunk shape, and ``dtype=torch.bfloat16`` runs under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blt.config import EntropyModelConfig
from blt.model.attention import local_attention_mask
from blt.model.cache import LayerCache
from blt.model.layers import CausalLM
from blt.tokenizer import document_ids

# `EntropyModelConfig.precision` -> compute dtype; `blt.train.PRECISIONS` is the same map, but blt.train imports
# this module (through the objectives), so it cannot be imported here.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_BATCH_SIZE = 64  # rows per call of `EntropyModel.entropies`
QUERIES_PER_CALL = 512  # rows x chunk length that `EntropyModel.default_chunk_len` aims at, in float32 ...
LOW_PRECISION_QUERIES_PER_CALL = 2048  # ... and in bf16 / fp16, whose faster matmuls want more rows per call
MIN_CHUNK_LEN = 64  # shorter chunks cost more in per-call overhead than they save in attention


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the softmax of the last dimension, computed in float32. (..., V) -> (...)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool attention mask (True = may attend) as the additive one SDPA takes in ``dtype``: 0 where allowed,
    -inf elsewhere. The same attention (SDPA turns a bool mask into this itself), but the CPU kernel runs
    faster given it: `blt bench patching` in benchmarks/README.md."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


class EntropyModel(CausalLM):
    """Causal byte LM with sliding-window, document-aware attention: ``forward(ids[B, T]) -> logits[B, T, 260]``."""

    cfg: EntropyModelConfig

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> logits (B, T, V); one full pass (use `entropies` for inputs longer than you want to hold)."""
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, T), got shape {tuple(ids.shape)}")
        return self.forward_chunk(ids, 0, document_ids(ids), caches=None, key_doc_ids=None)

    def default_chunk_len(self, rows: int, dtype: torch.dtype = torch.float32) -> int:
        """The chunk length `entropies` uses for ``rows`` rows at a time computing in ``dtype``: about
        `QUERIES_PER_CALL` positions per call (`LOW_PRECISION_QUERIES_PER_CALL` in bf16 or fp16) but at least
        `MIN_CHUNK_LEN`, at most twice the window and at most ``cfg.chunk_len``.

        A chunk of L queries attends to L + window - 1 keys through a dense mask, so chunks much longer than
        the window mostly compute scores that are masked out, while short ones make small matmuls
        (measured on CPU with the `tiny` preset: `blt bench patching`, and on the documents of the default
        corpus, whose long ones come a few rows per call: benchmarks/README.md). The float32 figure is kept
        as it is so that float32 entropies stay those of earlier runs to the last bit.
        """
        if self.cfg.window is None:
            return self.cfg.chunk_len
        per_call = QUERIES_PER_CALL if dtype == torch.float32 else LOW_PRECISION_QUERIES_PER_CALL
        wanted = max(MIN_CHUNK_LEN, per_call // max(rows, 1))
        return min(wanted, 2 * self.cfg.window, self.cfg.chunk_len)

    @torch.no_grad()
    def entropies(
        self,
        ids: torch.Tensor,
        chunk_len: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Next-byte entropies in nats. ids (B, T) or (T,) -> float32 (B, T) or (T,).

        Processes ``batch_size`` rows at a time in chunks of ``chunk_len`` bytes (default:
        `default_chunk_len`); memory is bounded by chunk_len * (chunk_len + window) per row. Any chunk
        length gives the same entropies as one full pass.

        ``dtype`` is the compute precision (default: the config's ``precision``): float32 (exact), or
        bfloat16 / float16 under autocast (faster where the hardware has fast bf16). Low-precision
        entropies differ from float32 ones by a few hundredths of a nat, so a byte whose entropy is that
        close to the threshold lands on the other side of it: patch boundaries may move slightly
        (measurements in benchmarks/README.md).
        """
        return self._per_position(ids, chunk_len, batch_size, dtype, surprisals=False)[0]

    @torch.no_grad()
    def entropies_and_surprisals(
        self,
        ids: torch.Tensor,
        chunk_len: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`entropies`, and from the same pass the surprisal of each next id, ``-log p_i(ids[i + 1])`` in
        nats (the model's loss on it; NaN at the last position, which has no next id). Both float32, shaped
        like ``ids``."""
        return self._per_position(ids, chunk_len, batch_size, dtype, surprisals=True)

    def _per_position(self, ids: torch.Tensor, chunk_len: int | None, batch_size: int, dtype: torch.dtype | None, *,
                      surprisals: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = DTYPES[self.cfg.precision] if dtype is None else dtype
        squeeze = ids.dim() == 1
        ids = ids[None] if squeeze else ids
        if ids.dim() != 2:
            raise ValueError(f"ids must be (T,) or (B, T), got shape {tuple(ids.shape)}")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
        if batch_size < 1 or (chunk_len is not None and chunk_len < 1):
            raise ValueError(f"batch_size and chunk_len must be >= 1, got {batch_size} and {chunk_len}")
        out = torch.empty(ids.shape, dtype=torch.float32, device=ids.device)
        nll = torch.full(ids.shape, float("nan"), dtype=torch.float32, device=ids.device) if surprisals else None
        with torch.autocast(ids.device.type, dtype=dtype, enabled=dtype != torch.float32):
            for r in range(0, ids.shape[0], batch_size):
                rows = ids[r : r + batch_size]
                length = chunk_len or self.default_chunk_len(len(rows), dtype)
                self._entropies_of_rows(rows, length, out[r : r + batch_size],
                                        nll[r : r + batch_size] if nll is not None else None)
        if squeeze:
            return out[0], nll[0] if nll is not None else None
        return out, nll

    def _entropies_of_rows(self, ids: torch.Tensor, chunk_len: int, out: torch.Tensor,
                           nll: torch.Tensor | None) -> None:
        """Fill ``out`` (B, T) with the entropies of ``ids`` (B, T), and ``nll`` (when given) with the
        surprisal of each next id (its last column left as it is)."""
        B, T = ids.shape
        doc_ids = document_ids(ids)
        window = self.cfg.window
        if window is None:
            chunk_len = T  # full causal attention: only a single pass is exact
        caches = [LayerCache() for _ in self.transformer.layers]
        compute_dtype = torch.get_autocast_dtype(ids.device.type) if torch.is_autocast_enabled(ids.device.type) \
            else self.embedding.weight.dtype
        # A chunk whose keys all lie in one document (in every row) needs only the causal sliding-window
        # mask, the same for every row and for every chunk of its shape: built once, broadcast over rows.
        one_document_masks: dict[tuple[int, int], torch.Tensor] = {}
        for start in range(0, T, chunk_len):
            end = min(T, start + chunk_len)
            past = start if window is None else min(start, window - 1)  # what the caches hold
            key_doc_ids = doc_ids[:, start - past : end]  # (B, S)
            mask = None
            if bool((key_doc_ids == key_doc_ids[:, :1]).all()):
                shape = (end - start, past + end - start)
                if shape not in one_document_masks:
                    allowed = local_attention_mask(key_doc_ids[:1, past:], window, key_doc_ids[:1])
                    one_document_masks[shape] = additive_mask(allowed, compute_dtype)
                mask = one_document_masks[shape]
            logits = self.forward_chunk(ids[:, start:end], start, doc_ids[:, start:end], caches, key_doc_ids, mask)
            out[:, start:end] = entropy_from_logits(logits)
            if nll is not None:
                stop = min(end, T - 1)  # position T - 1 has no next id
                logp = F.log_softmax(logits[:, : stop - start].float(), dim=-1)
                nll[:, start:stop] = -logp.gather(-1, ids[:, start + 1 : stop + 1, None])[..., 0]
            if window is not None:
                for cache in caches:
                    cache.keep_last(min(window - 1, end))
