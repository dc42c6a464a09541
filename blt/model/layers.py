"""Llama-style building blocks shared by every transformer in BLT (docs/design.md §3).

Pre-norm RMSNorm (eps 1e-5), bias-free linears, SwiGLU, RoPE that rotates *adjacent pairs*
(x[0::2], x[1::2]; the Meta layout) and grouped key/value heads. Who sees whom is a `blt.model.attention`
mask, which also attends; a bool tensor (True = may attend) stands for a `DenseMask`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from blt.config import TransformerConfig
from blt.model.attention import CausalMask, DenseMask, Mask, as_mask, local_attention_mask
from blt.model.cache import LayerCache
from blt.tokenizer import document_ids


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` without touching the caller's RNG; no-op for None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def trunc_normal_(weight: torch.Tensor, std: float) -> None:
    """The reference init: normal(0, std) truncated at ±3 std."""
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 and returned in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)

    def init_weights(self) -> None:
        nn.init.ones_(self.weight)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE over adjacent pairs; positions are passed in, so any offset works."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def init_weights(self) -> None:
        # Buffers made on the meta device or before .to() are recomputed here.
        self.inv_freq = self._inv_freq().to(self.inv_freq.device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) or (B, T) -> cos, sin of shape (..., T, head_dim / 2), float32."""
        angles = positions.to(torch.float32)[..., None] * self.inv_freq  # (..., T, head_dim/2)
        return angles.cos(), angles.sin()


def rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """x (..., hd) with adjacent pairs (x[0::2], x[1::2]) read as complex numbers, times ``rotation``
    (complex, broadcastable to (..., hd/2)); computed in float32, returned in the dtype of x.

    One complex multiply is RoPE's (even·cos − odd·sin, even·sin + odd·cos) in a single kernel.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., hd) -> (..., hd/2) complex
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def rotate_pairs_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`rotate_pairs` with the rotation given as its cos and sin (broadcastable to (..., hd/2)), in real
    arithmetic: what a compiled model runs, since inductor generates no code for complex numbers. On CPU
    the two give the same bits, forward and backward (tests/model/test_attention.py)."""
    even, odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (..., hd/2) each
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    """Causal multi-head self-attention with grouped KV heads and RoPE; the mask decides who sees whom."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.dim = cfg.dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor, cache: LayerCache | None = None
    ) -> torch.Tensor:
        """x (B, T, D); rope for the T new positions; mask bool (B, 1, T, T_past + T) or a `Mask` such as
        `CausalMask`. A ``cache`` keeps the keys and values for later positions; once it holds past
        positions the mask must be dense over past + new."""
        q, k, v = (w(x).unflatten(-1, (-1, self.head_dim)) for w in (self.wq, self.wk, self.wv))  # (B, T, h, hd)
        cos, sin = (t.unsqueeze(-2) for t in rope)  # (..., T, hd/2) -> (..., T, 1, hd/2), over heads
        if torch.compiler.is_compiling():
            q, k = rotate_pairs_real(q, cos, sin), rotate_pairs_real(k, cos, sin)
        else:
            rotation = torch.complex(cos, sin)
            q, k = rotate_pairs(q, rotation), rotate_pairs(k, rotation)
        mask = as_mask(mask)
        if cache is not None:
            if len(cache) and not isinstance(mask, DenseMask):
                raise ValueError("a KV cache with past positions needs a dense mask over past + new positions")
            k, v = (t.transpose(1, 2) for t in cache.extend(k.transpose(1, 2), v.transpose(1, 2)))  # past + new
        out = mask.attend(q, k, v)  # (B, T, H, hd)
        return self.wo(out.flatten(2))  # (B, T, H, hd) -> (B, T, H hd) -> (B, T, D)

    def init_weights(self, std: float) -> None:
        for w in (self.wq, self.wk, self.wv, self.wo):
            trunc_normal_(w.weight, std)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def init_weights(self, std: float, out_std: float) -> None:
        trunc_normal_(self.w1.weight, std)
        trunc_normal_(self.w3.weight, std)
        trunc_normal_(self.w2.weight, out_std)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + ffn(norm(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.hidden_dim)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor, cache: LayerCache | None = None
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))

    def init_weights(self, std_factor: float = 1.0) -> None:
        dim = self.attention.dim
        hidden = self.feed_forward.w2.in_features
        self.attention_norm.init_weights()
        self.ffn_norm.init_weights()
        self.attention.init_weights(std_factor * dim**-0.5)
        self.feed_forward.init_weights(std_factor * dim**-0.5, std_factor * hidden**-0.5)


class CrossAttention(nn.Module):
    """Multi-head cross-attention without positions; RMSNorm on queries and on keys/values.

    Returns ``q + attn(q)``: the reference's residual, which callers add to ``q`` once more
    (``q <- 2q + attn``). Kept exactly for checkpoint compatibility (docs/design.md §3).
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, norm_eps: float):
        super().__init__()
        self.head_dim = dim // n_heads
        self.dim = dim
        self.query_norm = RMSNorm(dim, norm_eps)
        self.kv_norm = RMSNorm(dim, norm_eps)
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(self, queries: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | Mask | None) -> torch.Tensor:
        """queries (B, Tq, D), states (B, Tk, D) -> (B, Tq, D).

        ``mask`` says who sees whom: a bool (B, 1, Tq, Tk) tensor, or a `Mask` that attends without
        materialising the Tq × Tk scores (the patch patterns of BLT, where each query sees a few keys).
        """
        q = self.wq(self.query_norm(queries)).unflatten(-1, (-1, self.head_dim))  # (B, Tq, D) -> (B, Tq, H, hd)
        kv = self.kv_norm(states)
        k, v = (w(kv).unflatten(-1, (-1, self.head_dim)) for w in (self.wk, self.wv))  # (B, Tk, H_kv, hd)
        out = as_mask(mask).attend(q, k, v)  # (B, Tq, H, hd)
        return queries + self.wo(out.flatten(2))

    def init_weights(self, std_factor: float = 1.0) -> None:
        self.query_norm.init_weights()
        self.kv_norm.init_weights()
        for w in (self.wq, self.wk, self.wv, self.wo):
            trunc_normal_(w.weight, std_factor * self.dim**-0.5)


