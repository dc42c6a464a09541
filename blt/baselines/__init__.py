"""Baselines of the paper: a Llama-style token model over byte-level BPE tokens and the same model over
raw bytes (the MEGABYTE-style static-patch baseline is BLT itself: ``blt train --patching static
--set hash.num_functions=0``). They train with the one loop through `blt.train.objectives.TokenObjective`; `blt.evaluate.token_scoring`
scores them."""

from blt.baselines.model import TokenLM, TokenModelConfig, token_parameter_counts
from blt.baselines.tokenization import (
    BPETokenizer,
    ByteTokenizer,
    measure_bytes_per_token,
    train_bpe,
)

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "TokenLM",
    "TokenModelConfig",
    "measure_bytes_per_token",
    "token_parameter_counts",
    "train_bpe",
]
