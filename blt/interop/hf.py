"""The `transformers` BltForCausalLM layout: config translation and tensor-name tables, both directions.

Pure functions over dicts: no `transformers` import is needed to convert, only to check. The BLT maps to
``model.local_encoder`` / ``model.global_transformer`` / ``model.local_decoder`` / ``lm_head`` and our
entropy model to the bundled patcher ``model.patcher`` (a ``BltPatcher``, configured by
``patcher_config`` and used when ``patch_in_forward`` is true).

Real differences between the two implementations (documented where they matter):
- transformers' local models and patcher do not mask attention at document boundaries (EOS); ours do.
- transformers' decoder lets the last byte of a *right-padded* row read the final patch's state, an
  unpadded row's last byte reads the previous patch; ours always does the latter (batch-independent).
- transformers' encoder with cross-attention after every layer re-pools the queries at each layer;
  ours, like the reference `bytelatent`, pools once and accumulates (identical with one encoder layer,
  which is what released checkpoints use).
- transformers' patcher (`BltPatcher.patch_lengths_from_entropies`) uses the same rule as our global
  threshold (byte ``i + 1`` starts a patch when ``H_i > θ``; BOS alone; byte 1 always starts), but it
  also applies the rule to the last entropy: when ``H_{T-1} > θ`` it appends a zero-length patch for
  the byte that would follow. With no `max_patch_length` that empty patch stays, and the decoder then
  treats it like right padding: the row's last byte reads its own (just completed) patch, where ours
  reads the previous one — the logits of the last byte differ, all others agree. With a batch of rows
  it pads rows that have fewer patches with wrong lengths (the last real patch one byte too long,
  a final length of -1); use it one row at a time.
- transformers' patcher only patches with a global threshold. Runs that patch otherwise are exported
  without it (``patch_in_forward`` false); their mode and thresholds are kept in the config under
  ``patching_mode`` and, for combined mode, ``patching_threshold_add`` (the key transformers' own
  converter writes for the reference's θ_r). transformers ignores ``patching_threshold_add`` and
  ``monotonicity`` when it patches; so do we when reading mode ``entropy``.
"""

from __future__ import annotations

from typing import Any

import torch

from blt.config import (
    PATCHING_MODES,
    RELEASED_THRESHOLD,
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
    PatchingConfig,
    TransformerConfig,
)
from blt.errors import CheckpointError
from blt.interop._errors import foreign_config
from blt.interop.names import NameTable
from blt.tokenizer import VOCAB_SIZE

PATCHER_PREFIX = "model.patcher."

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
_ENTROPY_SINGLE = {  # our entropy model -> the patcher's names under PATCHER_PREFIX
    "embedding.weight": "embed_tokens.weight",
    "norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}


HF_NAMES = NameTable(
    layout="transformers", single=_SINGLE, stages=_STAGES, block=_BLOCK, cross=_CROSS,
    entropy_single={k: PATCHER_PREFIX + v for k, v in _ENTROPY_SINGLE.items()}, entropy_layers=PATCHER_PREFIX + "layers.",
)


def hf_name(name: str) -> str:
    """Our parameter name -> the transformers name. Raises CheckpointError for a name with no counterpart."""
    return HF_NAMES.blt(name)


def hf_entropy_name(name: str) -> str:
    """Our entropy-model parameter name -> the name of the patcher's tensor in a BltForCausalLM checkpoint.

    >>> hf_entropy_name("transformer.layers.3.feed_forward.w1.weight")
    'model.patcher.layers.3.mlp.gate_proj.weight'
    """
    return HF_NAMES.entropy(name)


def _stack_dict(c: TransformerConfig) -> dict[str, Any]:
    """The fields every transformers BLT sub-config shares, for one of our transformer stacks."""
    return {
        "hidden_size": c.dim, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.kv_heads, "intermediate_size": c.hidden_dim, "rms_norm_eps": c.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
    }


def _stack_fields(c: dict[str, Any], default_theta: float) -> dict[str, Any]:
    """A transformers sub-config -> our TransformerConfig fields (reads old ``rope_theta`` configs too)."""
    rope = c.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise CheckpointError(f"transformers config uses rope_type {rope['rope_type']!r}; blt has only the default RoPE")
    if c.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"transformers config uses hidden_act {c['hidden_act']!r}; blt's blocks use silu (SwiGLU)")
    return {
        "dim": c["hidden_size"], "n_layers": c["num_hidden_layers"], "n_heads": c["num_attention_heads"],
        "n_kv_heads": c.get("num_key_value_heads"), "ffn_dim": c.get("intermediate_size"),
        "norm_eps": c.get("rms_norm_eps", 1e-5), "rope_theta": rope.get("rope_theta", c.get("rope_theta", default_theta)),
    }


