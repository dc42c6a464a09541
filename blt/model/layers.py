"""Llama-style building blocks shared by every transformer in BLT (docs/design.md §3).

Pre-norm RMSNorm (eps 1e-5), bias-free linears, SwiGLU, RoPE that rotates *adjacent pairs*
(x[0::2], x[1::2]; the Meta layout), grouped key/value heads, and attention through
`torch.nn.functional.scaled_dot_product_attention` with boolean masks (True = may attend), or through a
`SparseMask` that knows its pattern and skips what a dense mask would only mask out: `CausalMask`
(causal, per document, sliding window: block by block), `SegmentMask` and `GroupMask` (BLT's patch
cross-attentions, where a query sees a handful of keys).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from blt.config import TransformerConfig
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


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (B, H, T, hd) by the angles in cos/sin ((T, hd/2) or (B, T, hd/2))."""
    if cos.dim() == 3:  # per-row positions: (B, T, hd/2) -> (B, 1, T, hd/2)
        cos, sin = cos[:, None], sin[:, None]
    return rotate_pairs(x, torch.complex(cos, sin))


def rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """x (..., hd) with adjacent pairs (x[0::2], x[1::2]) read as complex numbers, times ``rotation``
    (complex, broadcastable to (..., hd/2)); computed in float32, returned in the dtype of x.

    One complex multiply is RoPE's (even·cos − odd·sin, even·sin + odd·cos) in a single kernel.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., hd) -> (..., hd/2) complex
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


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
        """x (B, T, D); rope for the T new positions; mask bool (B, 1, T, T_past + T) (dense, needed with a
        cache) or a `SparseMask` such as `CausalMask` over the T positions."""
        q, k, v = (w(x).unflatten(-1, (-1, self.head_dim)) for w in (self.wq, self.wk, self.wv))  # (B, T, h, hd)
        cos, sin = rope
        rotation = torch.complex(cos, sin).unsqueeze(-2)  # (..., T, hd/2) -> (..., T, 1, hd/2), over heads
        q, k = rotate_pairs(q, rotation), rotate_pairs(k, rotation)
        if isinstance(mask, SparseMask):
            if cache is not None:
                raise ValueError("a KV cache needs a dense mask over past + new positions, not a SparseMask")
            out = mask.attend(q, k, v)  # (B, T, H, hd)
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, T, h, hd) -> (B, h, T, hd)
            if cache is not None:
                k, v = cache.extend(k, v)
            out = attend(q, k, v, mask).transpose(1, 2)
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

    def forward(self, queries: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | SparseMask | None) -> torch.Tensor:
        """queries (B, Tq, D), states (B, Tk, D) -> (B, Tq, D).

        ``mask`` says who sees whom: a bool (B, 1, Tq, Tk) tensor, or a `SparseMask` that attends without
        materialising the Tq × Tk scores (the patch patterns of BLT, where each query sees a few keys).
        """
        q = self.wq(self.query_norm(queries)).unflatten(-1, (-1, self.head_dim))  # (B, Tq, D) -> (B, Tq, H, hd)
        kv = self.kv_norm(states)
        k, v = (w(kv).unflatten(-1, (-1, self.head_dim)) for w in (self.wk, self.wv))  # (B, Tk, H_kv, hd)
        if isinstance(mask, SparseMask):
            out = mask.attend(q, k, v)  # (B, Tq, H, hd)
        else:
            out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
        return queries + self.wo(out.flatten(2))

    def init_weights(self, std_factor: float = 1.0) -> None:
        self.query_norm.init_weights()
        self.kv_norm.init_weights()
        for w in (self.wq, self.wk, self.wv, self.wo):
            trunc_normal_(w.weight, std_factor * self.dim**-0.5)


class SparseMask(abc.ABC):
    """An attention pattern in which every query sees only some keys, attended to without scoring every
    (query, key) pair under a dense (Tq, Tk) mask: the work follows the pairs that may attend.

    Subclasses give ``attend(q, k, v)`` on (B, T, H, hd) tensors and ``dense()``, the equivalent bool mask
    (B, 1, Tq, Tk) for `attend` (tests compare the two).
    """

    @abc.abstractmethod
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Tq, H, hd), k/v (B, Tk, H_kv, hd) -> (B, Tq, H, hd) in the dtype of q."""

    @abc.abstractmethod
    def dense(self) -> torch.Tensor:
        """The same pattern as a bool mask (B, 1, Tq, Tk), True = may attend."""


