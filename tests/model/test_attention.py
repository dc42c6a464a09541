"""The sparse attention patterns equal dense-mask SDPA (values and gradients); RoPE as a complex multiply."""

from __future__ import annotations

import pytest
import torch

from blt.model.attention import CausalMask, KeyWindows, attend, local_attention_mask
from blt.model.byte_latent import PatchLayout
from blt.model.layers import CrossAttention, rotate_pairs, rotate_pairs_real
from tests.helpers import lengths_from_mask, random_ids, random_start_mask


def _layout(B: int, T: int, seed: int, pad: int = 0) -> PatchLayout:
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths_from_mask(random_start_mask(B, T, gen, p=0.3))
    lengths = torch.nn.functional.pad(lengths, (0, pad))  # padding patches own no byte
    return PatchLayout.build(random_ids(B, T, gen), lengths)


def _dense(q, k, v, mask):
    """attend() on (B, T, H, hd) tensors."""
    return attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)


def _check_same(mask, q_len: int, k_len: int, B=3, H=4, H_kv=2, hd=8):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, q_len, H, hd, generator=gen, requires_grad=True)
    k, v = (torch.randn(B, k_len, H_kv, hd, generator=gen, requires_grad=True) for _ in range(2))
    grad = torch.randn(B, q_len, H, hd, generator=gen)
    got, expected = mask.attend(q, k, v), _dense(q, k, v, mask.dense())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(got, (q, k, v), grad)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("pad", [0, 2])
def test_encoder_pattern_equals_dense_sdpa(k, pad):
    layout = _layout(3, 40, seed=k + 10 * pad, pad=pad)
    _check_same(layout.encoder_cross_mask(k), q_len=layout.num_patches * k, k_len=40)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("pad", [0, 2])
def test_decoder_pattern_equals_dense_sdpa(k, pad):
    layout = _layout(3, 40, seed=k + 10 * pad, pad=pad)
    _check_same(layout.decoder_cross_mask(k), q_len=40, k_len=layout.num_patches * k)


@pytest.mark.parametrize("T", [5, 8, 17, 24, 31])
@pytest.mark.parametrize("window", [None, 4, 8, 7])
@pytest.mark.parametrize("documents", [False, True])
@pytest.mark.parametrize("query_block", [3, 4, 128])
def test_causal_mask_equals_dense_sdpa(T, window, documents, query_block):
    """Query blocks smaller than, equal to and larger than the window (one block when T <= block), windows
    that are and are not multiples of the block, with and without EOS inside rows."""
    ids = random_ids(3, T, torch.Generator().manual_seed(T))
    if documents:
        ids[0, T // 3] = 2  # EOS: the next byte starts another document
        ids[2, 1] = ids[2, T - 2] = 2
    mask = CausalMask(PatchLayout.build(ids, torch.tensor([[1, T - 1]] * 3)).byte_doc_ids, window, query_block)
    assert mask.one_document is not documents
    assert mask.dense().equal(local_attention_mask(mask.doc_ids, window))
    _check_same(mask, q_len=T, k_len=T)
    if not documents:  # the per-row masks a compiled model uses (it skips the host check) attend the same
        mask = CausalMask(mask.doc_ids, window, query_block)
        mask.one_document = False
        _check_same(mask, q_len=T, k_len=T)


@pytest.mark.parametrize(("size", "step", "n"), [(6, 2, 4), (7, 4, 3), (5, 5, 2), (3, 4, 2), (9, 4, 1)])
def test_key_windows_equal_unfold_in_values_and_gradients(size, step, n):
    """Sizes that are, and are not, multiples of the step; windows that overlap, touch and leave gaps."""
    gen = torch.Generator().manual_seed(size * 10 + step)
    x = torch.randn(2, 3, size + (n - 1) * step, 4, generator=gen, requires_grad=True)
    grad = torch.randn(2 * n, 3, size, 4, generator=gen)
    got = KeyWindows.apply(x, size, step)
    expected = x.unfold(2, size, step).permute(0, 2, 1, 4, 3).reshape(2 * n, 3, size, 4)
    assert got.equal(expected)
    torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
    with pytest.raises(ValueError, match="do not split into windows"):
        KeyWindows.apply(x[:, :, 1:], size, step)


def test_causal_mask_scores_only_the_keys_a_block_may_see():
    """T = 1024, window 512, blocks of 128: 492k scored pairs (the blocks' key spans), not T² = 1049k."""
    mask = CausalMask(torch.zeros(1, 1024, dtype=torch.long), 512, query_block=128)
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, v, **kwargs):
        calls.append(q.shape[0] * q.shape[2] * k.shape[2])
        return real(q, k, v, **kwargs)

    q = torch.randn(1, 1024, 1, 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
        mask.attend(q, q, q)
    assert sum(calls) == 128 * (128 + 256 + 384 + 512) + 4 * 128 * 640


def test_dense_forms_of_the_worked_example():
    """lengths [1, 3, 4, 2, 0] (T = 10): patch ids [0,1,1,1,2,2,2,2,3,3], decoder ids [0,0,0,1,1,1,1,2,2,2]."""
    ids = torch.tensor([[1] + [80] * 9])
    layout = PatchLayout.build(ids, torch.tensor([[1, 3, 4, 2, 0]]))
    encoder = layout.encoder_cross_mask(2).dense()[0, 0]  # (P*k, T)
    assert encoder.shape == (10, 10)
    assert encoder[2].tolist() == encoder[3].tolist() == [False, True, True, True] + [False] * 6  # slots of patch 1
    assert encoder[8].tolist() == [True] + [False] * 9  # the padding patch sees BOS
    decoder = layout.decoder_cross_mask(2).dense()[0, 0]  # (T, P*k)
    assert decoder.shape == (10, 10)
    assert [row.nonzero().flatten().tolist() for row in decoder] == [[0, 1]] * 3 + [[2, 3]] * 4 + [[4, 5]] * 3


def test_padding_patch_reads_the_value_of_bos():
    layout = PatchLayout.build(torch.tensor([[1, 80, 81]]), torch.tensor([[1, 2, 0]]))
    mask = layout.encoder_cross_mask(1)
    q = torch.randn(1, 3, 2, 4)
    k, v = torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4)
    torch.testing.assert_close(mask.attend(q, k, v)[0, 2], v[0, 0])


