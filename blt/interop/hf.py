"""The `transformers` BltForCausalLM layout: config translation and a tensor-name table, both directions.

Pure functions over dicts of tensors: no `transformers` import is needed to convert, only to check.
Real differences between the two implementations (documented where they matter):
- transformers' local models do not mask attention at document boundaries (EOS); ours do.
- transformers' decoder lets the last byte of a *right-padded* row read the final patch's state, an
  unpadded row's last byte reads the previous patch; ours always does the latter (batch-independent).
- transformers' encoder with cross-attention after every layer re-pools the queries at each layer;
  ours, like the reference `bytelatent`, pools once and accumulates (identical with one encoder layer,
  which is what released checkpoints use).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from blt.config import BLTConfig, GlobalConfig, HashEmbeddingConfig, LocalDecoderConfig, LocalEncoderConfig
from blt.errors import CheckpointError

# Our name pattern -> transformers name pattern (prefix included). {i} is a layer index.
_BLOCK = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
_CROSS = {
    "query_norm.weight": "q_norm.weight",
    "kv_norm.weight": "k_norm.weight",
    "wq.weight": "q_proj.weight",
    "wk.weight": "k_proj.weight",
    "wv.weight": "v_proj.weight",
    "wo.weight": "o_proj.weight",
}
_STAGES = {"encoder": "model.local_encoder", "global_model": "model.global_transformer", "decoder": "model.local_decoder"}
_SINGLE = {
    "byte_embedding.weight": "model.local_encoder.embed_tokens.weight",
    "hash_embedding.table.weight": "model.encoder_hash_tok_embedding.weight",
    "encoder.patch_query_projection.weight": "model.local_encoder.patch_embedding_projection.weight",
    "global_model.input_projection.weight": "model.global_transformer.token_embedding_projection.weight",
    "decoder.patch_projection.weight": "model.local_decoder.patch_embedding_projection.weight",
    "decoder.norm.weight": "model.local_decoder.norm.weight",
    "decoder.output.weight": "lm_head.weight",
}


def hf_name(name: str) -> str:
    """Our parameter name -> the transformers name. Raises CheckpointError for a name with no counterpart."""
    if name in _SINGLE:
        return _SINGLE[name]
    m = re.fullmatch(r"(encoder|global_model|decoder)\.transformer\.layers\.(\d+)\.(.+)", name)
    if m and m.group(3) in _BLOCK:
        return f"{_STAGES[m.group(1)]}.layers.{m.group(2)}.{_BLOCK[m.group(3)]}"
    m = re.fullmatch(r"(encoder|decoder)\.cross_attn_layers\.(\d+)\.(.+)", name)
    if m and m.group(3) in _CROSS:
        return f"{_STAGES[m.group(1)]}.cross_attn_layers.{m.group(2)}.{_CROSS[m.group(3)]}"
    raise CheckpointError(f"no transformers name for parameter {name!r}")


def hf_config_dict(cfg: BLTConfig) -> dict[str, Any]:
    """Keyword arguments for `transformers.BltConfig` describing the same model (without a patcher)."""
    enc, glob, dec = cfg.encoder, cfg.global_model, cfg.decoder
    if enc.window != dec.window:
        raise CheckpointError(
            f"transformers' BLT has one local window for encoder and decoder; ours differ ({enc.window} vs {dec.window})"
        )

    def stack(c, **extra):
        return {
            "hidden_size": c.dim, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.kv_heads, "intermediate_size": c.hidden_dim, "rms_norm_eps": c.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta}, **extra,
        }

    k = cfg.cross_attn_k
    return {
        "encoder_config": stack(enc, cross_attn_all_layers=enc.cross_attn_all_layers, cross_attn_k=k,
                                hidden_size_global=glob.dim, max_position_embeddings=cfg.max_seq_len),
        "global_config": stack(glob, max_position_embeddings=cfg.max_patches or cfg.max_seq_len),
        "decoder_config": stack(dec, cross_attn_all_layers=dec.cross_attn_all_layers, cross_attn_k=k,
                                hidden_size_global=glob.dim, max_position_embeddings=cfg.max_seq_len),
        "cross_attn_k": k,
        "local_attention_window_len": enc.window,
        "encoder_hash_byte_group_size": list(cfg.hash.ngram_sizes),
        "encoder_hash_byte_group_vocab": cfg.hash.rows,
        "encoder_hash_byte_group_nb_functions": cfg.hash.num_functions,
        "max_position_embeddings": cfg.max_patches or cfg.max_seq_len,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": False,
    }


def blt_config_from_hf(hf: dict[str, Any]) -> BLTConfig:
    """A transformers BLT `config.json` (as a dict) -> our BLTConfig."""
    try:
        window = hf.get("local_attention_window_len", 512)
        k = hf.get("cross_attn_k", 2)

        def stack(c):
            rope = c.get("rope_parameters") or {}
            return {
                "dim": c["hidden_size"], "n_layers": c["num_hidden_layers"], "n_heads": c["num_attention_heads"],
                "n_kv_heads": c.get("num_key_value_heads"), "ffn_dim": c.get("intermediate_size"),
                "norm_eps": c.get("rms_norm_eps", 1e-5), "rope_theta": rope.get("rope_theta", c.get("rope_theta", 500000.0)),
            }

        enc, glob, dec = hf["encoder_config"], hf["global_config"], hf["decoder_config"]
        return BLTConfig(
            encoder=LocalEncoderConfig(**stack(enc), window=window, cross_attn_all_layers=enc.get("cross_attn_all_layers", False)),
            global_model=GlobalConfig(**stack(glob)),
            decoder=LocalDecoderConfig(**stack(dec), window=window, cross_attn_all_layers=dec.get("cross_attn_all_layers", True)),
            hash=HashEmbeddingConfig(
                ngram_sizes=tuple(hf.get("encoder_hash_byte_group_size") or (3, 4, 5, 6, 7, 8)),
                num_functions=hf.get("encoder_hash_byte_group_nb_functions", 1),
                rows=hf.get("encoder_hash_byte_group_vocab", 500002),
            ),
            cross_attn_k=k,
            max_seq_len=enc.get("max_position_embeddings", 24576),
            max_patches=glob.get("max_position_embeddings"),
        )
    except KeyError as err:
        raise CheckpointError(f"transformers BLT config lacks {err.args[0]!r}; is this a BltForCausalLM config.json?") from None


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> transformers names (same tensors, no copies)."""
    return {hf_name(name): tensor for name, tensor in state.items()}


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers tensors -> our names, checked against our model's expected names and shapes.

    Refuses (CheckpointError) on missing, unknown or mis-shaped tensors instead of loading partially.
    Tensors of a bundled patcher (``model.patcher.*``) are ignored here: they belong to the entropy model.
    """
    wanted = {hf_name(name): name for name in expected}
    present = {k for k in hf_state if not k.startswith("model.patcher.")}
    missing = sorted(set(wanted) - present)
    unknown = sorted(present - set(wanted))
    if missing or unknown:
        raise CheckpointError(f"checkpoint does not match the config: missing {missing[:5]}, unknown {unknown[:5]}")
    out = {}
    for hf_key, ours in wanted.items():
        tensor = hf_state[hf_key]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise CheckpointError(f"{hf_key} has shape {tuple(tensor.shape)}, the config expects {tuple(expected[ours].shape)}")
        out[ours] = tensor
    return out
