"""What the one training loop optimises: a model plus how a batch of ids becomes a summed loss.

Adding a model family (a baseline, say) means adding an objective here, not another loop.
"""

from __future__ import annotations

import torch
from torch import nn

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
