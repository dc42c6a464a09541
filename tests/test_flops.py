"""FLOP accounting: hand counts, every weight matrix counted at its rate, the 6N rule, patch-size scaling,
parameter counts of the 1b preset, the token baselines and model costs, and the `blt flops` command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from blt.baselines import TokenLM, TokenModelConfig
from blt.cli import main
from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
    PatchingConfig,
)
from blt.errors import ConfigError
from blt.flops import (
    blt_cost,
    blt_flops,
    blt_parameter_counts,
    default_patch_size,
    entropy_model_flops,
    entropy_model_parameter_counts,
    mean_attended_keys,
    token_model_cost,
    token_model_flops,
)
from blt.model import ByteLatentTransformer
from blt.model.layers import TransformerStack


def _hand_config() -> BLTConfig:
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=8, n_layers=1, n_heads=2, ffn_dim=16, window=4),
        global_model=GlobalConfig(dim=32, n_layers=1, n_heads=2, ffn_dim=64),
        decoder=LocalDecoderConfig(dim=8, n_layers=1, n_heads=2, ffn_dim=16, window=4),
        hash=HashEmbeddingConfig(rows=16),
        cross_attn_k=2,
        max_seq_len=8,
    )


def test_hand_count_of_a_tiny_config():
    # T = 8 bytes, p = 2 -> P = 4 patches, k = 2, D_e = D_d = 8, D_g = 32, window 4.
    f = blt_flops(_hand_config(), patch_size=2, seq_len=8)
    c = f.components
    block_8 = 2 * (4 * 8 * 8 + 3 * 8 * 16)  # q, k, v, o and SwiGLU of one block of width 8
    window_keys = (1 + 2 + 3 + 4 + 4 + 4 + 4 + 4) / 8  # keys per query, window 4 over 8 bytes
    assert c["local_encoder"].weights == block_8 == 1280
    assert c["local_encoder"].attention == 4 * 8 * window_keys == 104
    # Pooled patch -> 2 slots (once per patch), q and o per slot (2 slots per 2 bytes), k and v per byte.
    assert c["encoder_cross_attention"].weights == 2 * 8 * 16 / 2 + (2 / 2) * 2 * 2 * 64 + 2 * 2 * 64 == 640
    assert c["encoder_cross_attention"].attention == (2 / 2) * 4 * 8 * 2 == 64  # each slot sees its 2 bytes
    # Global, per patch: input projection 16 -> 32 and one block of width 32; causal over 4 patches.
    assert c["global"].weights == (2 * 16 * 32 + 2 * (4 * 32 * 32 + 3 * 32 * 64)) / 2 == 10752
    assert c["global"].attention == 4 * 32 * ((1 + 2 + 3 + 4) / 4) / 2 == 160
    # Global state -> 2 slots (once per patch), q and o per byte, k and v per slot.
    assert c["decoder_cross_attention"].weights == 2 * 32 * 16 / 2 + 2 * 2 * 64 + (2 / 2) * 2 * 2 * 64 == 1024
    assert c["decoder_cross_attention"].attention == 4 * 8 * 2 == 64  # each byte sees 2 slots
    assert c["local_decoder"].weights == 1280 and c["local_decoder"].attention == 104
    assert c["lm_head"].weights == 2 * 8 * 260 and c["lm_head"].attention == 0
    assert f.forward == 1280 + 104 + 640 + 64 + 10752 + 160 + 1024 + 64 + 1280 + 104 + 4160 == 19632
    assert f.training == 3 * 19632


@pytest.mark.parametrize("n", [1, 7, 8, 100])
@pytest.mark.parametrize("window", [None, 1, 4, 8, 512])
def test_mean_attended_keys_counts_what_a_windowed_causal_mask_allows(n, window):
    allowed = [min(i + 1, window or n) for i in range(n)]
    assert mean_attended_keys(n, window) == pytest.approx(sum(allowed) / n)


def _weight_rate(name: str, k: int, p: float) -> tuple[str, float]:
    """(component, applications per byte) of a weight matrix of `ByteLatentTransformer`, from where it sits."""
    if name.startswith(("byte_embedding.", "hash_embedding.")):
        return "embedding", 0.0
    if name.startswith("encoder.transformer."):
        return "local_encoder", 1.0
    if name.startswith("encoder.patch_query_projection."):
        return "encoder_cross_attention", 1 / p
    if name.startswith("encoder.cross_attn_layers."):
        return "encoder_cross_attention", k / p if (".wq." in name or ".wo." in name) else 1.0
    if name.startswith("global_model."):
        return "global", 1 / p
    if name.startswith("decoder.patch_projection."):
        return "decoder_cross_attention", 1 / p
    if name.startswith("decoder.cross_attn_layers."):
        return "decoder_cross_attention", 1.0 if (".wq." in name or ".wo." in name) else k / p
    if name.startswith("decoder.transformer."):
        return "local_decoder", 1.0
    if name.startswith("decoder.output."):
        return "lm_head", 1.0
    raise AssertionError(f"no rate for {name}")


@pytest.mark.parametrize("all_layers", [False, True])
def test_weight_terms_count_every_weight_matrix_of_the_model_once(all_layers):
    cfg = BLTConfig(
        encoder=LocalEncoderConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, window=16, cross_attn_all_layers=all_layers),
        global_model=GlobalConfig(dim=48, n_layers=3, n_heads=4),
        decoder=LocalDecoderConfig(dim=32, n_layers=3, n_heads=4, window=16, cross_attn_all_layers=all_layers),
        hash=HashEmbeddingConfig(rows=64),
        cross_attn_k=3,
        max_seq_len=64,
    )
    p = 3.7
    with torch.device("meta"):
        model = ByteLatentTransformer(cfg)
    expected: dict[str, float] = {}
    for name, param in model.named_parameters():
        if param.dim() == 2:  # weight matrices; RMSNorm scales cost no matmul
            component, rate = _weight_rate(name, cfg.cross_attn_k, p)
            expected[component] = expected.get(component, 0.0) + 2 * param.numel() * rate
    assert expected.pop("embedding") == 0.0
    got = {name: c.weights for name, c in blt_flops(cfg, patch_size=p).components.items()}
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cfg", [
    GlobalConfig(dim=256, n_layers=4, n_heads=4),
    GlobalConfig(dim=2048, n_layers=25, n_heads=16, n_kv_heads=4, ffn_dim=5632),
], ids=["256x4", "2048x25-gqa"])
def test_training_flops_follow_the_6n_rule(cfg):
    vocab = 260
    with torch.device("meta"):
        stack, head = TransformerStack(cfg), nn.Linear(cfg.dim, vocab, bias=False)
    n_params = sum(p.numel() for p in stack.parameters()) + head.weight.numel()  # non-embedding, norms included
    per_token = token_model_flops(cfg, vocab, bytes_per_token=1.0, seq_len=2048)
    assert 3 * per_token.weights == pytest.approx(6 * n_params, rel=1e-3)  # norms are the only difference
    # Attention adds 4 * D * (T + 1) / 2 per layer (≈ 2 * n_layers * T * d, docs/design.md §6).
    assert per_token.attention == cfg.n_layers * 4 * cfg.dim * (2048 + 1) / 2
    per_byte = token_model_flops(cfg, vocab, bytes_per_token=4.4, seq_len=2048)
    assert per_byte.forward * 4.4 == pytest.approx(per_token.forward)
    with pytest.raises(ConfigError, match="bytes per token must be >= 1"):
        token_model_flops(cfg, vocab, bytes_per_token=0.5, seq_len=2048)


def test_entropy_model_flops_are_twice_its_non_embedding_parameters_plus_attention():
    cfg = EntropyModelConfig.preset("released")
    f = entropy_model_flops(cfg, seq_len=8192)
    assert f.weights == pytest.approx(2 * entropy_model_parameter_counts(cfg)["non_embedding"], rel=1e-3)
    assert f.attention == 14 * 4 * 768 * ((512 * 513 / 2 + (8192 - 512) * 512) / 8192)


def test_global_cost_per_byte_falls_as_one_over_patch_size():
    cfg, T = BLTConfig.preset("1b"), 8192
    by_p = {p: blt_flops(cfg, patch_size=p, seq_len=T).components for p in (2.0, 4.5, 6.0, 8.0)}
    per_patch = {p: c["global"].weights * p for p, c in by_p.items()}
    assert len({round(v) for v in per_patch.values()}) == 1  # the same work per patch, 1/p of it per byte
    assert by_p[8.0]["global"].weights == pytest.approx(by_p[2.0]["global"].weights / 4)
    for p, c in by_p.items():  # attention per patch grows with the number of patches T / p
        assert c["global"].attention * p == pytest.approx(25 * 4 * 2048 * (T / p + 1) / 2)
        assert c["local_encoder"] == by_p[2.0]["local_encoder"] and c["local_decoder"] == by_p[2.0]["local_decoder"]
    totals = [blt_flops(cfg, patch_size=p, seq_len=T).forward for p in (2.0, 4.5, 6.0, 8.0)]
    assert totals == sorted(totals, reverse=True)


def test_1b_parameter_counts_match_the_reference_layout():
    counts = blt_parameter_counts(BLTConfig.preset("1b"))  # built on the meta device: allocates nothing
    block_1024 = 4 * 1024 * 1024 + 3 * 1024 * 2816 + 2 * 1024  # attention, SwiGLU (2816 = reference rule), norms
    cross_1024 = 4 * 1024 * 1024 + 2 * 1024
    encoder = block_1024 + cross_1024 + 1024 * 2 * 1024  # 1 layer, 1 cross-attention, patch queries -> k = 2 slots
    global_ = 25 * (4 * 2048 * 2048 + 3 * 2048 * 5632 + 2 * 2048)
    decoder = 9 * block_1024 + 9 * cross_1024 + 2048 * 2 * 1024 + 1024 + 1024 * 260  # + final norm and LM head
    assert (counts["encoder"], counts["global_model"], counts["decoder"]) == (encoder, global_, decoder)
    assert counts["non_embedding"] == encoder + global_ + decoder == 1_461_601_280
    assert counts["hash_embedding"] == 500_002 * 6 * 1024 == 3_072_012_288
    assert counts["byte_embedding"] == 260 * 1024
    assert counts["total"] == counts["non_embedding"] + counts["hash_embedding"] + counts["byte_embedding"]


def test_8b_parameter_counts_do_not_allocate():
    counts = blt_parameter_counts(BLTConfig.preset("8b"))
    input_projection = 4 * 1280 * 4096  # k * D_e = 5120 != D_g = 4096
    assert counts["global_model"] == input_projection + 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096)
    assert counts["hash_embedding"] == 500_002 * 6 * 1280


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "flops.json"
    argv = ["flops", "--preset", "tiny", "--patch-size", "6", "--seq-len", "256", "--entropy-preset", "tiny", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "global" in text and "training (3x forward)" in text and "non embedding" in text
    result = json.loads(out.read_text())
    expected = blt_flops(BLTConfig.preset("tiny"), patch_size=6, seq_len=256)
    assert result["flops"]["training"] == pytest.approx(expected.training)
    assert result["flops"]["bytes_per_step"] == 6 and result["flops"]["seq_len"] == 256
    assert set(result["flops"]["components"]) == set(expected.components)
    assert result["parameters"] == blt_parameter_counts(BLTConfig.preset("tiny"))
    assert result["entropy_model"]["flops"]["forward"] > 0


@pytest.mark.parametrize("argv, message", [
    (["flops", "--patch-size", "0.5"], "patch size must be >= 1"),
    (["flops", "--preset", "huge"], "unknown preset"),
    (["flops", "--set", "global_model.layers=3"], "unknown config key"),
    (["flops", "--entropy-preset", "huge"], "unknown entropy-model preset"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --- baselines and model costs ---------------------------------------------------------------------

def test_hand_count_of_a_token_model():
    # T = 16 bytes at 2 bytes per token -> 8 tokens; D = 8, 1 layer, FFN 16, V = 300.
    cfg = TokenModelConfig(dim=8, n_layers=1, n_heads=2, ffn_dim=16, vocab_size=300)
    cost = token_model_cost(cfg, bytes_per_token=2, seq_len=16)
    c = cost.flops.components
    assert c["transformer"].weights == 2 * (4 * 8 * 8 + 3 * 8 * 16) / 2 == 640  # per token / 2 bytes
    assert c["transformer"].attention == 4 * 8 * ((8 + 1) / 2) / 2 == 72  # causal over 8 tokens
    assert c["lm_head"].weights == 2 * 8 * 300 / 2 == 2400
    assert cost.training == 3 * (640 + 72 + 2400) and cost.inference == 640 + 72 + 2400
    assert cost.flops.seq_len == 16 and cost.bytes_per_step == 2
    embedding, block, head = 300 * 8, 4 * 8 * 8 + 3 * 8 * 16 + 2 * 8, 8 + 8 * 300  # norms: 2 per block + final
    assert cost.parameters == {"total": embedding + block + head, "embedding": embedding, "non_embedding": block + head}


@pytest.mark.parametrize("name", ["tiny", "1b"])
def test_token_baselines_follow_the_6n_rule_per_token(name):
    cfg = TokenModelConfig.preset(name)
    with torch.device("meta"):
        model = TokenLM(cfg)
    norms = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1)
    cost = token_model_cost(cfg, bytes_per_token=1.0, seq_len=2048)
    assert 3 * cost.flops.weights == 6 * (cost.parameters["non_embedding"] - norms)
    assert cost.parameters == model.parameter_counts()
    per_byte = token_model_cost(cfg, bytes_per_token=4.4, seq_len=2048 * 4.4)  # the same 2048 tokens
    assert per_byte.training * 4.4 == pytest.approx(cost.training)


def test_1b_baselines_parameters_by_hand():
    block = 4 * 2048 * 2048 + 3 * 2048 * 5632 + 2 * 2048  # the 1b global model's blocks
    bpe = token_model_cost(TokenModelConfig.preset("1b"), 4.4, 24576)
    assert bpe.parameters["non_embedding"] == 25 * block + 2048 + 2048 * 128256 == 1_547_278_336
    assert bpe.parameters["embedding"] == 128256 * 2048
    # BLT 1b (1.46 B non-embedding) at 4.5 bytes per patch against the Llama-3-style baseline at 4.4 bytes per
    # token: the global model costs per byte what the baseline's blocks do; the local models add the rest.
    blt = blt_cost(BLTConfig.preset("1b"), 4.5, 24576)
    assert blt.parameters["non_embedding"] == 1_461_601_280
    assert blt.flops.components["global"].weights == pytest.approx(
        bpe.flops.components["transformer"].weights * 4.4 / 4.5, rel=1e-3)


def test_blt_inference_adds_the_entropy_model_and_training_does_not():
    cfg, ent = BLTConfig.preset("tiny"), EntropyModelConfig.preset("tiny")
    with_patcher, alone = blt_cost(cfg, 6, 512, entropy_config=ent), blt_cost(cfg, 6, 512)
    assert with_patcher.training == alone.training == 3 * alone.flops.forward
    assert with_patcher.inference == pytest.approx(alone.inference + entropy_model_flops(ent, 512).forward)
    static = cfg.replace(patching=PatchingConfig(mode="static", patch_size=4, target_patch_size=4.5))
    assert blt_cost(static, seq_len=512, entropy_config=ent).inference == blt_cost(static, seq_len=512).inference
    assert default_patch_size(static) == 4.0  # the preset's calibration target does not apply to static patches


def test_cli_compares_blt_with_its_baselines(tmp_path, capsys):
    out = tmp_path / "flops.json"
    argv = ["flops", "--preset", "1b", "--baseline", "bpe", "--baseline", "byte", "--bytes-per-token", "4.4",
            "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "bpe baseline 1b (128,256 BPE tokens, 4.40 bytes per token)" in text and "per byte, over the same T bytes" in text
    result = json.loads(out.read_text())
    bpe = token_model_cost(TokenModelConfig.preset("1b"), 4.4, 24576)
    assert result["baselines"]["bpe"]["training"] == pytest.approx(bpe.training)
    assert result["baselines"]["byte"]["bytes_per_step"] == 1.0
    assert result["baselines"]["byte"]["parameters"]["embedding"] == 260 * 2048
    assert main(["flops", "--preset", "tiny", "--baseline", "bpe", "--vocab-size", "1000", "--set", "token.n_layers=2",
                 "--json", str(out)]) == 0
    small = json.loads(out.read_text())["baselines"]["bpe"]
    assert small["parameters"]["embedding"] == 1000 * 256 and small["flops"]["components"]["lm_head"]["weights"] == \
        pytest.approx(2 * 256 * 1000 / 4.4)