def _repeat_kv_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H_kv, hd) -> (B, T, n_heads, hd) for grouped key/value heads."""
    return x if x.shape[2] == n_heads else x.repeat_interleave(n_heads // x.shape[2], dim=2)


class _SegmentAttention(torch.autograd.Function):
    """Softmax attention of the G queries of each segment over the keys of that segment, in float32.

    q (S, G, H, hd); k, v (N, H, hd) with key n in segment ``ids[n]`` -> (S, G, H, hd); a segment without
    keys gives 0. Each key scores the queries of its own segment (a gather), and the softmax over a
    segment's keys is a segment sum (`index_add`) of exp(score − segment max). Backward recomputes the
    gathers instead of saving them: it keeps q, k, v and the (N, G, H) probabilities, not (N, G, H, hd).
    """

    @staticmethod
    def forward(ctx, q, k, v, ids):
        scale = q.shape[-1] ** -0.5
        scores = (q.float().index_select(0, ids) * k.float()[:, None]).sum(-1) * scale  # (N, G, H)
        # Any shift constant over a segment leaves its softmax unchanged; its max keeps exp() in range.
        index = ids[:, None, None].expand_as(scores)
        segment_max = scores.new_full(q.shape[:-1], -torch.inf).scatter_reduce_(0, index, scores, "amax")  # (S, G, H)
        weights = (scores - segment_max.index_select(0, ids)).exp_()
        totals = weights.new_zeros(q.shape[:-1]).index_add_(0, ids, weights)
        probs = weights.div_(totals.index_select(0, ids))  # (N, G, H): sums to 1 over each segment's keys
        out = probs.new_zeros(q.shape).index_add_(0, ids, probs[..., None] * v.float()[:, None])
        ctx.save_for_backward(q, k, v, ids, probs)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, ids, probs = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.float().index_select(0, ids)  # (N, G, H, hd): the gradient of each key's segment
        grad_v = (probs[..., None] * grad_out).sum(1)  # (N, H, hd)
        weighted = probs * (grad_out * v.float()[:, None]).sum(-1)  # p · dL/dp, (N, G, H)
        segment_sums = weighted.new_zeros(q.shape[:-1]).index_add_(0, ids, weighted)
        grad_scores = (weighted - probs * segment_sums.index_select(0, ids)) * scale  # softmax backward
        grad_k = (grad_scores[..., None] * q.float().index_select(0, ids)).sum(1)
        grad_q = grad_scores.new_zeros(q.shape).index_add_(0, ids, grad_scores[..., None] * k.float()[:, None])
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None


class _GroupAttention(torch.autograd.Function):
    """Softmax attention of query n over the G keys of group ``ids[n]``, in float32.

    q (N, H, hd); k, v (M, G, H, hd) -> (N, H, hd). Backward recomputes the gathered keys and values
    instead of saving them: it keeps q, k, v and the (N, G, H) probabilities, not (N, G, H, hd).
    """

    @staticmethod
    def forward(ctx, q, k, v, ids):
        scale = q.shape[-1] ** -0.5
        scores = (q.float()[:, None] * k.float().index_select(0, ids)).sum(-1) * scale  # (N, G, H)
        probs = scores.softmax(dim=1)
        out = (probs[..., None] * v.float().index_select(0, ids)).sum(1)  # (N, H, hd)
        ctx.save_for_backward(q, k, v, ids, probs)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, ids, probs = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.float()[:, None]  # (N, 1, H, hd)
        grad_v = torch.zeros(v.shape, device=v.device).index_add_(0, ids, probs[..., None] * grad_out)
        weighted = probs * (grad_out * v.float().index_select(0, ids)).sum(-1)  # p · dL/dp, (N, G, H)
        grad_scores = (weighted - probs * weighted.sum(1, keepdim=True)) * scale  # softmax backward
        grad_q = (grad_scores[..., None] * k.float().index_select(0, ids)).sum(1)
        grad_k = torch.zeros(k.shape, device=k.device).index_add_(0, ids, grad_scores[..., None] * q.float()[:, None])
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None


class SegmentMask(SparseMask):
    """Queries in groups of ``group``; group s sees exactly the keys whose ``segment_ids`` is s.

    The encoder's pattern: the k query slots of patch p see the bytes of patch p. segment_ids (B, Tk) ->
    dense (B, 1, S * group, Tk). A group whose segment has no key (a padding patch) sees key 0 instead, so
    that its output stays finite (it equals the value of key 0).
    """

    def __init__(self, segment_ids: torch.Tensor, num_segments: int, group: int):
        B = segment_ids.shape[0]
        self.segment_ids, self.num_segments, self.group = segment_ids, num_segments, group
        row_offsets = torch.arange(B, device=segment_ids.device)[:, None] * num_segments
        self.flat_ids = (segment_ids + row_offsets).flatten()  # (B * Tk,) segment of each key, over all rows
        keys_per_segment = torch.bincount(self.flat_ids, minlength=B * num_segments)
        self.empty = (keys_per_segment == 0).view(B, num_segments, 1, 1, 1)  # (B, S, 1, 1, 1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, S * group, H, hd), k/v (B, Tk, H_kv, hd) -> (B, S * group, H, hd) (see `_SegmentAttention`)."""
        B, Tq, H, hd = q.shape
        Tk, S, G = k.shape[1], self.num_segments, self.group
        k, v = _repeat_kv_heads(k, H), _repeat_kv_heads(v, H)
        out = _SegmentAttention.apply(q.reshape(B * S, G, H, hd), k.reshape(B * Tk, H, hd), v.reshape(B * Tk, H, hd),
                                      self.flat_ids)  # (B*S, G, H, hd), float32
        out = torch.where(self.empty, v[:, 0, None, None].float(), out.view(B, S, G, H, hd))  # empty: value of key 0
        return out.view(B, Tq, H, hd).to(q.dtype)

    def dense(self) -> torch.Tensor:
        segments = torch.arange(self.num_segments, device=self.segment_ids.device)
        mask = segments[None, :, None] == self.segment_ids[:, None, :]  # (B, S, Tk)
        mask = mask | (self.empty.view(-1, self.num_segments, 1) & (torch.arange(mask.shape[-1], device=mask.device) == 0))
        return mask.repeat_interleave(self.group, dim=1)[:, None]  # (B, S, Tk) -> (B, 1, S*group, Tk)


