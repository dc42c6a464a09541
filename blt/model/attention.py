"""Attention behind one mask protocol (docs/design.md §3): a `Mask` says who sees whom and attends
``q, k, v`` itself, so the blocks never ask which kind they hold.

`DenseMask` wraps a bool tensor for `torch.nn.functional.scaled_dot_product_attention` (what cached steps
and short inputs use). The others know their pattern and skip what a dense mask would only mask out:
`CausalMask` (causal, per document, sliding window: block by block), `SegmentMask` and `GroupMask`
(BLT's patch cross-attentions, where a query sees a handful of keys), with their own float32 kernels.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with grouped KV heads. q (B, H, Tq, hd), k/v (B, Hkv, Tk, hd), mask bool (B, 1, Tq, Tk)."""
    if k.shape[1] != q.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Mask(abc.ABC):
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


class DenseMask(Mask):
    """A bool mask (B, 1, Tq, Tk), True = may attend, or None (everyone sees everyone), through SDPA."""

    def __init__(self, mask: torch.Tensor | None):
        self.mask = mask

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, Tq, H, hd), k/v (B, Tk, H_kv, hd) -> (B, Tq, H, hd)."""
        return attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.mask).transpose(1, 2)

    def dense(self) -> torch.Tensor:
        return self.mask


def as_mask(mask: Mask | torch.Tensor | None) -> Mask:
    """A `Mask` as it is; a bool tensor or None as a `DenseMask`."""
    return mask if isinstance(mask, Mask) else DenseMask(mask)


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


class SegmentMask(Mask):
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
        keys_per_segment = torch.zeros(B * num_segments, dtype=torch.long, device=segment_ids.device).index_add_(
            0, self.flat_ids, torch.ones_like(self.flat_ids))  # bincount with a shape torch.compile can trace
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


class GroupMask(Mask):
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
    slices of ``step`` positions, one strided add per slice (ceil(size / step) of them), much faster on
    the CPU than autograd's ``unfold_backward`` (benchmarks/README.md)."""

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


class CausalMask(Mask):
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

    Smaller blocks skip more but copy each key (window + b) / b times and make smaller kernel calls; the
    default of 256 was chosen by measurement (benchmarks/README.md).
    """

    def __init__(self, doc_ids: torch.Tensor, window: int | None, query_block: int = 256):
        if query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {query_block}")
        self.doc_ids, self.window = doc_ids, window
        T = doc_ids.shape[1]
        self.span = T if window is None else min(window, T)  # how far back a query may see, itself included
        self.query_block = query_block
        # ids never decrease along a row. Under torch.compile the host check would split the graph, so a compiled
        # model takes the general masks, which give the same attention (to float rounding: other kernels).
        self.one_document = T == 0 or (not torch.compiler.is_compiling()
                                       and bool((doc_ids[:, -1] == doc_ids[:, 0]).all()))
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
