"""What the one training loop optimises: a model plus how a batch of ids becomes a summed loss.

Adding a model family (a baseline, say) means adding an objective here, not another loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blt.baselines.model import TokenLM
from blt.baselines.tokenization import (
    BaselineTokenizer,
    BPETokenizer,
    count_token_targets,
)
from blt.errors import DataError
from blt.model.byte_latent import ByteLatentTransformer, next_byte_loss
from blt.model.layout import check_patch_lengths
from blt.patching.entropy_model import EntropyModel
from blt.patching.patcher import Patcher
from blt.tokenizer import PAD_ID


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
        patch_lengths = self.patch_lengths(ids, entropies)
        check_patch_lengths(ids, patch_lengths)  # here, on the host: inside a compiled model each check splits the graph
        logits = model(ids, patch_lengths, validate=False)
        return next_byte_loss(logits, ids, reduction="sum"), {"patches": patches_after_bos(patch_lengths)}

    def patch_lengths(self, ids: torch.Tensor, entropies: torch.Tensor | None) -> torch.Tensor:
        """The patcher's patch lengths (B, P) of ids (B, T), decided outside autocast (the entropy model
        computes in its own precision: `EntropyModelConfig.precision`)."""
        with torch.autocast(ids.device.type, enabled=False):
            return self.patcher(ids, entropies.float() if entropies is not None else None)


def patches_after_bos(patch_lengths: torch.Tensor) -> float:
    """Patches after each row's BOS patch: bytes per global step, as calibration measures it."""
    return float((patch_lengths[:, 1:] > 0).sum())


DISTILL_LOSSES = ("cosine", "mse")


class EmbeddingDistillObjective(BLTObjective):
    """`BLTObjective` plus, while the model trains, a pull of the global model's input at each patch toward
    the source token model's embedding of the token that patch is: stage 1 of `blt byteify` with BPE
    patching at the source tokenizer's token starts, where patch j of a row is token j of the row as the
    source tokenizes it (BOS and EOS included), so the frozen blocks get the inputs they were trained on.

    With h_j the global model's input (the encoder's patch state after the input projection) and e the
    source's (frozen) embedding table of shape (V, D), the term per patch is, by ``loss``:

    - ``"cosine"``: 1 − cos(h_j, e(t_j)), in [0, 2]: the direction only;
    - ``"mse"``: ‖h_j − e(t_j)‖² / (D · m), m the table's mean square entry, so 1 means an error as large
      as a typical embedding. A new encoder's states are far larger than trained token embeddings (about 50
      per patch at the start here), so this term's gradient dominates and, through gradient clipping,
      shrinks every other update (README, byteifying).

    ``weight`` × the sum over patches is added to the summed next-byte loss, so the training loss and bits
    per byte logged include it; evaluation (the model in eval mode) does not, so validation bits per byte
    stay the plain next-byte measure. ``distill`` (the summed term, before ``weight``) is logged with each
    step.
    """

    def __init__(self, model: ByteLatentTransformer, patcher: Patcher, embedding: torch.Tensor,
                 tokenizer: BPETokenizer, weight: float, loss: str = "cosine"):
        super().__init__(model, patcher)
        if loss not in DISTILL_LOSSES:
            raise ValueError(f"loss must be one of {DISTILL_LOSSES}, not {loss!r}")
        self.loss = loss
        if embedding.dim() != 2 or embedding.shape[1] != model.cfg.global_model.dim:
            raise ValueError(f"embedding must be (V, {model.cfg.global_model.dim}), got {tuple(embedding.shape)}")
        if embedding.shape[0] < tokenizer.vocab_size:
            raise ValueError(f"the embedding has {embedding.shape[0]} rows, the tokenizer {tokenizer.vocab_size} tokens")
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        self.embedding = embedding.detach().float()
        self.scale = float(self.embedding.pow(2).mean())
        self.tokenizer = tokenizer
        self.weight = weight
        self._inputs: list[torch.Tensor] = []
        self._capturing = False
        model.global_model.transformer.layers[0].register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if self._capturing:
            self._inputs.append(args[0])

    def loss_sum(self, model: nn.Module, ids: torch.Tensor,
                 entropies: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """`BLTObjective.loss_sum`, plus ``weight`` × the distillation term while ``model`` trains."""
        if not model.training:
            return super().loss_sum(model, ids, entropies)
        patch_lengths = self.patch_lengths(ids, entropies)
        check_patch_lengths(ids, patch_lengths)
        self._inputs.clear()
        self._capturing = True
        try:
            logits = model(ids, patch_lengths, validate=False)
        finally:
            self._capturing = False
        (inputs,) = self._inputs  # (B, P, D): one global pass
        self._inputs.clear()
        distill = self.distill_sum(inputs, patch_lengths, self.tokenizer.tokenize_rows(ids))
        stats = {"patches": patches_after_bos(patch_lengths), "distill": float(distill.detach())}
        return next_byte_loss(logits, ids, reduction="sum") + self.weight * distill, stats

    def distill_sum(self, inputs: torch.Tensor, patch_lengths: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Σ over real patches of the term of ``loss`` (class docstring). inputs (B, P, D), patch_lengths
        (B, P), tokens (B, N) right-padded with PAD; every row must have as many patches as tokens (a
        `ValueError` else)."""
        patches, count = patch_lengths > 0, (tokens != PAD_ID).sum(dim=1)
        if not torch.equal(patches.sum(dim=1), count.to(patches.device)):
            raise DataError("distillation needs one patch per source token: patch at the source tokenizer's token "
                             f"starts (patching mode bpe with its tokenizer.json); rows have {patches.sum(1).tolist()} "
                             f"patches and {count.tolist()} tokens")
        n = min(inputs.shape[1], tokens.shape[1])
        tokens = tokens[:, :n].to(inputs.device)
        target = self.embedding.to(inputs.device)[tokens.clamp(max=self.embedding.shape[0] - 1)]  # (B, n, D)
        h = inputs[:, :n].float()
        if self.loss == "cosine":
            error = 1 - F.cosine_similarity(h, target, dim=-1)  # (B, n)
        else:
            error = (h - target).pow(2).mean(dim=-1) / self.scale  # (B, n)
        return (error * patches[:, :n]).sum()


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
