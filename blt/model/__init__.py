"""The BLT model: Llama-style blocks, hashed n-gram embeddings, local encoder, global transformer, local decoder."""

from blt.model.byte_latent import (
    ByteLatentTransformer,
    GlobalTransformer,
    LocalDecoder,
    LocalEncoder,
    PatchLayout,
    byte_loss_mask,
    next_byte_loss,
    parameter_counts,
)
from blt.model.hashing import HashNgramEmbedding, ngram_hashes

__all__ = [
    "ByteLatentTransformer",
    "GlobalTransformer",
    "HashNgramEmbedding",
    "LocalDecoder",
    "LocalEncoder",
    "PatchLayout",
    "byte_loss_mask",
    "next_byte_loss",
    "ngram_hashes",
    "parameter_counts",
]
