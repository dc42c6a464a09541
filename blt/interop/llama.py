"""Reading a `transformers` Llama-architecture checkpoint (``LlamaForCausalLM``) as our token model.

A checkpoint directory holds ``config.json`` and safetensors weights: ``model.safetensors``, or shards listed
in ``model.safetensors.index.json``. Pickled ``.bin`` weights are refused, never unpickled.

What changes on the way:
- names: ``model.layers.i.self_attn.q_proj`` -> ``transformer.layers.i.attention.wq`` and so on
  (`LLAMA_NAMES`);
- RoPE: transformers' Llama rotates the two halves of each head (x[:hd/2], x[hd/2:]), our blocks rotate
  adjacent pairs (x[0::2], x[1::2]), so the rows of ``q_proj`` and ``k_proj`` are permuted within each head
  (`halves_to_pairs`);
- tied embeddings (``tie_word_embeddings``) become a copy of the embedding in ``output``.

What is refused, in one line each: another architecture, RoPE scaling (Llama 3.1's ``rope_type: llama3``
and the like; our RoPE has none), biases, an activation other than SiLU, a head size other than
``hidden_size / num_attention_heads``, and a vocabulary smaller than our 260 byte ids.

Our token model splits documents at id 2 (EOS in blt's vocabulary) when it masks attention; a Llama
vocabulary may use id 2 for an ordinary token. The blocks do not depend on it, which is what byteifying
reuses; a caller that runs the converted token model on Llama ids should mind it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blt.baselines.model import TokenLM, TokenModelConfig
from blt.errors import CheckpointError, ConfigError
from blt.interop.tensorfile import SafetensorsReader, read_json
from blt.tokenizer import VOCAB_SIZE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# transformers' names -> ours, per layer ({i} is the layer) and for the rest of the model
LLAMA_NAMES = {
    "model.layers.{i}.input_layernorm.weight": "transformer.layers.{i}.attention_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "transformer.layers.{i}.attention.wq.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "transformer.layers.{i}.attention.wk.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "transformer.layers.{i}.attention.wv.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "transformer.layers.{i}.attention.wo.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "transformer.layers.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "transformer.layers.{i}.feed_forward.w1.weight",
    "model.layers.{i}.mlp.up_proj.weight": "transformer.layers.{i}.feed_forward.w3.weight",
    "model.layers.{i}.mlp.down_proj.weight": "transformer.layers.{i}.feed_forward.w2.weight",
    "model.embed_tokens.weight": "embedding.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass
class LlamaCheckpoint:
    """A Llama checkpoint read as our token model: its config, its tensors under our names (RoPE rows in our
    layout), and the checkpoint's own config for the record."""

    path: Path
    config: TokenModelConfig
    state_dict: dict[str, torch.Tensor]
    source_config: dict[str, Any]


def halves_to_pairs(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q or k projection (n_heads * hd, D) from the split-halves RoPE layout to adjacent pairs: in
    each head, output dims (j, hd/2 + j) become (2j, 2j + 1).

    >>> halves_to_pairs(torch.arange(4.0)[:, None], n_heads=1).flatten().tolist()
    [0.0, 2.0, 1.0, 3.0]
    """
    out_dim, dim = weight.shape
    head_dim = out_dim // n_heads
    return weight.view(n_heads, 2, head_dim // 2, dim).transpose(1, 2).reshape(out_dim, dim)


def pairs_to_halves(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `halves_to_pairs`."""
    out_dim, dim = weight.shape
    head_dim = out_dim // n_heads
    return weight.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(out_dim, dim)


def _read_config(path: Path) -> dict:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_FILE}; give a transformers checkpoint directory "
                              "(config.json + safetensors)")
    data = read_json(file)
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} does not hold a JSON object")
    return data


