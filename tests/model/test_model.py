"""Behaviour of the BLT model: causality, batch independence, shapes, validation, init, overfitting."""

from __future__ import annotations

import pytest
import torch

import blt
from blt.config import (
    BLTConfig,
    ConfigError,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
)
from blt.model import ByteLatentTransformer, next_byte_loss
from blt.model.layout import decoder_patch_ids, pad_patch_lengths
from tests.helpers import lengths_from_mask, random_ids, random_start_mask


def micro_config(**changes) -> BLTConfig:
    """A few-thousand-parameter BLT exercising every path (window, GQA, all-layer cross-attention)."""
    cfg = BLTConfig(
        encoder=LocalEncoderConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, window=8, cross_attn_all_layers=True),
        global_model=GlobalConfig(dim=48, n_layers=2, n_heads=4),
        decoder=LocalDecoderConfig(dim=32, n_layers=2, n_heads=2, window=8, cross_attn_all_layers=True),
        hash=HashEmbeddingConfig(rows=97, num_functions=2),
        cross_attn_k=2,
        max_seq_len=64,
    )
    return cfg.replace(**changes)


CONFIGS = {
    "all-layers": micro_config(),
    "last/first-only": micro_config(
        encoder=LocalEncoderConfig(dim=32, n_layers=2, n_heads=4, window=None, cross_attn_all_layers=False),
        decoder=LocalDecoderConfig(dim=32, n_layers=3, n_heads=4, window=None, cross_attn_all_layers=False),
    ),
    "k=1, same width": micro_config(cross_attn_k=1, global_model=GlobalConfig(dim=32, n_layers=1, n_heads=2)),
    "k=4, no hash": micro_config(cross_attn_k=4, hash=HashEmbeddingConfig(num_functions=0)),
}


def build(cfg: BLTConfig, seed: int = 0) -> ByteLatentTransformer:
    return ByteLatentTransformer(cfg).init_weights(seed=seed).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_causality_by_perturbation(name):
    """Changing bytes after t (and re-drawing boundaries after t+1) leaves logits at positions <= t unchanged."""
    model = build(CONFIGS[name])
    gen = torch.Generator().manual_seed(1)
    B, T = 3, 40
    for trial in range(6):
        ids = random_ids(B, T, gen)
        mask = random_start_mask(B, T, gen, p=0.3)
        t = int(torch.randint(1, T - 1, (1,), generator=gen))
        ids2, mask2 = ids.clone(), mask.clone()
        ids2[:, t + 1 :] = random_ids(B, T, gen)[:, t + 1 :]
        mask2[:, t + 2 :] = random_start_mask(B, T, gen, p=0.5)[:, t + 2 :]  # boundary at t+1 is decided by byte t
        with torch.no_grad():
            a = model(ids, lengths_from_mask(mask))
            b = model(ids2, lengths_from_mask(mask2))
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-5, rtol=0)
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :]), "perturbation had no effect at all: test is vacuous"


