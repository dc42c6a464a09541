"""Reading transformers Llama checkpoints that the tests write (random weights): our token model then gives
transformers' logits; every checkpoint we can't read is one clear error."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from blt.baselines.model import TokenLM  # noqa: E402
from blt.errors import BLTError  # noqa: E402
from blt.interop.llama import halves_to_pairs, pairs_to_halves, read_llama  # noqa: E402

SHAPES = {
    "multi-head": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                       intermediate_size=80, vocab_size=300),
    "grouped kv, tied": dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=6, num_key_value_heads=2,
                             intermediate_size=64, vocab_size=384, tie_word_embeddings=True, rope_theta=500000.0),
    "one kv head": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                        intermediate_size=40, vocab_size=270, rms_norm_eps=1e-5),
}


def write_llama(path, shard: bool = False, seed: int = 0, **config):
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    model.save_pretrained(path, safe_serialization=True, **({"max_shard_size": "20KB"} if shard else {}))
    return model


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("shard", [False, True], ids=["one file", "sharded"])
def test_logits_equal_transformers(tmp_path, shape, shard):
    hf = write_llama(tmp_path, shard=shard, **SHAPES[shape])
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    checkpoint = read_llama(tmp_path)
    ours = TokenLM(checkpoint.config).eval()
    ours.load_state_dict(checkpoint.state_dict, strict=True)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, checkpoint.config.vocab_size, (2, 24), generator=gen)  # no id 2: ours splits documents there
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        got = ours(ids)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_rope_layouts_round_trip():
    w = torch.randn(4 * 8, 5)
    assert torch.equal(pairs_to_halves(halves_to_pairs(w, 4), 4), w)


def _config(path):
    return json.loads((path / "config.json").read_text())


def _rewrite_config(path, **changes):
    cfg = _config(path)
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "'gpt2' model; blt reads Llama"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}}, "scales RoPE ('llama3')"),
    ({"attention_bias": True}, "biases"),
    ({"hidden_act": "gelu"}, "activation is 'gelu'"),
    ({"head_dim": 4}, "head_dim 4"),
    ({"vocab_size": 100}, "at least 260"),
    ({"num_hidden_layers": 3}, "lacks 9 tensor(s)"),
    ({"intermediate_size": 96}, "has shape"),
])
def test_checkpoints_we_cannot_read_are_one_clear_error(tmp_path, change, message):
    write_llama(tmp_path, **SHAPES["multi-head"])
    _rewrite_config(tmp_path, **change)
    with pytest.raises(BLTError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_llama(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_or_pickled_weights_are_refused(tmp_path):
    write_llama(tmp_path, **SHAPES["multi-head"])
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(BLTError, match="pickled weights, which blt never loads"):
        read_llama(tmp_path)
    with pytest.raises(BLTError, match="not a directory"):
        read_llama(tmp_path / "config.json")
    (tmp_path / "config.json").unlink()
    with pytest.raises(BLTError, match="no config.json"):
        read_llama(tmp_path)


def test_a_corrupt_shard_or_a_foreign_tensor_is_refused(tmp_path):
    write_llama(tmp_path, **SHAPES["multi-head"])
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BLTError, match="not a readable safetensors file"):
        read_llama(tmp_path)
    from safetensors.torch import save_file

    hf = write_llama(tmp_path, **SHAPES["multi-head"])
    save_file({**{k: v.contiguous() for k, v in hf.state_dict().items()}, "model.vision.weight": torch.zeros(2)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(BLTError, match="tensors that a Llama model has not"):
        read_llama(tmp_path)
