"""The Byte Latent Transformer (docs/design.md §3): embed → local encoder → latent global transformer → local decoder.

Shapes: B batch, T bytes, P patches (right-padded), k = cross_attn_k, D_e / D_g / D_d widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blt.config import BLTConfig, LocalDecoderConfig, LocalEncoderConfig
from blt.model.attention import CausalMask, GroupMask, Mask, SegmentMask
from blt.model.hashing import HashNgramEmbedding
from blt.model.cache import LayerCache
from blt.model.layers import CrossAttention, RMSNorm, TransformerStack, embedding_init, linear_init, seeded
from blt.model.layout import (
    check_patch_lengths,
    decoder_patch_ids,
    patch_ids_from_lengths,
    patch_starts,
)
from blt.tokenizer import BOS_ID, document_ids


@dataclass
class PatchLayout:
    """Everything the three stages need to know about how bytes group into patches, computed once."""

    patch_ids: torch.Tensor  # (B, T) patch of each byte
    decoder_patch_ids: torch.Tensor  # (B, T) patch whose global state each byte reads
    byte_doc_ids: torch.Tensor  # (B, T) document of each byte
    patch_doc_ids: torch.Tensor  # (B, P) document of each patch (that of its first byte)
    num_patches: int  # P, including right padding

    @classmethod
    def build(cls, ids: torch.Tensor, patch_lengths: torch.Tensor) -> PatchLayout:
        T = ids.shape[1]
        byte_doc_ids = document_ids(ids)
        first_byte = patch_starts(patch_lengths).clamp(max=T - 1)  # (B, P); padding patches point at the end
        return cls(
            patch_ids=patch_ids_from_lengths(patch_lengths, T),
            decoder_patch_ids=decoder_patch_ids(patch_lengths, T),
            byte_doc_ids=byte_doc_ids,
            patch_doc_ids=byte_doc_ids.gather(1, first_byte),
            num_patches=patch_lengths.shape[1],
        )

    def encoder_cross_mask(self, k: int) -> SegmentMask:
        """Patch query slot (p, s) sees byte t iff t is in patch p (dense: bool (B, 1, P*k, T)).

        Padding patches own no byte; they see BOS instead so that softmax stays finite (their outputs
        are never read: the global model is causal and the decoder reads only real patches).
        """
        return SegmentMask(self.patch_ids, self.num_patches, group=k)

    def decoder_cross_mask(self, k: int) -> GroupMask:
        """Byte t sees the k slots of patch decoder_patch_ids[t] (dense: bool (B, 1, T, P*k))."""
        return GroupMask(self.decoder_patch_ids, self.num_patches, group=k)

    def local_mask(self, window: int | None) -> CausalMask:
        """Byte i sees byte j iff j <= i, same document, i - j < window (dense: bool (B, 1, T, T))."""
        return CausalMask(self.byte_doc_ids, window)

    def global_mask(self) -> CausalMask:
        """Causal over patches, within a document (dense: bool (B, 1, P, P))."""
        return CausalMask(self.patch_doc_ids, None)


def patch_max_pool(states: torch.Tensor, patch_ids: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Max over the bytes of each patch. states (B, T, D), patch_ids (B, T) -> (B, P, D); empty patches are 0."""
    B, T, D = states.shape
    pooled = states.new_zeros(B, num_patches, D)
    index = patch_ids[:, :, None].expand(B, T, D)
    return pooled.scatter_reduce(1, index, states, reduce="amax", include_self=False)