def _rope_theta(cfg: dict) -> float:
    """RoPE base; refuses RoPE scaling. transformers keeps it in ``rope_parameters`` (5.x) or ``rope_theta``."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind not in ("default", None):
        raise ConfigError(f"the checkpoint scales RoPE ({kind!r}); blt's RoPE has no scaling, so it can't be read as is")
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if not isinstance(theta, (int, float)) or theta <= 0:
        raise ConfigError(f"the checkpoint's rope_theta is {theta!r}; expected a positive number")
    return float(theta)


def token_config_from_llama(cfg: dict) -> TokenModelConfig:
    """Our `TokenModelConfig` for a Llama ``config.json`` (as a dict); a `ConfigError` for what we can't run."""
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
        kind = cfg.get("model_type") or (archs[0] if archs else "unknown")
        raise ConfigError(f"the checkpoint is a {kind!r} model; blt reads Llama-architecture decoders "
                          "(LlamaForCausalLM, model_type 'llama')")
    try:
        dim, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        layers, ffn, vocab = int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"]), int(cfg["vocab_size"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"the checkpoint's config.json lacks or garbles {err}") from None
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ConfigError("the checkpoint has attention or MLP biases; blt's blocks have none")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"the checkpoint's activation is {act!r}; blt's SwiGLU uses silu")
    head_dim = cfg.get("head_dim")
    if head_dim is not None and heads and int(head_dim) * heads != dim:
        raise ConfigError(f"the checkpoint's head_dim {head_dim} x {heads} heads is not hidden_size {dim}; "
                          "blt's blocks need head size = hidden_size / heads")
    if vocab < VOCAB_SIZE:
        raise ConfigError(f"the checkpoint's vocabulary has {vocab} tokens; blt's token models need at least "
                          f"{VOCAB_SIZE}")
    return TokenModelConfig(dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads, ffn_dim=ffn,
                            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=_rope_theta(cfg),
                            vocab_size=vocab)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors (one file, or the shards of its index)."""
    if (path / INDEX_FILE).is_file():
        reader = SafetensorsReader.from_index(path / INDEX_FILE)
    elif (path / WEIGHTS_FILE).is_file():
        reader = SafetensorsReader.from_file(path / WEIGHTS_FILE)
    else:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        extra = f" (it has {', '.join(pickled)}: pickled weights, which blt never loads)" if pickled else ""
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE} or {INDEX_FILE}{extra}; save it with "
                              "save_pretrained(..., safe_serialization=True)")
    return {name: reader.read(name) for name in reader.infos}


def _our_name(name: str) -> str | None:
    match = _LAYER.match(name)
    if match:
        key = f"model.layers.{{i}}.{match.group(2)}"
        return LLAMA_NAMES[key].format(i=match.group(1)) if key in LLAMA_NAMES else None
    return LLAMA_NAMES.get(name)


def read_llama(path: str | Path) -> LlamaCheckpoint:
    """Read a Llama checkpoint directory (see the module docstring); every problem is a one-line `BLTError`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; give a transformers checkpoint directory")
    source = _read_config(path)
    config = token_config_from_llama(source)
    hf = _weights(path)
    ours: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in hf.items():
        target = _our_name(name)
        if target is None:
            if not name.endswith("rotary_emb.inv_freq"):  # a buffer some checkpoints carry: ours is computed
                unknown.append(name)
            continue
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.n_heads if name.endswith("q_proj.weight") else config.kv_heads
            tensor = halves_to_pairs(tensor, heads)
        ours[target] = tensor
    if unknown:
        raise CheckpointError(f"{path} holds tensors that a Llama model has not: {unknown[:3]}"
                              f"{' ...' if len(unknown) > 3 else ''}")
    if "output.weight" not in ours:
        if not source.get("tie_word_embeddings", False) or "embedding.weight" not in ours:
            raise CheckpointError(f"{path} has no lm_head.weight and does not tie it to the embeddings")
        ours["output.weight"] = ours["embedding.weight"].clone()
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} tensor(s) of its config, e.g. {missing[0]}")
    for name, shape in expected.items():
        if tuple(ours[name].shape) != shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(ours[name].shape)}, its config implies {shape}")
    return LlamaCheckpoint(path, config, ours, source)


def _expected_shapes(config: TokenModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = TokenLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


__all__ = ["LLAMA_NAMES", "LlamaCheckpoint", "halves_to_pairs", "pairs_to_halves", "read_llama",
           "token_config_from_llama"]
