"""Byteifying: the BLT's global transformer is the token model's blocks, computing what they compute."""

from __future__ import annotations

import pytest
import torch

from blt.baselines.model import TokenLM, TokenModelConfig
from blt.config import BLTConfig
from blt.errors import BLTError
from blt.model.attention import CausalMask
from blt.model.byte_latent import PatchLayout
from blt.pipelines.byteify import byteified_config, byteify, read_token_source
from blt.pipelines.recipes import RunOptions, train_token_model
from blt.tokenizer import BOS_ID
from tests.baselines.conftest import MICRO_TRAIN_SET

transformers = pytest.importorskip("transformers")

BASE = BLTConfig.preset("tiny").with_overrides(["encoder.dim=32", "encoder.n_heads=2", "decoder.dim=32",
                                                 "decoder.n_heads=2", "hash.rows=97", "max_seq_len=64"])


def blocks_output(stack, h: torch.Tensor) -> torch.Tensor:
    """A token model's blocks over states h (1, P, D), one document, causal."""
    rope = stack.rope(torch.arange(h.shape[1]))
    mask = CausalMask(torch.zeros(1, h.shape[1], dtype=torch.long), None)
    for layer in stack.layers:
        h = layer(h, rope, mask)
    return h


def check_global_model_is_the_token_model(source):
    model = byteify(source, BASE, seed=3).eval()
    assert model.cfg.global_model.dim == source.config.dim and model.cfg.encoder == BASE.encoder
    token = TokenLM(source.config).eval()
    token.transformer.load_state_dict(source.blocks)
    P = 10
    ids = torch.full((1, P), 70)
    ids[0, 0] = BOS_ID
    layout = PatchLayout.build(ids, torch.ones(1, P, dtype=torch.long))  # one byte per patch: P patches
    patches = torch.randn(1, P, model.global_model.input_projection.in_features
                          if model.global_model.input_projection is not None else source.config.dim)
    with torch.no_grad():
        h = model.global_model.input_projection(patches) if model.global_model.input_projection is not None else patches
        torch.testing.assert_close(model.global_model(patches, layout), blocks_output(token.transformer, h),
                                   atol=1e-6, rtol=1e-6)


def test_from_a_llama_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=96, vocab_size=300, rope_theta=10000.0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path, safe_serialization=True)
    source = read_token_source(tmp_path)
    assert source.kind == "llama" and source.config.rope_theta == 10000.0 and source.config.n_kv_heads == 2
    assert byteified_config(source, BASE).global_model.ffn_dim == 96
    check_global_model_is_the_token_model(source)


def test_from_a_blt_token_model_run(text_data, tmp_path):
    out = tmp_path / "byte"
    train_token_model(RunOptions(data=text_data.path, out=out, model_overrides=["dim=32", "n_layers=1", "n_heads=2"],
                                 train_overrides=MICRO_TRAIN_SET, steps=2, progress=False), "byte")
    source = read_token_source(out)
    assert source.kind == "token_model" and isinstance(source.config, TokenModelConfig)
    check_global_model_is_the_token_model(source)


def test_what_is_not_a_token_model_is_refused(tmp_path, entropy_run):
    with pytest.raises(BLTError, match="neither a blt token-model run"):
        read_token_source(tmp_path)
    with pytest.raises(BLTError, match="token-model"):
        read_token_source(entropy_run)
