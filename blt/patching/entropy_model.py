"""The entropy model (DESIGN §2): a small causal byte LM whose next-byte entropies place patch boundaries.

Entropy of position i is that of its next-byte distribution, ``H_i = -Σ_v p_i(v) log p_i(v)`` in nats.
`entropies()` works on any length with bounded memory: it runs the sequence in chunks and carries each
layer's last ``window - 1`` keys/values, which makes the chunked result equal to a full pass (a sliding
window never looks further back). Rows are independent: a row's entropies never depend on other rows
(the reference flattens a batch into one stream before chunking, so context bleeds between sequences).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blt.config import EntropyModelConfig
from blt.model.layers import (
    LayerCache,
    RMSNorm,
    TransformerStack,
    embedding_init,
    linear_init,
    local_attention_mask,
    seeded,
)
from blt.tokenizer import document_ids


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the softmax of the last dimension, computed in float32. (..., V) -> (...)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


class EntropyModel(nn.Module):
    """Causal byte LM with sliding-window, document-aware attention: ``forward(ids[B, T]) -> logits[B, T, 260]``."""

    def __init__(self, cfg: EntropyModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.transformer = TransformerStack(cfg)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> logits (B, T, V); one full pass (use `entropies` for inputs longer than you want to hold)."""
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, T), got shape {tuple(ids.shape)}")
        return self.forward_chunk(ids, 0, document_ids(ids), caches=None, key_doc_ids=None)

    def forward_chunk(
        self,
        ids: torch.Tensor,
        start: int,
        doc_ids: torch.Tensor,
        caches: list[LayerCache] | None,
        key_doc_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Logits for ids (B, L) at positions start..start+L-1, given cached keys of earlier positions.

        ``key_doc_ids`` (B, S) are the document ids of the cached positions followed by this chunk's.
        """
        x = self.embedding(ids)
        rope = self.transformer.rope(torch.arange(start, start + ids.shape[1], device=ids.device))
        mask = local_attention_mask(doc_ids, self.cfg.window, key_doc_ids)
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, rope, mask, caches[i] if caches is not None else None)
        return self.output(self.norm(x))

    @torch.no_grad()
    def entropies(self, ids: torch.Tensor, chunk_len: int | None = None, batch_size: int = 64) -> torch.Tensor:
        """Next-byte entropies in nats. ids (B, T) or (T,) -> float32 (B, T) or (T,).

        Processes ``batch_size`` rows at a time in chunks of ``chunk_len`` bytes (default from the
        config); memory is bounded by chunk_len * (chunk_len + window) per row.
        """
        squeeze = ids.dim() == 1
        ids = ids[None] if squeeze else ids
        if ids.dim() != 2:
            raise ValueError(f"ids must be (T,) or (B, T), got shape {tuple(ids.shape)}")
        chunk_len = chunk_len or self.cfg.chunk_len
        out = torch.empty(ids.shape, dtype=torch.float32, device=ids.device)
        for r in range(0, ids.shape[0], batch_size):
            rows = ids[r : r + batch_size]
            out[r : r + batch_size] = self._entropies_of_rows(rows, chunk_len)
        return out[0] if squeeze else out

    def _entropies_of_rows(self, ids: torch.Tensor, chunk_len: int) -> torch.Tensor:
        B, T = ids.shape
        doc_ids = document_ids(ids)
        window = self.cfg.window
        if window is None and T > chunk_len:
            chunk_len = T  # full causal attention: only a single pass is exact
        caches = [LayerCache() for _ in self.transformer.layers]
        out = torch.empty(B, T, dtype=torch.float32, device=ids.device)
        for start in range(0, T, chunk_len):
            end = min(T, start + chunk_len)
            past = len(caches[0])
            logits = self.forward_chunk(ids[:, start:end], start, doc_ids[:, start:end], caches, doc_ids[:, start - past : end])
            out[:, start:end] = entropy_from_logits(logits)
            keep = min(window - 1, end) if window is not None else end
            for cache in caches:
                cache.keep_last(keep)
        return out

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> "EntropyModel":
        with seeded(seed):
            embedding_init(self.embedding, self.cfg.dim)
            self.transformer.init_weights()
            self.norm.init_weights()
            linear_init(self.output)
        return self