class GroupMask(SparseMask):
    """Query t sees exactly the ``group`` consecutive keys of group ``group_ids[t]``.

    The decoder's pattern: byte t sees the k slots of the patch whose global state it reads.
    group_ids (B, Tq) -> dense (B, 1, Tq, num_groups * group).
    """

    def __init__(self, group_ids: torch.Tensor, num_groups: int, group: int):
        B = group_ids.shape[0]
        self.group_ids, self.num_groups, self.group = group_ids, num_groups, group
        row_offsets = torch.arange(B, device=group_ids.device)[:, None] * num_groups
        self.flat_ids = (group_ids + row_offsets).flatten()  # (B * Tq,)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Tq, H, hd), k/v (B, num_groups * group, H_kv, hd) -> (B, Tq, H, hd) (see `_GroupAttention`)."""
        B, Tq, H, hd = q.shape
        M, G = B * self.num_groups, self.group
        k, v = _repeat_kv_heads(k, H), _repeat_kv_heads(v, H)
        out = _GroupAttention.apply(q.reshape(B * Tq, H, hd), k.reshape(M, G, H, hd), v.reshape(M, G, H, hd),
                                    self.flat_ids)  # (B*Tq, H, hd), float32
        return out.view(B, Tq, H, hd).to(q.dtype)

    def dense(self) -> torch.Tensor:
        groups = torch.arange(self.num_groups, device=self.group_ids.device)
        mask = self.group_ids[:, :, None] == groups[None, None, :]  # (B, Tq, num_groups)
        return mask.repeat_interleave(self.group, dim=2)[:, None]