class TransformerStack(nn.Module):
    """n pre-norm blocks sharing one rotary table; no final norm (callers add one where needed)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))

    def init_weights(self, std_factor: float = 1.0) -> None:
        self.rope.init_weights()
        for layer in self.layers:
            layer.init_weights(std_factor)


def linear_init(linear: nn.Linear, std_factor: float = 1.0) -> None:
    """Generic projections: truncated normal with std fan_in^-0.5."""
    trunc_normal_(linear.weight, std_factor * linear.in_features**-0.5)


def embedding_init(embedding: nn.Embedding, dim: int, std_factor: float = 1.0) -> None:
    """Embeddings: truncated normal with std dim^-0.5 (the reference's)."""
    trunc_normal_(embedding.weight, std_factor * dim**-0.5)


class CausalLM(nn.Module):
    """Embedding -> pre-norm blocks -> RMSNorm -> LM head: a causal LM over ids, attending within documents
    (split at EOS) and the config's window. The entropy model and the token baselines are this model.

    ``forward(ids[B, T]) -> logits[B, T, V]``; ``cfg`` is a `TransformerConfig` with a ``vocab_size``.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.transformer = TransformerStack(cfg)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, T), got shape {tuple(ids.shape)}")
        x = self.embedding(ids)  # (B, T) -> (B, T, D)
        rope = self.transformer.rope(torch.arange(ids.shape[1], device=ids.device))
        mask = CausalMask(document_ids(ids), self.cfg.window)
        for layer in self.transformer.layers:
            x = layer(x, rope, mask)
        return self.output(self.norm(x))

    def forward_chunk(
        self,
        ids: torch.Tensor,
        start: int,
        doc_ids: torch.Tensor,
        caches: list[LayerCache] | None,
        key_doc_ids: torch.Tensor | None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for ids (B, L) at positions start..start+L-1, given cached keys of earlier positions.

        ``key_doc_ids`` (B, S) are the document ids of the cached positions followed by this chunk's.
        ``mask`` (B or 1, 1, L, S), when given, is used instead of building `local_attention_mask` from them.
        """
        x = self.embedding(ids)
        rope = self.transformer.rope(torch.arange(start, start + ids.shape[1], device=ids.device))
        if mask is None:
            mask = local_attention_mask(doc_ids, self.cfg.window, key_doc_ids)
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, rope, mask, caches[i] if caches is not None else None)
        return self.output(self.norm(x))

    @torch.no_grad()
    def init_weights(self, seed: int | None = None):
        """The reference init: truncated normal, std d^-0.5. Returns self."""
        with seeded(seed):
            embedding_init(self.embedding, self.cfg.dim)
            self.transformer.init_weights()
            self.norm.init_weights()
            linear_init(self.output)
        return self

