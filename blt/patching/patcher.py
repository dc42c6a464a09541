"""`Patcher`: ids -> patch lengths for a `PatchingConfig`, running the entropy model when the mode needs it.

On top of the pure schemes in `blt.patching.patchers` it makes packed rows document-aware: a document's
BOS (which follows the previous document's EOS) is a patch of its own and the byte after it starts a
patch, exactly as at the start of a row. Both starts are decided by the byte before them, so they stay
causal, and no patch spans two documents.
"""

from __future__ import annotations

import torch

from blt.config import PatchingConfig
from blt.errors import ConfigError
from blt.patching.entropy_model import EntropyModel
from blt.patching.patchers import lengths_from_start_mask, start_mask_for
from blt.tokenizer import BOS_ID, EOS_ID


def document_starts(ids: torch.Tensor) -> torch.Tensor:
    """Starts forced by packing: after every EOS (the next BOS) and after every BOS. (B, T) -> (B, T) bool.

    >>> document_starts(torch.tensor([[1, 80, 2, 1, 81, 82]])).int().tolist()
    [[0, 1, 0, 1, 1, 0]]
    """
    forced = torch.zeros_like(ids, dtype=torch.bool)
    previous = ids[:, :-1]
    forced[:, 1:] = (previous == EOS_ID) | (previous == BOS_ID)
    return forced


class Patcher:
    """Patch boundaries for batches of ids. Entropy modes need an entropy model (kept frozen, in eval mode)."""

    def __init__(self, config: PatchingConfig, entropy_model: EntropyModel | None = None, tokenizer=None):
        if config.uses_entropy_model and entropy_model is None:
            raise ConfigError(f"patching mode {config.mode!r} needs an entropy model: train one with "
                              "`blt train-entropy` and pass --entropy-model RUN")
        if config.mode == "bpe" and tokenizer is None:
            raise ConfigError("patching mode 'bpe' needs a BPE tokenizer")
        self.config = config
        self.entropy_model = entropy_model.eval().requires_grad_(False) if entropy_model is not None else None
        self.tokenizer = tokenizer

    def entropies(self, ids: torch.Tensor) -> torch.Tensor | None:
        if self.entropy_model is None:
            return None
        return self.entropy_model.entropies(ids)

    def start_mask(self, ids: torch.Tensor, entropies: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T) bool patch starts."""
        if entropies is None and self.config.uses_entropy_model:
            entropies = self.entropies(ids)
        mask = start_mask_for(ids, self.config, entropies=entropies, tokenizer=self.tokenizer)
        return mask | document_starts(ids)

    def __call__(self, ids: torch.Tensor, entropies: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, P) patch lengths, right-padded with 0."""
        return lengths_from_start_mask(self.start_mask(ids, entropies))


__all__ = ["Patcher", "document_starts"]
