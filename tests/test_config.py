"""Configs: presets, JSON round trip, overrides and validation messages."""

from __future__ import annotations

import pytest

from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    PatchingConfig,
    swiglu_hidden_size,
)
from blt.errors import ConfigError


@pytest.mark.parametrize("name", BLTConfig.preset_names())
def test_presets_round_trip_through_json(name, tmp_path):
    cfg = BLTConfig.preset(name)
    assert BLTConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "c.json")
    assert BLTConfig.load(tmp_path / "c.json") == cfg


@pytest.mark.parametrize("name", EntropyModelConfig.preset_names())
def test_entropy_presets_round_trip(name):
    cfg = EntropyModelConfig.preset(name)
    assert EntropyModelConfig.from_json(cfg.to_json()) == cfg


def test_reference_ffn_rule():
    assert swiglu_hidden_size(2048) == 5632
    assert swiglu_hidden_size(1024) == 2816
    assert BLTConfig.preset("1b").global_model.hidden_dim == 5632


def test_overrides():
    cfg = BLTConfig.preset("tiny").with_overrides(["global_model.n_layers=6", "patching.mode=static", "cross_attn_k=4"])
    assert cfg.global_model.n_layers == 6 and cfg.patching.mode == "static" and cfg.cross_attn_k == 4
    with pytest.raises(ConfigError, match="unknown config key 'global_model.layers'"):
        BLTConfig.preset("tiny").with_overrides(["global_model.layers=6"])
    with pytest.raises(ConfigError, match="key=value"):
        BLTConfig.preset("tiny").with_overrides(["oops"])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: GlobalConfig(dim=100, n_heads=3), "divisible by n_heads"),
        (lambda: GlobalConfig(dim=96, n_heads=4, n_kv_heads=3), "multiple of n_kv_heads"),
        (lambda: GlobalConfig(dim=12, n_heads=4), "must be even for RoPE"),
        (lambda: PatchingConfig(mode="entropy"), "needs a threshold"),
        (lambda: PatchingConfig(mode="zigzag"), "is not one of"),
        (lambda: PatchingConfig(mode="static", max_patch_length=0), "max_patch_length"),
        (lambda: PatchingConfig(mode="entropy", threshold=float("nan")), "finite"),
        (lambda: BLTConfig.preset("huge"), "unknown preset 'huge'"),
        (lambda: BLTConfig.from_json('{"encoder": {"dim": 64, "bogus": 1}}'), "has no field"),
        (lambda: BLTConfig.from_json("{not json"), "not valid JSON"),
        (lambda: PatchingConfig(mode="combined", target_patch_size=4.5), "needs relative_threshold"),
        (lambda: BLTConfig.preset("tiny").with_overrides(["decoder.dim=64"]), r"encoder.dim \(128\) must equal decoder.dim"),
    ],
)
def test_validation_messages(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


@pytest.mark.parametrize(
    "override, message",
    [
        ("encoder.dim=abc", "config value encoder.dim (LocalEncoderConfig) must be an integer, got 'abc'"),
        ("encoder.dim=64.5", "encoder.dim (LocalEncoderConfig) must be an integer, got 64.5"),
        ("hash.rows=null", "hash.rows (HashEmbeddingConfig) must be an integer, got null"),
        ('hash.ngram_sizes=[3,"x"]', ('hash.ngram_sizes (HashEmbeddingConfig) must be a list, each item an integer, '
                                      'got [3, "x"]')),
        ("cross_attn_k=true", "cross_attn_k (BLTConfig) must be an integer, got true"),
        ("patching.threshold=high", "patching.threshold (PatchingConfig) must be a number or null, got 'high'"),
        ("patching.mode=3", "patching.mode (PatchingConfig) must be one of 'entropy', .*got 3"),
        ("encoder=5", "config value encoder (BLTConfig) must be an object, got 5"),
    ],
)
def test_values_of_the_wrong_type_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        BLTConfig.preset("tiny").with_overrides([override])


def test_ints_pass_for_floats_and_round_trip_unchanged():
    cfg = BLTConfig.preset("tiny").with_overrides(["patching.threshold=2", "patching.relative_threshold=null"])
    assert cfg.patching.threshold == 2
    assert BLTConfig.from_json(cfg.to_json()) == cfg
