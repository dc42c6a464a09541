"""What the one training loop optimises: a model plus how a batch of ids becomes a summed loss.

Adding a model family (a baseline, say) means adding an objective here, not another loop.
"""

from __future__ import annotations

import torch
from torch import nn

from blt.baselines.model import TokenLM
from blt.baselines.tokenization import BaselineTokenizer, count_token_targets
from blt.model.byte_latent import ByteLatentTransformer, next_byte_loss
from blt.patching.entropy_model import EntropyModel
from blt.patching.patcher import Patcher


class EntropyModelObjective:
    """Plain next-byte cross-entropy of the entropy model."""

    def __init__(self, model: EntropyModel):
        self.model = model

    def loss_sum(self, model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return next_byte_loss(model(ids), ids, reduction="sum"), {}


class BLTObjective:
    """Next-byte cross-entropy of BLT; patches come from the patcher, which places them by the entropies
    given with the batch (precomputed, `blt.data.entropies`) or else runs its entropy model on the ids."""

    def __init__(self, model: ByteLatentTransformer, patcher: Patcher):
        self.model = model
        self.patcher = patcher

    def loss_sum(self, model: nn.Module, ids: torch.Tensor,
                 entropies: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed loss of ids (B, T), and the number of patches after each row's BOS patch.

        ``entropies`` (B, T): the entropy-model entropies of ``ids``, as the data iterators yield them when
        the data has precomputed entropies; None computes them here (entropy patching modes only).
        """
        with torch.autocast(ids.device.type, enabled=False):  # boundaries are decided in fp32
            patch_lengths = self.patcher(ids, entropies.float() if entropies is not None else None)
        logits = model(ids, patch_lengths)
        # Patches after each row's BOS patch: bytes per global step, as calibration measures it.
        patches = float((patch_lengths[:, 1:] > 0).sum())
        return next_byte_loss(logits, ids, reduction="sum"), {"patches": patches}


class TokenObjective:
    """Next-token cross-entropy of a token baseline (BPE or bytes), on the byte batches BLT trains on.

    Each row of byte ids is tokenized (`BaselineTokenizer.tokenize_rows`: runs of data bytes with the
    tokenizer, each special id as one token) and the loss is summed over the counted token targets: data
    tokens and EOS, not BOS or padding, as for bytes. The tokens of a row cover exactly its bytes, so
    this sum is the negative log-likelihood (nats) of the row's data bytes and EOS under the model's
    canonical tokenization. The loop divides it by ``count_targets(ids)``, the row's data bytes plus EOS,
    which makes its bits per byte

        BPB = Σ token NLL (nats) / (data bytes + EOS) / ln 2

    over the same validation bytes and with the same denominator as BLT's. ``tokens`` (the counted token
    targets) is logged with it: bytes per token = targets / tokens.
    """

    def __init__(self, model: TokenLM, tokenizer: BaselineTokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def loss_sum(self, model: nn.Module, ids: torch.Tensor,
                 entropies: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed token loss of byte ids (B, T), and the number of token targets; ``entropies`` are unused."""
        tokens = self.tokenizer.tokenize_rows(ids)  # (B, T) bytes -> (B, N) tokens
        # next_byte_loss counts the same targets on tokens as on bytes: all but BOS and padding.
        return next_byte_loss(model(tokens), tokens, reduction="sum"), {"tokens": float(count_token_targets(tokens))}
