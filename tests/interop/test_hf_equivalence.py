"""Our model equals transformers' BltForCausalLM on the same weights, input and patch lengths (fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import BltConfig as HFBltConfig
from transformers import BltForCausalLM

from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
)
from blt.errors import CheckpointError
from blt.interop.convert import expected_shapes
from blt.interop.hf import (
    blt_config_from_hf,
    from_hf_state_dict,
    hf_config_dict,
    hf_entropy_name,
    hf_model_config,
    hf_name,
    to_hf_state_dict,
)
from blt.model import ByteLatentTransformer
from blt.patching import EntropyModel
from tests.helpers import lengths_from_mask, random_ids, random_start_mask


def config(k=2, enc_layers=1, enc_all=False, dec_all=True, functions=1, enc_dim=32, glob_dim=64, window=16):
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=enc_dim, n_layers=enc_layers, n_heads=4, window=window, cross_attn_all_layers=enc_all),
        global_model=GlobalConfig(dim=glob_dim, n_layers=2, n_heads=4, n_kv_heads=2),
        decoder=LocalDecoderConfig(dim=enc_dim, n_layers=2, n_heads=4, window=window, cross_attn_all_layers=dec_all),
        hash=HashEmbeddingConfig(rows=101, num_functions=functions),
        cross_attn_k=k,
        max_seq_len=128,
    )


CASES = {
    "k=2, one hash function": config(),
    "k=1, two hash functions, decoder cross-attn first layer only": config(k=1, functions=2, dec_all=False),
    "k=4, encoder width != global width, encoder cross-attn every layer": config(k=4, enc_all=True, glob_dim=48),
    "k=2, two encoder layers, full causal": config(enc_layers=2, window=None, glob_dim=64),
}


def hf_model(cfg: BLTConfig, seed: int) -> BltForCausalLM:
    torch.manual_seed(seed)
    hf_cfg = HFBltConfig(**hf_config_dict(cfg), patch_in_forward=False)
    hf_cfg._attn_implementation = "sdpa"
    return BltForCausalLM(hf_cfg).eval()


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(name):
    cfg = CASES[name]
    hf = hf_model(cfg, seed=0)
    ours = ByteLatentTransformer(cfg).eval()
    ours.load_state_dict(from_hf_state_dict(hf.state_dict(), ours.state_dict()), strict=True)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        ids = random_ids(1, 48, gen)  # one row: transformers' decoder ids depend on right padding
        lengths = lengths_from_mask(random_start_mask(1, 48, gen, p=0.3))
        with torch.no_grad():
            expected = hf(input_ids=ids, patch_lengths=lengths, use_cache=False).logits
            got = ours(ids, lengths)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_round_trip_is_bit_exact():
    cfg = config(k=4, functions=2, glob_dim=48)
    ours = ByteLatentTransformer(cfg).init_weights(seed=1)
    hf = hf_model(cfg, seed=2)
    hf.load_state_dict(to_hf_state_dict(ours.state_dict()), strict=True)
    back = ByteLatentTransformer(blt_config_from_hf(hf.config.to_dict()))
    back.load_state_dict(from_hf_state_dict(hf.state_dict(), back.state_dict()), strict=True)
    a, b = ours.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The configs describe the same model (defaults such as n_kv_heads=None come back resolved).
    assert hf_config_dict(blt_config_from_hf(hf.config.to_dict())) == hf_config_dict(cfg.replace(max_patches=128))


def test_encoder_cross_attention_every_layer_differs_as_documented():
    """With >1 encoder layers and cross-attention after each, transformers re-pools the queries at every
    layer while we (like the reference bytelatent) pool once and accumulate: the outputs differ."""
    cfg = config(enc_layers=2, enc_all=True)
    hf = hf_model(cfg, seed=0)
    ours = ByteLatentTransformer(cfg).eval()
    ours.load_state_dict(from_hf_state_dict(hf.state_dict(), ours.state_dict()), strict=True)
    gen = torch.Generator().manual_seed(0)
    ids = random_ids(1, 32, gen)
    lengths = lengths_from_mask(random_start_mask(1, 32, gen, p=0.3))
    with torch.no_grad():
        diff = (hf(input_ids=ids, patch_lengths=lengths, use_cache=False).logits - ours(ids, lengths)).abs().max()
    assert diff > 1e-3


def test_mismatched_checkpoint_is_refused():
    cfg = config()
    hf = hf_model(cfg, seed=0)
    ours = ByteLatentTransformer(cfg.replace(hash=HashEmbeddingConfig(rows=103)))
    with pytest.raises(CheckpointError, match="shape"):
        from_hf_state_dict(hf.state_dict(), ours.state_dict())
    state = dict(hf.state_dict())
    state.pop("lm_head.weight")
    with pytest.raises(CheckpointError, match="missing"):
        from_hf_state_dict(state, ByteLatentTransformer(cfg).state_dict())


def test_released_1b_layout_matches_transformers():
    """Every tensor of the 1B preset and the released patcher has its transformers name and shape
    (both models built on the meta device, so nothing is allocated)."""
    cfg, entropy_cfg = BLTConfig.preset("1b"), EntropyModelConfig.preset("released")
    with torch.device("meta"):
        hf = BltForCausalLM(HFBltConfig(**hf_model_config(cfg, entropy_cfg)))
    theirs = {name: tuple(t.shape) for name, t in hf.state_dict().items()}
    ours = {hf_name(n): shape for n, shape in expected_shapes(ByteLatentTransformer, cfg).items()}
    ours |= {hf_entropy_name(n): shape for n, shape in expected_shapes(EntropyModel, entropy_cfg).items()}
    assert ours == theirs
