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
    """Next-byte cross-entropy of BLT; patches come from the patcher (the entropy model runs in the loop)."""

    def __init__(self, model: ByteLatentTransformer, patcher: Patcher):
        self.model = model
        self.patcher = patcher

    def loss_sum(self, model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.autocast(ids.device.type, enabled=False):  # boundaries are decided in fp32
            patch_lengths = self.patcher(ids)
        logits = model(ids, patch_lengths)
        # Patches after each row's BOS patch: bytes per global step, as calibration measures it.
        patches = float((patch_lengths[:, 1:] > 0).sum())
        return next_byte_loss(logits, ids, reduction="sum"), {"patches": patches}
