"""`blt convert --from-bytelatent` reads the reference layout.

The reference files are built here from a random transformers BLT by undoing the renames of
transformers' own `convert_blt_weights_to_hf.py` (its `apply_weight_mapping` substitutions, the
``lm_head`` move, the ``model.`` / ``patcher.`` prefixes and the fusing of the hash tables), so the
test checks our reference names against that independent source: the converted run must compute what
the transformers model computes.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blt.config import EntropyModelConfig, PatchingConfig
from blt.errors import CheckpointError
from blt.interop import bytelatent, hf
from blt.interop.bytelatent import blt_config_from_reference, patching_from_reference
from blt.patching import Patcher
from blt.run import load
from tests.helpers import random_ids
from tests.interop.builders import hf_blt_with_patcher, small_config

# transformers name fragment -> reference fragment (the inverse of transformers' apply_weight_mapping).
TO_REFERENCE = {
    ".self_attn.": ".attention.", ".mlp.": ".feed_forward.", ".input_layernorm.": ".attention_norm.",
    ".post_attention_layernorm.": ".ffn_norm.", ".embed_tokens.": ".tok_embeddings.", ".q_norm.": ".cross_attn_norm_q.",
    ".k_norm.": ".cross_attn_norm_kv.", ".gate_proj.": ".w1.", ".down_proj.": ".w2.", ".up_proj.": ".w3.",
    ".q_proj.": ".wq.", ".k_proj.": ".wk.", ".v_proj.": ".wv.", ".o_proj.": ".wo.", ".lm_head.": ".output.",
}

# The reference's ByteLatentTransformerArgs for `small_config(functions=2)` with its patcher.
ARGS = {
    "dim_local_encoder": 32, "n_layers_local_encoder": 1, "n_heads_local_encoder": 4,
    "dim_global": 64, "n_layers_global": 2, "n_heads_global": 4, "n_kv_heads_global": 2,
    "dim_local_decoder": 32, "n_layers_local_decoder": 2, "n_heads_local_decoder": 4,
    "cross_attn_nheads": 4, "cross_attn_k": 2, "cross_attn_all_layers_encoder": False,
    "cross_attn_all_layers_decoder": True, "cross_attn_encoder": True, "cross_attn_decoder": True,
    "cross_attn_init_by_pooling": True, "downsampling_by_pooling": "max", "use_local_encoder_transformer": True,
    "encoder_hash_byte_group_size": "3,4,5,6,7,8", "encoder_hash_byte_group_vocab": 101,
    "encoder_hash_byte_group_nb_functions": 2, "local_attention_window_len": 16, "max_encoder_seq_length": 128,
    "max_seqlen": 128, "rope_theta": 500000.0, "norm_eps": 1e-5, "multiple_of": 256, "ffn_dim_multiplier": 1.0,
    "vocab_size": 260, "patch_in_forward": True, "patching_mode": "entropy", "patching_threshold": 9.0,
}
# The reference builds its entropy model with a 512-byte window, RoPE θ 10000 and no grouped KV.
ENTROPY = EntropyModelConfig(dim=32, n_layers=2, n_heads=4, window=512, rope_theta=10000.0, max_seq_len=128)
ENTROPY_PARAMS = {"dim": 32, "n_layers": 2, "n_heads": 4, "max_seqlen": 128, "ffn_dim_multiplier": 1.0, "vocab_size": 260}
PATCHER_ARGS = {"patching_mode": "entropy", "threshold": 1.5, "threshold_add": None, "monotonicity": False,
                "max_patch_length": None, "patch_size": 4.5}


def reference_tensors(state: dict[str, torch.Tensor], hash_rows: int) -> tuple[dict, dict]:
    """A transformers BLT state dict -> (the reference BLT's tensors, its entropy model's)."""
    blt, entropy = {}, {}
    for name, tensor in state.items():
        for theirs, ours in TO_REFERENCE.items():
            name = name.replace(theirs, ours)
        if name == "lm_head.weight":
            blt["local_decoder.output.weight"] = tensor
        elif name == "model.encoder_hash_tok_embedding.weight":
            for i, table in enumerate(tensor.split(hash_rows)):
                blt[f"encoder_hash_tok_embedding.{i}.weight"] = table.clone()
        elif name.startswith("model.patcher."):
            entropy[name.removeprefix("model.patcher.")] = tensor
        else:
            blt[name.removeprefix("model.")] = tensor
    return blt, entropy


@pytest.mark.parametrize("layout", ["hub", "consolidated"])
def test_from_bytelatent_matches_transformers(layout, tmp_path, convert):
    hf = hf_blt_with_patcher(small_config(functions=2), ENTROPY, threshold=1.5, seed=7)
    blt_tensors, entropy_tensors = reference_tensors(hf.state_dict(), hash_rows=101)
    src, entropy_dir = tmp_path / "blt_1b", tmp_path / "entropy_model"
    src.mkdir()
    entropy_dir.mkdir()
    if layout == "hub":  # config.json {"args"} + model.safetensors; patcher args beside the entropy model
        (src / "config.json").write_text(json.dumps({"args": ARGS}))
        save_file(blt_tensors, src / "model.safetensors")
        (entropy_dir / "params.json").write_text(json.dumps({"entropy_model": ENTROPY_PARAMS,
                                                             "data": {"patcher_args": PATCHER_ARGS}}))
    else:  # params.json (TrainArgs) + consolidated.pth
        (src / "params.json").write_text(json.dumps({"model": ARGS, "data": {"patcher_args": PATCHER_ARGS}}))
        torch.save({"model": blt_tensors}, src / "consolidated.pth")
        (entropy_dir / "params.json").write_text(json.dumps({"entropy_model": ENTROPY_PARAMS}))
    torch.save({"model": entropy_tensors}, entropy_dir / "consolidated.pth")

    code, _, err = convert("--from-bytelatent", src, "--entropy-model", entropy_dir, "--out", tmp_path / "run")
    assert code == 0, err
    run = load(tmp_path / "run")
    assert run.config.patching == PatchingConfig(mode="entropy", threshold=1.5)
    ids = random_ids(1, 48, torch.Generator().manual_seed(8))
    with torch.no_grad():
        hf_entropies, _, _ = hf.model.patcher(ids)
        torch.testing.assert_close(run.entropy_model.entropies(ids), hf_entropies, atol=1e-4, rtol=0)
        lengths = Patcher(run.config.patching, run.entropy_model)(ids)
        expected = hf(input_ids=ids, patch_lengths=lengths, use_cache=False).logits
        torch.testing.assert_close(run.model(ids, lengths), expected, atol=1e-4, rtol=1e-4)


def test_reference_patcher_args_map_to_our_modes():
    assert patching_from_reference({"threshold": 2.0, "monotonicity": True}) == PatchingConfig(mode="monotonic", threshold=2.0)
    assert patching_from_reference({"threshold": 2.0, "threshold_add": 0.3, "max_patch_length": 8}) == PatchingConfig(
        mode="combined", threshold=2.0, relative_threshold=0.3, max_patch_length=8)
    assert patching_from_reference({}) == PatchingConfig(mode="entropy", threshold=1.335442066192627)
    assert patching_from_reference({"patching_mode": "space"}).mode == "space"
    with pytest.raises(CheckpointError, match="bpe_patcher"):
        patching_from_reference({"patching_mode": "bpe_patcher"})


@pytest.mark.parametrize("change, message", [
    ({"cross_attn_init_by_pooling": False}, "cross_attn_init_by_pooling"),
    ({"cross_attn_nheads": 2}, "cross_attn_nheads"),
    ({"encoder_hash_byte_group_size": None}, "hash n-gram"),
    ({"dim_global": "wide"}, "malformed"),
])
def test_unsupported_reference_configs_are_refused(change, message):
    with pytest.raises(CheckpointError, match=message):
        blt_config_from_reference({**ARGS, **change}, PATCHER_ARGS)


def test_missing_reference_files_are_refused_with_one_line(tmp_path: Path, convert):
    (tmp_path / "src").mkdir()
    code, _, err = convert("--from-bytelatent", tmp_path / "src", "--out", tmp_path / "run")
    assert code == 2 and "neither config.json" in err and err.count("\n") == 1
    (tmp_path / "src" / "params.json").write_text(json.dumps({"model": ARGS}))
    torch.save({"model": {"x": torch.zeros(1)}, "step": object()}, tmp_path / "src" / "consolidated.pth")
    code, _, err = convert("--from-bytelatent", tmp_path / "src", "--out", tmp_path / "run")
    assert code == 2 and "holds more than tensors" in err and err.count("\n") == 1


def test_name_table_examples():
    assert doctest.testmod(bytelatent).failed == 0 and doctest.testmod(hf).failed == 0
