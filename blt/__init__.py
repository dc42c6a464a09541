"""blt: the Byte Latent Transformer, a tokenizer-free byte-level language model (Pagnoni et al., 2024).

The names below load their modules on first use (PEP 562), so `import blt.data` does not build the model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from blt.version import __version__

_NAMES = {
    "BOE_ID": "blt.tokenizer", "BOS_ID": "blt.tokenizer", "EOS_ID": "blt.tokenizer", "VOCAB_SIZE": "blt.tokenizer",
    "decode": "blt.tokenizer", "encode": "blt.tokenizer",
    "BLTConfig": "blt.config", "EntropyModelConfig": "blt.config", "GlobalConfig": "blt.config",
    "HashEmbeddingConfig": "blt.config", "LocalDecoderConfig": "blt.config", "LocalEncoderConfig": "blt.config",
    "PatchingConfig": "blt.config",
    "BLTError": "blt.errors", "CheckpointError": "blt.errors", "ConfigError": "blt.errors", "DataError": "blt.errors",
    "ByteLatentTransformer": "blt.model", "next_byte_loss": "blt.model",
    "EntropyModel": "blt.patching",
    "generate": "blt.generation",
    "load": "blt.run",
}

__all__ = sorted([*_NAMES, "__version__", "patching"])


def __getattr__(name: str) -> Any:
    if name == "patching":
        return importlib.import_module("blt.patching")
    if name not in _NAMES:
        raise AttributeError(f"module 'blt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from blt import patching
    from blt.config import (
        BLTConfig,
        EntropyModelConfig,
        GlobalConfig,
        HashEmbeddingConfig,
        LocalDecoderConfig,
        LocalEncoderConfig,
        PatchingConfig,
    )
    from blt.errors import BLTError, CheckpointError, ConfigError, DataError
    from blt.generation import generate
    from blt.model import ByteLatentTransformer, next_byte_loss
    from blt.patching import EntropyModel
    from blt.run import load
    from blt.tokenizer import BOE_ID, BOS_ID, EOS_ID, VOCAB_SIZE, decode, encode