def test_cross_attention_module_sparse_equals_dense_in_fp32_and_bf16():
    layout = _layout(2, 48, seed=3, pad=1)
    cross = CrossAttention(32, n_heads=4, n_kv_heads=2, norm_eps=1e-5)
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(2, layout.num_patches * 2, 32, generator=gen)
    states = torch.randn(2, 48, 32, generator=gen)
    sparse, dense = layout.encoder_cross_mask(2), layout.encoder_cross_mask(2).dense()
    torch.testing.assert_close(cross(queries, states, sparse), cross(queries, states, dense), atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = cross(queries, states, sparse), cross(queries, states, dense)
    torch.testing.assert_close(got.float(), expected.float(), atol=5e-2, rtol=5e-2)


def test_rope_rotates_adjacent_pairs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=gen)  # (B, H, T, hd)
    angles = torch.randn(5, 4, generator=gen)
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    expected = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    torch.testing.assert_close(rotate_pairs(x, torch.complex(cos, sin)), expected)
    per_row = rotate_pairs(x, torch.complex(cos, sin).expand(2, 1, 5, 4))  # one table per row, over heads
    torch.testing.assert_close(per_row, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_in_real_arithmetic_gives_the_same_bits(dtype):
    """What a compiled model runs (`rotate_pairs_real`) against the complex multiply of eager models: the
    same bits, forward and in the gradient of x (RoPE's cos and sin carry no gradient in the models)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 4, 64, generator=gen).to(dtype)  # (B, T, H, hd)
    angles = torch.randn(37, 1, 32, generator=gen) * 50
    grad = torch.randn(x.shape, generator=gen).to(dtype)
    outs = []
    for rotate in (lambda t: rotate_pairs(t, torch.complex(angles.cos(), angles.sin())),
                   lambda t: rotate_pairs_real(t, angles.cos(), angles.sin())):
        leaf = x.clone().requires_grad_()
        out = rotate(leaf)
        outs.append((out, torch.autograd.grad(out, leaf, grad)[0]))
    assert outs[0][0].dtype == dtype and outs[0][0].equal(outs[1][0]) and outs[0][1].equal(outs[1][1])
