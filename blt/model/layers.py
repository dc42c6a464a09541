"""Llama-style building blocks shared by every transformer in BLT (DESIGN §3).

Pre-norm RMSNorm (eps 1e-5), bias-free linears, SwiGLU, RoPE that rotates *adjacent pairs*
(x[0::2], x[1::2]; the Meta layout), grouped key/value heads, and attention through
`torch.nn.functional.scaled_dot_product_attention` with boolean masks (True = may attend).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blt.config import TransformerConfig


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


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (B, H, T, hd) by the angles in cos/sin ((T, hd/2) or (B, T, hd/2))."""
    if cos.dim() == 3:  # per-row positions: (B, T, hd/2) -> (B, 1, T, hd/2)
        cos, sin = cos[:, None], sin[:, None]
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, H, T, hd) -> (B, H, T, hd/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with grouped KV heads. q (B, H, Tq, hd), k/v (B, Hkv, Tk, hd), mask bool (B, 1, Tq, Tk)."""
    if k.shape[1] != q.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class LayerCache:
    """Rotated keys and values of one attention layer for past positions (owned by whoever runs steps)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # (B, H_kv, T_past, hd)
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values; returns past + new."""
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v

    def keep_last(self, n: int) -> None:
        """Forget all but the last n positions (sliding windows need only window - 1)."""
        if self.k is not None:
            start = max(0, self.k.shape[2] - n)
            self.k, self.v = self.k[:, :, start:], self.v[:, :, start:]

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


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
        """x (B, T, D); rope for the T new positions; mask (B, 1, T, T_past + T) when a cache is given."""
        q = rearrange(self.wq(x), "b t (h d) -> b h t d", d=self.head_dim)
        k = rearrange(self.wk(x), "b t (h d) -> b h t d", d=self.head_dim)
        v = rearrange(self.wv(x), "b t (h d) -> b h t d", d=self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = attend(q, k, v, mask)
        return self.wo(rearrange(out, "b h t d -> b t (h d)"))

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
    (``q <- 2q + attn``). Kept exactly for checkpoint compatibility (DESIGN §3).
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

    def forward(self, queries: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """queries (B, Tq, D), states (B, Tk, D), mask bool (B, 1, Tq, Tk) -> (B, Tq, D)."""
        q = rearrange(self.wq(self.query_norm(queries)), "b t (h d) -> b h t d", d=self.head_dim)
        kv = self.kv_norm(states)
        k = rearrange(self.wk(kv), "b t (h d) -> b h t d", d=self.head_dim)
        v = rearrange(self.wv(kv), "b t (h d) -> b h t d", d=self.head_dim)
        out = attend(q, k, v, mask)
        return queries + self.wo(rearrange(out, "b h t d -> b t (h d)"))

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


def local_attention_mask(doc_ids: torch.Tensor, window: int | None, key_doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Causal, same-document, sliding-window mask: query i sees key j iff j <= i, same doc, i - j < window.

    doc_ids (B, T) of the queries -> bool (B, 1, T, T). With ``key_doc_ids`` (B, S) for keys that are
    the S - T positions before the queries followed by the queries themselves -> (B, 1, T, S).
    """
    key_doc_ids = doc_ids if key_doc_ids is None else key_doc_ids
    T, S = doc_ids.shape[-1], key_doc_ids.shape[-1]
    q_pos = torch.arange(S - T, S, device=doc_ids.device)
    k_pos = torch.arange(S, device=doc_ids.device)
    allowed = k_pos[None, :] <= q_pos[:, None]  # (T, S) causal
    if window is not None:
        allowed = allowed & (q_pos[:, None] - k_pos[None, :] < window)
    same_doc = doc_ids[:, :, None] == key_doc_ids[:, None, :]  # (B, T, S)
    return (allowed & same_doc)[:, None]