class LocalEncoder(nn.Module):
    """Bytes (+ hashed n-grams) -> byte states, and patch states by cross-attention of pooled queries."""

    def __init__(self, cfg: LocalEncoderConfig, cross_attn_k: int):
        super().__init__()
        self.cfg = cfg
        self.k = cross_attn_k
        self.transformer = TransformerStack(cfg)
        self.patch_query_projection = nn.Linear(cfg.dim, cfg.dim * cross_attn_k, bias=False)
        n_cross = cfg.n_layers if cfg.cross_attn_all_layers else 1
        self.cross_attn_layers = nn.ModuleList(
            CrossAttention(cfg.dim, cfg.n_heads, cfg.kv_heads, cfg.norm_eps) for _ in range(n_cross)
        )

    def forward(self, x: torch.Tensor, layout: PatchLayout, caches: list[LayerCache] | None = None,
                levels: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D_e) embedded bytes -> byte states (B, T, D_e), patch states (B, P, k*D_e).

        Generation's prefill passes empty ``caches`` (one per layer) to keep the keys and values, and a
        ``levels`` list that receives the input and every layer's byte states."""
        T = x.shape[1]
        rope = self.transformer.rope(torch.arange(T, device=x.device))
        self_mask = layout.local_mask(self.cfg.window)
        levels = [] if levels is None else levels
        levels.append(x)
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, rope, self_mask, caches[i] if caches is not None else None)
            levels.append(x)
        return x, self.patch_states(levels, layout.patch_ids, layout.num_patches, layout.encoder_cross_mask(self.k))

    def patch_states(self, levels: list[torch.Tensor], patch_ids: torch.Tensor, num_patches: int,
                     cross_mask: Mask | torch.Tensor | None) -> torch.Tensor:
        """Patch states from the byte states of every level (the input, then each layer's output; (B, T, D_e)
        each): the max-pooled bytes of each patch as k queries, which cross-attend to their patch's bytes
        after the last layer (or after every layer). patch_ids (B, T) -> (B, P, k*D_e)."""
        B, _, D = levels[0].shape
        n_layers = len(levels) - 1
        queries = None
        for i in range(n_layers):
            if self.cfg.cross_attn_all_layers or i == n_layers - 1:
                x = levels[i + 1]
                if queries is None:  # queries start as the max-pooled bytes of each patch, as in the reference
                    pooled = patch_max_pool(x, patch_ids, num_patches)  # (B, P, D)
                    queries = self.patch_query_projection(pooled).view(B, -1, D)  # (B, P, k*D) -> (B, P*k, D)
                cross = self.cross_attn_layers[i if self.cfg.cross_attn_all_layers else 0]
                queries = queries + cross(queries, x, cross_mask)
        if queries is None:  # zero encoder layers: pool the embeddings directly
            queries = self.patch_query_projection(patch_max_pool(levels[0], patch_ids, num_patches)).view(B, -1, D)
        return queries.view(B, num_patches, self.k * D)  # (B, P*k, D) -> (B, P, k*D)

    def init_weights(self, std_factor: float) -> None:
        self.transformer.init_weights(std_factor)
        linear_init(self.patch_query_projection, std_factor)
        for layer in self.cross_attn_layers:
            layer.init_weights(std_factor)


class GlobalTransformer(nn.Module):
    """The latent transformer over patch states: causal over patches, within documents, no final norm."""

    def __init__(self, cfg, input_dim: int):
        super().__init__()
        self.cfg = cfg
        self.transformer = TransformerStack(cfg)
        self.input_projection = nn.Linear(input_dim, cfg.dim, bias=False) if input_dim != cfg.dim else None

    def forward(self, patches: torch.Tensor, layout: PatchLayout, caches: list[LayerCache] | None = None) -> torch.Tensor:
        """patches (B, P, k*D_e) -> (B, P, D_g); empty ``caches`` (one per layer) keep the keys and values."""
        h = self.input_projection(patches) if self.input_projection is not None else patches
        rope = self.transformer.rope(torch.arange(h.shape[1], device=h.device))
        mask = layout.global_mask()
        for i, layer in enumerate(self.transformer.layers):
            h = layer(h, rope, mask, caches[i] if caches is not None else None)
        return h

    def init_weights(self, std_factor: float) -> None:
        self.transformer.init_weights(std_factor)
        if self.input_projection is not None:
            linear_init(self.input_projection, std_factor)


