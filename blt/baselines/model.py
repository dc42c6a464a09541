"""The token baselines' model: a Llama-style decoder over tokens, built from the same blocks as BLT's global
model (`blt.model.layers`): token embedding -> pre-norm blocks (RMSNorm, RoPE, SwiGLU) -> RMSNorm -> LM head.

Over BPE tokens it is the paper's Llama baseline; over bytes (`ByteTokenizer`, 260 ids) it is a plain
byte-level transformer. Attention is causal within a document (documents end at EOS, id 2 in both
vocabularies), like every other model in blt.

>>> cfg = TokenModelConfig.preset("tiny").replace(vocab_size=260)
>>> TokenLM(cfg).init_weights(seed=0)(torch.tensor([[1, 76, 109]])).shape
torch.Size([1, 3, 260])
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from blt.config import BLTConfig, TransformerConfig, _require
from blt.errors import ConfigError
from blt.model.layers import CausalLM
from blt.tokenizer import VOCAB_SIZE

# BPE vocabulary of each preset: small vocabularies for the CPU presets, Llama 3's 128,256 for the paper sizes.
PRESET_VOCAB_SIZES = {"tiny": 4096, "small": 8192, "paper-xs": 4096, "paper-s": 8192, "1b": 128256, "8b": 128256}


@dataclass(frozen=True)
class TokenModelConfig(TransformerConfig):
    """A Llama-style decoder over tokens (a baseline); the block fields are those of `TransformerConfig`."""

    dim: int = 256
    n_layers: int = 4
    vocab_size: int = 4096  # tokens: 260 for the byte model; the BPE tokenizer's size (>= 260) otherwise

    def __post_init__(self):
        super().__post_init__()
        _require(self.vocab_size >= VOCAB_SIZE,
                 f"TokenModelConfig: vocab_size must be >= {VOCAB_SIZE} (4 specials + 256 bytes), got {self.vocab_size}")

    @classmethod
    def preset(cls, name: str) -> TokenModelConfig:
        """The global model of the BLT preset of the same name, over ``PRESET_VOCAB_SIZES[name]`` BPE tokens."""
        if name not in PRESET_VOCAB_SIZES:
            raise ConfigError(f"unknown baseline preset {name!r}; choose one of {sorted(PRESET_VOCAB_SIZES)}")
        blocks = BLTConfig.preset(name).global_model.to_dict()
        return cls(**blocks, vocab_size=PRESET_VOCAB_SIZES[name])

    @staticmethod
    def preset_names() -> list[str]:
        return sorted(PRESET_VOCAB_SIZES)


class TokenLM(CausalLM):
    """``forward(tokens[B, N]) -> logits[B, N, V]``; logits at position n predict token n + 1."""

    cfg: TokenModelConfig

    def parameter_counts(self) -> dict[str, int]:
        return token_parameter_counts(self)


def token_parameter_counts(model: nn.Module) -> dict[str, int]:
    """``total``, ``embedding`` (the input token table, a lookup) and ``non_embedding`` (blocks, norms, LM head)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.embedding.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
