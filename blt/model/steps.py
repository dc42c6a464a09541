"""Steps of one new position per row through a model's blocks, on folded weights: what the generation
engine runs after a prompt's prefill (`blt.generation.Engine`); the prefill runs the blocks' own forward.

A step pushes one position per row (B, D) through the blocks. At the sizes of local models its cost is
mostly the fixed cost of each torch op (a few microseconds), so these classes use as few ops as the math
allows: each RMSNorm weight (and the attention scale) is folded into the weights of the linear layer after
it, whose rows are fused (q|k|v, w1|w3); RoPE is one complex multiply of q and k together; keys and values
are written in place into a `KVCache`. One row runs as matrix-vector products (the norm's 1/rms as the
``alpha`` of one `torch.addmv`), several as matrix products. The folded weights are copies made when a
step is built: it sees the weights as they were then. Tests check steps against the full forward
(tests/test_generation.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from blt.model.cache import KVCache, LayerCache
from blt.model.layers import CrossAttention, TransformerBlock, TransformerStack


def _folded(norm_weight: torch.Tensor, *weights: torch.Tensor, scale: Sequence[float] | None = None) -> torch.Tensor:
    """Rows of ``weights`` stacked, each multiplied column-wise by an RMSNorm weight (``W @ (g * x)`` =
    ``(W * g) @ x``) and by its entry of ``scale``; computed in float32, returned in the weights' dtype."""
    scale = scale or [1.0] * len(weights)
    g = norm_weight.detach().float()
    return torch.cat([w.detach().float() * g * s for w, s in zip(weights, scale)]).to(weights[0].dtype).contiguous()


