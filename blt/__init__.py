"""blt: the Byte Latent Transformer, a tokenizer-free byte-level language model (Pagnoni et al., 2024)."""

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
from blt.generate import generate
from blt.model import ByteLatentTransformer, next_byte_loss
from blt.patching import EntropyModel
from blt.run import load
from blt.tokenizer import BOE_ID, BOS_ID, EOS_ID, VOCAB_SIZE, decode, encode

__version__ = "0.1.0"

__all__ = [
    "BOE_ID",
    "BOS_ID",
    "EOS_ID",
    "VOCAB_SIZE",
    "BLTConfig",
    "BLTError",
    "ByteLatentTransformer",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EntropyModel",
    "EntropyModelConfig",
    "GlobalConfig",
    "HashEmbeddingConfig",
    "LocalDecoderConfig",
    "LocalEncoderConfig",
    "PatchingConfig",
    "__version__",
    "decode",
    "encode",
    "generate",
    "load",
    "next_byte_loss",
    "patching",
]
