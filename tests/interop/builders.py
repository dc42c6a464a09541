"""Builders shared by the interop tests: small configs and random transformers BLTs with a patcher."""

from __future__ import annotations

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
from blt.interop.hf import hf_config_dict, hf_patcher_config_dict

# Scales the patcher's output layer so that random entropies spread over ~0.3-3 nats instead of
# clustering just below log(260): patch boundaries then depend on the input.
PATCHER_LOGIT_SCALE = 4.0


def small_config(k: int = 2, functions: int = 1, dec_all: bool = True, enc_dim: int = 32, glob_dim: int = 64,
                 window: int | None = 16) -> BLTConfig:
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=enc_dim, n_layers=1, n_heads=4, window=window),
        global_model=GlobalConfig(dim=glob_dim, n_layers=2, n_heads=4, n_kv_heads=2),
        decoder=LocalDecoderConfig(dim=enc_dim, n_layers=2, n_heads=4, window=window, cross_attn_all_layers=dec_all),
        hash=HashEmbeddingConfig(rows=101, num_functions=functions),
        cross_attn_k=k,
        max_seq_len=128,
    )


def small_entropy_config(window: int | None = 8) -> EntropyModelConfig:
    return EntropyModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, window=window, max_seq_len=128)


def hf_blt_with_patcher(cfg: BLTConfig, entropy_cfg: EntropyModelConfig, threshold: float, seed: int,
                        max_patch_length: int | None = None) -> BltForCausalLM:
    """A random transformers BLT that patches in its forward with a bundled patcher (fp32, sdpa)."""
    torch.manual_seed(seed)
    hf_cfg = HFBltConfig(**hf_config_dict(cfg), patch_in_forward=True, patcher_config=hf_patcher_config_dict(entropy_cfg),
                         patching_threshold=threshold, max_patch_length=max_patch_length)
    hf_cfg._attn_implementation = "sdpa"
    model = BltForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        model.model.patcher.lm_head.weight.mul_(PATCHER_LOGIT_SCALE)
    return model