class KeyWindows(torch.autograd.Function):
    """x (B, H, L, hd) -> (B n, H, size, hd): the n = (L - size) / step + 1 windows of ``size`` positions,
    ``step`` apart, copied out as a batch (``unfold``). Its backward adds each window's gradient back in
    slices of ``step`` positions, one strided add per slice (ceil(size / step) of them) where autograd's
    ``unfold_backward`` took ~15x longer on CPU (4.6 vs 0.3 ms for the small preset's key windows)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, step: int) -> torch.Tensor:
        B, H, L, hd = x.shape
        if L < size or (L - size) % step:
            raise ValueError(f"{L} positions do not split into windows of {size}, {step} apart")
        n = (L - size) // step + 1
        ctx.shape, ctx.size, ctx.step, ctx.n = x.shape, size, step, n
        return x.unfold(2, size, step).permute(0, 2, 1, 4, 3).reshape(B * n, H, size, hd)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (B, H, L, hd), size, step, n = ctx.shape, ctx.size, ctx.step, ctx.n
        grad = grad.reshape(B, n, H, size, hd).transpose(1, 2)  # (B, H, n, size, hd)
        spare = -size % step  # room for the last, partial slice's n steps
        out = grad.new_zeros(B, H, L + spare, hd)
        for c in range(0, size, step):  # window offsets [c, c + w) of window j sit at c + j step + [0, w)
            w = min(step, size - c)
            out[:, :, c:c + n * step].unflatten(2, (n, step))[:, :, :, :w] += grad[:, :, :, c:c + w]
        return out[:, :, :L] if spare else out, None, None


class CausalMask(SparseMask):
    """Self-attention that is causal, within documents and within a window: query i sees key j iff j <= i,
    both are in the same document and i - j < window (None = no window). doc_ids (B, T); dense form:
    `local_attention_mask`.

    Attended in blocks of ``query_block`` queries, each over only the keys it may see, so the work grows as
    T × (window + block) instead of T² (a dense mask scores every pair, and the CPU kernel's own causal skip
    works in 512-key steps, too coarse to skip anything at these lengths). Query block j (positions
    [jb, jb + b)) sees keys [jb - window, jb + b): the blocks that start at least ``window`` in go to one
    SDPA call over overlapping key windows cut out with ``unfold`` (a band mask of shape (b, window + b));
    the blocks before that see keys [0, jb + b), one call each. Without a document boundary in the batch
    (no EOS before the last byte) the masks are shared by all rows.

    Smaller blocks skip more but copy each key (window + b) / b times and make smaller kernel calls. For
    T = 1024, window 512 (the small preset's local models) blocks of 256 score 590k pairs instead of 786k
    with blocks of 512; the whole small training step came out 3% (fp32) and 6-9% (bf16) faster than with
    the old 512-blocks, where 128 gave +5-8% in fp32 but -1-3% in bf16 (2 cores, AVX-512, torch 2.13).
    """

    def __init__(self, doc_ids: torch.Tensor, window: int | None, query_block: int = 256):
        if query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {query_block}")
        self.doc_ids, self.window = doc_ids, window
        T = doc_ids.shape[1]
        self.span = T if window is None else min(window, T)  # how far back a query may see, itself included
        self.query_block = query_block
        self.one_document = T == 0 or bool((doc_ids[:, -1] == doc_ids[:, 0]).all())  # ids never decrease along a row
        self._masks: dict[tuple[str, int, int], torch.Tensor] = {}  # built once, used by every layer of a stack

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, T, H, hd), k/v (B, T, H_kv, hd) -> (B, T, H, hd)."""
        T, H = q.shape[1], q.shape[2]
        b, span = self.query_block, self.span
        if T == 0:
            return q
        q, k, v = (t.transpose(1, 2) for t in (q, _repeat_kv_heads(k, H), _repeat_kv_heads(v, H)))  # (B, H, T, hd)
        first_banded = -(-span // b)  # blocks from here on start at least `span` positions in
        outs = [self._prefix_block(q, k, v, j * b, min(j * b + b, T)) for j in range(min(first_banded, -(-T // b)))]
        if first_banded * b < T:
            outs.append(self._banded_blocks(q, k, v, first_banded * b))
        return (torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]).transpose(1, 2)

    def _prefix_block(self, q, k, v, start: int, end: int) -> torch.Tensor:
        """Queries [start, end) over keys [0, end) (keys before end - span are masked out, if any)."""
        if start == 0 and end <= self.span and self.one_document:
            return F.scaled_dot_product_attention(q[:, :, :end], k[:, :, :end], v[:, :, :end], is_causal=True)
        mask = self._masks.get(("prefix", start, end))
        if mask is None:
            docs = self.doc_ids[:1, :end] if self.one_document else self.doc_ids[:, :end]
            mask = self._masks[("prefix", start, end)] = local_attention_mask(docs[:, start:], self.window, docs)
        return F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], attn_mask=mask)

    def _banded_blocks(self, q, k, v, start: int) -> torch.Tensor:
        """Queries [start, T) in blocks of b, block (position p, p + b) over keys [p - span, p + b)."""
        B, H, T, hd = q.shape
        b, span = self.query_block, self.span
        n = -(-(T - start) // b)
        pad = start + n * b - T  # padded queries see padding keys (finite), and are dropped
        keys_from = start - span
        q, k, v = q[:, :, start:], k[:, :, keys_from:], v[:, :, keys_from:]
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))

        queries = q.unflatten(2, (n, b)).transpose(1, 2).reshape(B * n, H, b, hd)
        mask = self._masks.get(("band", start, n))
        if mask is None:
            mask = self._masks[("band", start, n)] = self._band_mask(start, n)
        keys, values = (KeyWindows.apply(t, span + b, b) for t in (k, v))
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
        return out.view(B, n, H, b, hd).transpose(1, 2).reshape(B, H, n * b, hd)[:, :, : T - start]

    def _band_mask(self, start: int, n: int) -> torch.Tensor:
        """Query r of a block (position p + r) sees key c of its window (position p - span + c) iff
        r < c <= r + span (causal and within the window), and same document. -> (1 or B n, 1, b, span + b)."""
        b, span, device = self.query_block, self.span, self.doc_ids.device
        rows, cols = torch.arange(b, device=device)[:, None], torch.arange(span + b, device=device)[None, :]
        band = (cols > rows) & (cols <= rows + span)  # (b, span + b)
        if self.one_document:
            return band[None, None]
        B, T = self.doc_ids.shape
        docs = F.pad(self.doc_ids[:, start - span:], (0, start + n * b - T), value=-1)  # padding: a document of its own
        query_docs = docs[:, span:].view(B, n, b)
        key_docs = docs.unfold(1, span + b, b)  # (B, n, span + b)
        same = query_docs[..., :, None] == key_docs[..., None, :]  # (B, n, b, span + b)
        return (band & same).view(B * n, 1, b, span + b)

    def dense(self) -> torch.Tensor:
        return local_attention_mask(self.doc_ids, self.window)


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

    @torch.no_grad()
    def init_weights(self, seed: int | None = None):
        """The reference init: truncated normal, std d^-0.5. Returns self."""
        with seeded(seed):
            embedding_init(self.embedding, self.cfg.dim)
            self.transformer.init_weights()
            self.norm.init_weights()
            linear_init(self.output)
        return self