class LocalDecoder(nn.Module):
    """Byte states read the global state of their last complete patch by cross-attention, then predict bytes."""

    def __init__(self, cfg: LocalDecoderConfig, global_dim: int, cross_attn_k: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.k = cross_attn_k
        self.transformer = TransformerStack(cfg)
        self.patch_projection = nn.Linear(global_dim, cfg.dim * cross_attn_k, bias=False)
        n_cross = cfg.n_layers if cfg.cross_attn_all_layers else 1
        self.cross_attn_layers = nn.ModuleList(
            CrossAttention(cfg.dim, cfg.n_heads, cfg.kv_heads, cfg.norm_eps) for _ in range(n_cross)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, vocab_size, bias=False)

    def forward(self, byte_states: torch.Tensor, global_states: torch.Tensor, layout: PatchLayout,
                caches: list[LayerCache] | None = None) -> torch.Tensor:
        """byte_states (B, T, D_d), global_states (B, P, D_g) -> logits (B, T, V); empty ``caches`` (one per
        layer) keep the keys and values."""
        B, T, D = byte_states.shape
        patch_states = self.patch_projection(global_states).view(B, -1, D)  # (B, P, k*D) -> (B, P*k, D)
        rope = self.transformer.rope(torch.arange(T, device=byte_states.device))
        self_mask = layout.local_mask(self.cfg.window)
        cross_mask = layout.decoder_cross_mask(self.k)
        h = byte_states
        for i, layer in enumerate(self.transformer.layers):
            if self.cfg.cross_attn_all_layers or i == 0:
                h = h + self.cross_attn_layers[i](h, patch_states, cross_mask)
            h = layer(h, rope, self_mask, caches[i] if caches is not None else None)
        return self.output(self.norm(h))

    def init_weights(self, std_factor: float) -> None:
        self.transformer.init_weights(std_factor)
        linear_init(self.patch_projection, std_factor)
        for layer in self.cross_attn_layers:
            layer.init_weights(std_factor)
        self.norm.init_weights()
        linear_init(self.output, std_factor)


class ByteLatentTransformer(nn.Module):
    """BLT: ``forward(ids[B, T], patch_lengths[B, P]) -> logits[B, T, 260]``.

    Logits at byte t predict byte t+1 and depend only on bytes <= t (given patch boundaries that are
    causal, as every patcher in `blt.patching` produces). Call `init_weights()` after construction
    (construction alone leaves PyTorch's default init), or load a checkpoint.
    """

    def __init__(self, cfg: BLTConfig):
        super().__init__()
        self.cfg = cfg
        D_e = cfg.encoder.dim
        self.byte_embedding = nn.Embedding(cfg.vocab_size, D_e)
        self.hash_embedding = HashNgramEmbedding(cfg.hash, D_e) if cfg.hash.num_tables else None
        self.encoder = LocalEncoder(cfg.encoder, cfg.cross_attn_k)
        self.global_model = GlobalTransformer(cfg.global_model, input_dim=cfg.cross_attn_k * D_e)
        self.decoder = LocalDecoder(cfg.decoder, cfg.global_model.dim, cfg.cross_attn_k, cfg.vocab_size)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, D_e): byte embedding plus hashed n-gram embeddings (n-grams stop at document starts)."""
        x = self.byte_embedding(ids)
        if self.hash_embedding is not None:
            x = x + self.hash_embedding(ids, document_ids(ids))
        return x

    def forward(self, ids: torch.Tensor, patch_lengths: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        if validate:
            check_patch_lengths(ids, patch_lengths)
        layout = PatchLayout.build(ids, patch_lengths)
        byte_states, patches = self.encoder(self.embed(ids), layout)  # (B, T, D_e), (B, P, k*D_e)
        global_states = self.global_model(patches, layout)  # (B, P, D_g)
        return self.decoder(byte_states, global_states, layout)  # (B, T, V)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> ByteLatentTransformer:
        """The reference init: truncated normal, std d^-0.5 (fan-in for projections, hidden^-0.5 for FFN outputs)."""
        with seeded(seed):
            f = self.cfg.init_std_factor
            D_e = self.cfg.encoder.dim
            embedding_init(self.byte_embedding, D_e, f)
            if self.hash_embedding is not None:
                embedding_init(self.hash_embedding.table, D_e, f)
            self.encoder.init_weights(f)
            self.global_model.init_weights(f)
            self.decoder.init_weights(f)
        return self

    def parameter_counts(self) -> dict[str, int]:
        return parameter_counts(self)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters split the way the paper reports them: hash and byte embeddings apart from the rest.

    Keys: ``total``, ``hash_embedding``, ``byte_embedding`` (input embeddings of bytes, incl. an entropy
    model's), ``non_embedding`` (total minus both), and per stage where present.
    """
    counts = {"total": 0, "hash_embedding": 0, "byte_embedding": 0}
    for name, p in model.named_parameters():
        n = p.numel()
        counts["total"] += n
        if name.startswith("hash_embedding."):
            counts["hash_embedding"] += n
        elif name in ("byte_embedding.weight", "embedding.weight"):
            counts["byte_embedding"] += n
        stage = name.split(".", 1)[0]
        if stage in ("encoder", "global_model", "decoder"):
            counts[stage] = counts.get(stage, 0) + n
    counts["non_embedding"] = counts["total"] - counts["hash_embedding"] - counts["byte_embedding"]
    return counts


def byte_loss_mask(targets: torch.Tensor) -> torch.Tensor:
    """Which next-byte targets count: bytes and EOS (not BOS, which follows EOS trivially, nor BOE/pad)."""
    return (targets != BOS_ID) & (targets > 0)


def next_byte_loss(logits: torch.Tensor, ids: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-byte cross-entropy in nats per counted target (see `byte_loss_mask`).

    logits (B, T, V) predicts ids shifted by one; returns a scalar (``mean``/``sum``) or (B, T-1) (``none``,
    zero where not counted). Bits per byte = mean / ln 2.
    """
    targets = ids[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")  # (B, T-1)
    mask = byte_loss_mask(targets)
    losses = losses * mask
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / mask.sum().clamp(min=1)