def _residual_linear(residual: torch.Tensor, weight_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``residual + F.linear(x, weight)`` for rows (B, D), as one `torch.addmm`; ``weight_t`` = weight.t()."""
    return torch.addmm(residual, x, weight_t)


def _rms_scale(x: torch.Tensor, eps: float) -> float:
    """1 / RMS(x) of a vector, as `RMSNorm` computes it (the weight is folded elsewhere)."""
    norm = float(torch.linalg.vector_norm(x, dtype=torch.float32))
    return 1.0 / math.sqrt(norm * norm / x.shape[-1] + eps)


class NormLinear:
    """``linear(rms_norm(x, weight), W)`` for rows x, on folded weights."""

    def __init__(self, norm: torch.nn.Module, *weights: torch.Tensor, scale: Sequence[float] | None = None):
        self.weight, self.eps = _folded(norm.weight, *weights, scale=scale), norm.eps
        self.zeros = self.weight.new_zeros(self.weight.shape[0])

    def vector(self, x: torch.Tensor) -> torch.Tensor:
        """One row x (D,) -> (out,): the norm's 1/rms is the ``alpha`` of one `torch.addmv`."""
        return torch.addmv(self.zeros, self.weight, x, beta=0, alpha=_rms_scale(x, self.eps))

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Rows x (B, D) -> (B, out): the norm without its weight (folded), then the linear layer."""
        if x.shape[0] == 1:
            return self.vector(x[0])[None]
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)  # (B, 1), as RMSNorm
        return F.linear(x * scale.to(x.dtype), self.weight)


class BlockStep:
    """`TransformerBlock.forward` for one new position whose keys/values join a cache."""

    def __init__(self, layer: TransformerBlock):
        attn, ff = layer.attention, layer.feed_forward
        self.n_heads, self.n_kv_heads, self.head_dim = attn.n_heads, attn.n_kv_heads, attn.head_dim
        self.qkv = NormLinear(layer.attention_norm, attn.wq.weight, attn.wk.weight, attn.wv.weight,
                               scale=[self.head_dim**-0.5, 1.0, 1.0])  # SDPA's 1/sqrt(hd), folded into q
        self.wo = attn.wo.weight.detach().contiguous()
        self.gate_up = NormLinear(layer.ffn_norm, ff.w1.weight, ff.w3.weight)
        self.w2 = ff.w2.weight.detach().contiguous()
        self.wo_t, self.w2_t = self.wo.t(), self.w2.t()
        self.hidden = ff.w1.weight.shape[0]

    def _rotated(self, qkv: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """RoPE on the q and k heads of qkv (..., (H + 2 Hkv) hd) -> (..., H + Hkv, hd/2, 2); rotation (..., 1, hd/2)."""
        H, Hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        pairs = qkv[..., : (H + Hkv) * hd].unflatten(-1, (H + Hkv, hd // 2, 2))
        if pairs.dtype == torch.float32:
            return torch.view_as_real(torch.view_as_complex(pairs) * rotation)
        return torch.view_as_real(torch.view_as_complex(pairs.float()) * rotation).to(qkv.dtype)

    def batch(self, x: torch.Tensor, rotation: torch.Tensor, visible: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
        """One new position in each of B rows: x (B, D), rotation complex (B, hd/2), visible bool (B, used) (the
        cache slots each row's query sees once this position is written; None: all) -> (B, D)."""
        B = x.shape[0]
        if B == 1 and visible is None:
            return self._one(x[0], rotation[0], cache)[None]
        H, Hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv.batch(x)
        rotated = self._rotated(qkv, rotation[:, None])  # (B, H + Hkv, hd/2, 2)
        n = cache.used()
        cache.write(rotated[:, H:].reshape(B, Hkv, hd), qkv[:, (H + Hkv) * hd :].view(B, Hkv, hd))
        q = rotated[:, :H].reshape(B * Hkv, H // Hkv, hd)
        keys, values = cache.k[:, :, :n].flatten(0, 1), cache.v[:, :, :n].flatten(0, 1)  # (B Hkv, n, hd)
        scores = torch.bmm(q, keys.transpose(1, 2))  # (B Hkv, group, n)
        if visible is not None:
            scores = scores.masked_fill(~visible.repeat_interleave(Hkv, dim=0)[:, None], float("-inf"))
        out = torch.bmm(torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype), values)  # (B Hkv, group, hd)
        x = _residual_linear(x, self.wo_t, out.reshape(B, H * hd))
        gate, up = self.gate_up.batch(x).split(self.hidden, dim=-1)
        return _residual_linear(x, self.w2_t, F.silu(gate) * up)

    def _one(self, x: torch.Tensor, rotation: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """`batch` for one row that sees every used slot, in matrix-vector products: x (D,) -> (D,)."""
        H, Hkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv.vector(x)
        rotated = self._rotated(qkv, rotation)
        n = cache.used()
        keys, values = cache.write_one(rotated[H:].view(Hkv, hd), qkv[(H + Hkv) * hd :].view(Hkv, hd), n)
        scores = torch.bmm(rotated[:H].view(Hkv, H // Hkv, hd), keys.transpose(1, 2))  # (Hkv, group, n)
        out = torch.bmm(torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype), values)  # (Hkv, group, hd)
        x = torch.addmv(x, self.wo, out.view(-1))
        gate, up = self.gate_up.vector(x).split(self.hidden)
        return torch.addmv(x, self.w2, F.silu(gate) * up)


class StackStep:
    """A `TransformerStack` one position per row at a time, over `KVCache` caches."""

    def __init__(self, stack: TransformerStack, window: int | None):
        self.rope = stack.rope
        self.blocks = [BlockStep(layer) for layer in stack.layers]
        self.window = window
        self.rotations = torch.empty(0, dtype=torch.complex64)

    def caches(self, caches: list[LayerCache], length: int) -> list[KVCache]:
        """Step caches of one row from a prefill's caches after ``length`` positions."""
        return [KVCache.from_prefill(cache, length, self.window) for cache in caches]

    def rotation(self, positions: list[int]) -> torch.Tensor:
        """RoPE angles of each row's position as unit complex numbers, from a table grown on demand.
        -> (B, hd/2)."""
        last = max(positions)
        if last >= len(self.rotations):
            cos, sin = self.rope(torch.arange(max(1024, 2 * last), device=self.rope.inv_freq.device))
            self.rotations = torch.complex(cos, sin)  # (N, hd/2)
        if len(positions) == 1:
            return self.rotations[positions[0] : positions[0] + 1]  # a view, not a gather
        return self.rotations[torch.tensor(positions, device=self.rotations.device)]

    def batch(self, x: torch.Tensor, first_visible: list[int], caches: list[KVCache],
              before_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
        """x (B, D), each row at the next position of its caches, through every block; every block's output.
        ``before_block(i, x)`` runs before block i (the decoder's cross-attention)."""
        for cache in caches:
            cache.make_room()
        rotation = self.rotation(caches[0].held) if caches else None
        visible = caches[0].visible(first_visible) if caches else None
        outputs = []
        for i, (block, cache) in enumerate(zip(self.blocks, caches)):
            if before_block is not None:
                x = before_block(i, x)
            x = block.batch(x, rotation, visible, cache)
            outputs.append(x)
        return outputs

class CrossStep:
    """`CrossAttention.forward` (``q + attn(q)``, the reference's residual) for one query, against keys and
    values computed once per patch."""

    def __init__(self, cross: CrossAttention):
        self.cross = cross
        self.head_dim = cross.head_dim
        self.query = NormLinear(cross.query_norm, cross.wq.weight, scale=[self.head_dim**-0.5])
        self.wo = cross.wo.weight.detach().contiguous()
        self.wo_t = self.wo.t()

    def keys(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (N, S, D) -> keys, values (N, H_kv, S, hd)."""
        cross = self.cross
        kv = cross.kv_norm(states)
        return tuple(F.linear(kv, w.weight).unflatten(-1, (-1, self.head_dim)).transpose(1, 2) for w in (cross.wk, cross.wv))

    def batch(self, h: torch.Tensor, keys: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """h (B, D), each row's keys and values (B, Hkv, S, hd) -> (B, D)."""
        B = h.shape[0]
        if B == 1:  # matrix-vector products
            k, v = keys[0][0], keys[1][0]  # (Hkv, S, hd)
            q = self.query.vector(h[0]).view(k.shape[0], -1, self.head_dim)  # (Hkv, group, hd)
            out = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1, dtype=torch.float32).to(v.dtype), v)
            return torch.addmv(h[0], self.wo, out.view(-1))[None]
        k, v = (t.flatten(0, 1) for t in keys)  # (B Hkv, S, hd)
        q = self.query.batch(h).view(k.shape[0], -1, self.head_dim)  # (B Hkv, group, hd)
        out = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1, dtype=torch.float32).to(v.dtype), v)
        return _residual_linear(h, self.wo_t, out.reshape(B, -1))
