"""Byteifying a token model: a BLT whose global transformer is a trained token model's blocks.

The paper initialises BLT's global model from Llama 3.1, and Ai2's Bolmo byteifies Olmo 3 this way: the
blocks already know language, so only the local encoder and decoder (and the entropy model) start new.
The token model's embedding and LM head are dropped; its blocks become the global transformer unchanged
(same widths, heads, RoPE base and norm epsilon), so on the same inputs they compute the same states.

Sources: a run of `blt train-baseline` (a BPE or byte token model) or a transformers Llama checkpoint
directory (`blt.interop.llama`). This module builds the byteified model; training it in stages (the
global model frozen first) is the recipe's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from blt.baselines.model import TokenModelConfig
from blt.config import BLTConfig, GlobalConfig
from blt.errors import BLTError, CheckpointError
from blt.interop.llama import CONFIG_FILE, read_llama
from blt.model.byte_latent import ByteLatentTransformer
from blt.run import load, read_run_config

BLOCK_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta")


@dataclass
class TokenSource:
    """The token model a BLT is byteified from: its config, its blocks' tensors (our names, without the
    ``transformer.`` prefix) and where it came from."""

    path: Path
    kind: str  # "token_model" (a blt run) or "llama" (a transformers checkpoint)
    config: TokenModelConfig
    blocks: dict[str, torch.Tensor]


def read_token_source(path: str | Path) -> TokenSource:
    """A `blt train-baseline` run or a transformers Llama checkpoint directory; one-line errors otherwise."""
    path = Path(path)
    if (path / "config.json").is_file() and _is_blt_run(path):
        run = load(path, expect="token_model")
        state = run.model.state_dict()
        kind, config = "token_model", run.config
    elif (path / CONFIG_FILE).is_file():
        checkpoint = read_llama(path)
        state, kind, config = checkpoint.state_dict, "llama", checkpoint.config
    else:
        raise CheckpointError(f"{path} is neither a blt token-model run (from `blt train-baseline`) nor a "
                              "transformers Llama checkpoint directory")
    blocks = {name[len("transformer."):]: t for name, t in state.items() if name.startswith("transformer.")}
    return TokenSource(path, kind, config, blocks)


def _is_blt_run(path: Path) -> bool:
    try:
        read_run_config(path)
        return True
    except BLTError:
        return False


def global_config_of(config: TokenModelConfig) -> GlobalConfig:
    """The global-model config with exactly the token model's blocks."""
    return GlobalConfig(**{field: getattr(config, field) for field in BLOCK_FIELDS})


def byteified_config(source: TokenSource, base: BLTConfig) -> BLTConfig:
    """``base`` (a preset with the user's overrides) with the source's blocks as its global model."""
    return base.replace(global_model=global_config_of(source.config))


def byteify(source: TokenSource, base: BLTConfig, seed: int = 0) -> ByteLatentTransformer:
    """A BLT with ``base``'s local models (initialised from ``seed``) and the source's blocks as its global
    transformer."""
    model = ByteLatentTransformer(byteified_config(source, base)).init_weights(seed=seed)
    try:
        model.global_model.transformer.load_state_dict(source.blocks, strict=True)
    except RuntimeError as err:  # a source whose tensors disagree with its own config
        raise CheckpointError(f"{source.path}: its blocks do not fit its config ({str(err).splitlines()[0]})") from None
    return model


__all__ = ["BLOCK_FIELDS", "TokenSource", "byteified_config", "byteify", "global_config_of", "read_token_source"]