def hf_config_dict(cfg: BLTConfig) -> dict[str, Any]:
    """Keyword arguments for `transformers.BltConfig` describing the same model (without a patcher)."""
    enc, glob, dec = cfg.encoder, cfg.global_model, cfg.decoder
    if enc.window != dec.window:
        raise CheckpointError(
            f"transformers' BLT has one local window for encoder and decoder; ours differ ({enc.window} vs {dec.window})"
        )

    k = cfg.cross_attn_k
    return {
        "encoder_config": {**_stack_dict(enc), "cross_attn_all_layers": enc.cross_attn_all_layers, "cross_attn_k": k,
                           "hidden_size_global": glob.dim, "max_position_embeddings": cfg.max_seq_len},
        "global_config": {**_stack_dict(glob), "max_position_embeddings": cfg.max_patches or cfg.max_seq_len},
        "decoder_config": {**_stack_dict(dec), "cross_attn_all_layers": dec.cross_attn_all_layers, "cross_attn_k": k,
                           "hidden_size_global": glob.dim, "max_position_embeddings": cfg.max_seq_len},
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
    """A transformers BLT `config.json` (as a dict) -> our BLTConfig, patching included.

    Raises CheckpointError when a key is missing or the config describes something blt cannot build.
    """
    with foreign_config("transformers BLT config"):
        window = hf.get("local_attention_window_len", 512)
        k = hf.get("cross_attn_k", 2)
        enc, glob, dec = hf["encoder_config"], hf["global_config"], hf["decoder_config"]
        for name, sub in (("encoder_config", enc), ("decoder_config", dec)):
            if sub.get("cross_attn_k", k) != k:
                raise CheckpointError(f"transformers config: {name}.cross_attn_k = {sub['cross_attn_k']} differs from "
                                      f"cross_attn_k = {k}; blt has one cross_attn_k")
            if sub.get("hidden_size_global", glob["hidden_size"]) != glob["hidden_size"]:
                raise CheckpointError(f"transformers config: {name}.hidden_size_global = {sub['hidden_size_global']} "
                                      f"differs from global_config.hidden_size = {glob['hidden_size']}")
        if hf.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
            raise CheckpointError(f"transformers config has vocab_size {hf['vocab_size']}; "
                                  f"BLT uses {VOCAB_SIZE} (bytes + 4 specials)")
        return BLTConfig(
            encoder=LocalEncoderConfig(**_stack_fields(enc, 500000.0), window=window,
                                       cross_attn_all_layers=enc.get("cross_attn_all_layers", False)),
            global_model=GlobalConfig(**_stack_fields(glob, 500000.0)),
            decoder=LocalDecoderConfig(**_stack_fields(dec, 500000.0), window=window,
                                       cross_attn_all_layers=dec.get("cross_attn_all_layers", True)),
            hash=HashEmbeddingConfig(
                ngram_sizes=tuple(hf.get("encoder_hash_byte_group_size") or (3, 4, 5, 6, 7, 8)),
                num_functions=hf.get("encoder_hash_byte_group_nb_functions", 1),
                rows=hf.get("encoder_hash_byte_group_vocab", 500002),
            ),
            patching=patching_from_hf(hf),
            cross_attn_k=k,
            max_seq_len=enc.get("max_position_embeddings", 24576),
            max_patches=glob.get("max_position_embeddings"),
        )


def patching_from_hf(hf: dict[str, Any]) -> PatchingConfig:
    """Our patching config from a transformers BLT config's ``patching_*`` fields (see the module notes)."""
    mode = hf.get("patching_mode") or "entropy"
    if mode not in PATCHING_MODES:
        raise CheckpointError(f"transformers config has patching_mode {mode!r}; blt knows {list(PATCHING_MODES)}")
    entropy_modes = ("entropy", "monotonic", "combined")
    patch_size = hf.get("patch_size")
    return PatchingConfig(
        mode=mode,
        threshold=float(hf.get("patching_threshold", RELEASED_THRESHOLD)) if mode in entropy_modes else None,
        relative_threshold=hf.get("patching_threshold_add") if mode == "combined" else None,
        max_patch_length=hf.get("max_patch_length"),
        patch_size=patch_size if isinstance(patch_size, int) and patch_size >= 1 else 4,
    )


def hf_patching_dict(patching: PatchingConfig) -> dict[str, Any]:
    """The ``patching_*`` fields of a transformers BLT config for our patching config (inverse of
    `patching_from_hf`). An entropy mode needs a threshold: calibrate one first."""
    out: dict[str, Any] = {"patching_mode": patching.mode, "patch_size": patching.patch_size,
                           "max_patch_length": patching.max_patch_length}
    if patching.uses_entropy_model:
        if patching.threshold is None or (patching.mode == "combined" and patching.relative_threshold is None):
            raise CheckpointError(f"the run's {patching.mode} patching has no threshold yet (target_patch_size="
                                  f"{patching.target_patch_size}); give one (blt convert --to-hf RUN --threshold NATS)")
        out["patching_threshold"] = patching.threshold
    if patching.mode == "combined":
        out["patching_threshold_add"] = patching.relative_threshold
    return out


def hf_patcher_config_dict(cfg: EntropyModelConfig) -> dict[str, Any]:
    """``patcher_config`` of a transformers BLT config describing our entropy model."""
    return {**_stack_dict(cfg), "sliding_window": cfg.window, "max_position_embeddings": cfg.max_seq_len,
            "vocab_size": cfg.vocab_size}


def entropy_config_from_hf(patcher: dict[str, Any]) -> EntropyModelConfig:
    """A transformers ``patcher_config`` (dict) -> our EntropyModelConfig (transformers' default RoPE θ
    for the patcher is 10000)."""
    with foreign_config("transformers patcher_config"):
        if patcher.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
            raise CheckpointError(f"transformers patcher_config has vocab_size {patcher['vocab_size']}; "
                                  f"BLT uses {VOCAB_SIZE}")
        return EntropyModelConfig(**_stack_fields(patcher, 10000.0), window=patcher.get("sliding_window", 512),
                                  max_seq_len=patcher.get("max_position_embeddings", 8192))


def hf_model_config(cfg: BLTConfig, entropy_cfg: EntropyModelConfig | None) -> dict[str, Any]:
    """A complete BltForCausalLM ``config.json``: the model, its patching and, with ``entropy_cfg``, the
    bundled patcher (``patch_in_forward``), which transformers can use only for global-threshold patching."""
    if entropy_cfg is not None and cfg.patching.mode != "entropy":
        raise CheckpointError("transformers' patcher patches only with a global threshold, "
                              f"not mode {cfg.patching.mode!r}")
    config = {"architectures": ["BltForCausalLM"], "model_type": "blt", **hf_config_dict(cfg),
              **hf_patching_dict(cfg.patching), "patch_in_forward": entropy_cfg is not None}
    if entropy_cfg is not None:
        config["patcher_config"] = hf_patcher_config_dict(entropy_cfg)
    return config


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> transformers names (same tensors, no copies)."""
    return {hf_name(name): tensor for name, tensor in state.items()}


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers tensors -> our names, checked against our model's expected names and shapes.

    Refuses (CheckpointError) on missing, unknown or mis-shaped tensors instead of loading partially.
    Tensors of a bundled patcher (``model.patcher.*``) are ignored here: they belong to the entropy model.
    """
    wanted = {hf_name(name): name for name in expected}
    present = {k for k in hf_state if not k.startswith(PATCHER_PREFIX)}
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