def test_causality_across_documents():
    """A packed row: the second document's logits don't depend on the first document's bytes."""
    model = build(micro_config())
    gen = torch.Generator().manual_seed(2)
    T = 32
    ids = random_ids(1, T, gen)
    ids[0, 11], ids[0, 12] = blt.EOS_ID, blt.BOS_ID
    mask = random_start_mask(1, T, gen, p=0.3)
    mask[0, 12] = mask[0, 13] = True  # BOS of the second document is a patch of its own
    ids2 = ids.clone()
    ids2[0, 1:11] = random_ids(1, T, gen)[0, 1:11]
    with torch.no_grad():
        a = model(ids, lengths_from_mask(mask))
        b = model(ids2, lengths_from_mask(mask))
    torch.testing.assert_close(a[:, 12:], b[:, 12:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_batch_independence(name):
    """A row's logits are the same alone and inside a ragged batch whose other rows change."""
    model = build(CONFIGS[name])
    gen = torch.Generator().manual_seed(3)
    T = 30
    ids = random_ids(3, T, gen)
    masks = random_start_mask(3, T, gen, p=0.4)
    masks[1] = random_start_mask(1, T, gen, p=0.1)[0]  # far fewer patches: row 0 gets right padding
    rows = [lengths_from_mask(masks[i : i + 1])[0] for i in range(3)]
    rows = [r[r > 0] for r in rows]
    with torch.no_grad():
        alone = model(ids[:1], rows[0][None])
        batched = model(ids, pad_patch_lengths(rows))
        ids_other = ids.clone()
        ids_other[1:] = random_ids(2, T, gen)[1:]
        batched_other = model(ids_other, pad_patch_lengths(rows))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched_other[:1], alone, atol=1e-5, rtol=1e-5)


def test_decoder_reads_last_complete_patch():
    lengths = torch.tensor([[1, 3, 4, 2]])
    assert decoder_patch_ids(lengths, 10).tolist() == [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_preset_shapes(preset):
    cfg = BLTConfig.preset(preset)
    model = ByteLatentTransformer(cfg).init_weights(seed=0)
    ids = blt.encode(b"Shapes of a preset, checked on a short input.")[None]
    T = ids.shape[1]
    lengths = torch.tensor([[1, 5, 10, T - 16]])
    with torch.no_grad():
        logits = model(ids, lengths)
    assert logits.shape == (1, T, 260)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("preset", ["1b", "8b"])
def test_large_presets_build_on_meta_device(preset):
    with torch.device("meta"):
        model = ByteLatentTransformer(BLTConfig.preset(preset))
    counts = model.parameter_counts()
    assert counts["non_embedding"] > 5e8


def expected_blt_1b_parameters() -> int:
    """Hand count of the 1B layout from docs/design.md §3 (excluding hash and byte embeddings)."""
    def block(d, ffn):
        return 4 * d * d + 3 * d * ffn + 2 * d

    def cross(d):
        return 4 * d * d + 2 * d

    enc = block(1024, 2816) + 1024 * 2048 + cross(1024)  # 1 layer, pooled-query projection to k*D
    glob = 25 * block(2048, 5632)  # k*D_e == D_g: no input projection
    dec = 9 * block(1024, 2816) + 2048 * 2048 + 9 * cross(1024) + 1024 + 1024 * 260
    return enc + glob + dec


def test_1b_parameter_count_matches_reference():
    with torch.device("meta"):
        model = ByteLatentTransformer(BLTConfig.preset("1b"))
    counts = model.parameter_counts()
    assert counts["non_embedding"] == expected_blt_1b_parameters()
    assert counts["hash_embedding"] == 6 * 500002 * 1024
    # The same layout built by transformers' BltForCausalLM (without its bundled patcher).
    from transformers import BltConfig as HFBltConfig
    from transformers import BltForCausalLM

    from blt.interop.hf import hf_config_dict

    hf_cfg = HFBltConfig(**hf_config_dict(BLTConfig.preset("1b")), patch_in_forward=False)
    with torch.device("meta"):
        hf = BltForCausalLM(hf_cfg)
    hf_total = sum(p.numel() for p in hf.parameters())
    assert abs(counts["total"] - hf_total) / hf_total < 0.02


def test_init_is_deterministic_under_seed():
    cfg = micro_config()
    a = ByteLatentTransformer(cfg).init_weights(seed=7).state_dict()
    b = ByteLatentTransformer(cfg).init_weights(seed=7).state_dict()
    c = ByteLatentTransformer(cfg).init_weights(seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_init_scales():
    model = build(BLTConfig.preset("tiny"))
    emb = model.byte_embedding.weight
    assert abs(emb.std().item() - 128**-0.5) < 0.15 * 128**-0.5
    assert emb.abs().max().item() <= 3 * 128**-0.5 + 1e-6  # truncated at 3 std
    w2 = model.global_model.transformer.layers[0].feed_forward.w2.weight
    assert abs(w2.std().item() - w2.shape[1] ** -0.5) < 0.15 * w2.shape[1] ** -0.5


@pytest.mark.parametrize(
    "ids, lengths, message",
    [
        (torch.tensor([[1, 80, 81]]), torch.tensor([[1, 1]]), "sum to 2"),
        (torch.tensor([[1, 80, 81]]), torch.tensor([[2, 1]]), "BOS as a patch of its own"),
        (torch.tensor([[80, 80, 81]]), torch.tensor([[1, 2]]), "BOS as a patch of its own"),
        (torch.tensor([[1, 80, 300]]), torch.tensor([[1, 2]]), "ids must be in"),
        (torch.tensor([[1, 80, 81]]), torch.tensor([[1, 0, 2]]), "only on the right"),
        (torch.tensor([1, 80, 81]), torch.tensor([[1, 2]]), "add a batch dimension"),
        (torch.tensor([[1, 80, 81]]), torch.tensor([[1, 2], [1, 2]]), "B = 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(ids, lengths, message):
    model = build(micro_config())
    with pytest.raises(ValueError, match=message):
        model(ids, lengths)


def test_encoder_and_decoder_width_must_match():
    with pytest.raises(ConfigError, match="must equal decoder.dim"):
        micro_config(decoder=LocalDecoderConfig(dim=64, n_layers=1, n_heads=4))


def test_loss_counts_bytes_and_eos_only():
    logits = torch.zeros(1, 5, 260)
    ids = torch.tensor([[1, 80, 2, 1, 81]])  # targets 80, EOS, BOS (not counted), 81
    per_target = next_byte_loss(logits, ids, reduction="none")
    assert per_target[0, 2] == 0
    torch.testing.assert_close(next_byte_loss(logits, ids), torch.tensor(260.0).log())


def test_overfits_one_batch():
    """`tiny` drives the loss on one fixed batch below 0.05 nats/byte."""
    torch.manual_seed(0)
    cfg = BLTConfig.preset("tiny")
    model = ByteLatentTransformer(cfg).init_weights(seed=0)
    text = [b"The quick brown fox jumps over the lazy dog. " * 2, b"Pack my box with five dozen liquor jugs!! " * 2]
    ids = torch.stack([blt.encode(t[:80]) for t in text])
    gen = torch.Generator().manual_seed(0)
    lengths = lengths_from_mask(random_start_mask(2, ids.shape[1], gen, p=0.25))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(300):
        loss = next_byte_loss(model(ids, lengths), ids)
        if loss.item() < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, f"loss {loss.item():.3f} after {step} steps"
