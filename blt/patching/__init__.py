"""Patching: where patches start (pure functions), the entropy model, calibration and the `Patcher`."""

from blt.model.layout import (
    check_patch_lengths,
    decoder_patch_ids,
    num_patches,
    pad_patch_lengths,
    patch_ids_from_lengths,
    patch_lengths_from_ids,
    patch_starts,
    trim_padding,
)
from blt.patching.calibration import calibrate_patching, calibrate_threshold_from_entropies, mean_patch_size
from blt.patching.entropy_model import EntropyModel, entropy_from_logits
from blt.patching.patcher import (
    Patcher,
    document_starts,
)
from blt.patching.patchers import (
    BytesTokenizer,
    cap_start_mask,
    lengths_from_start_mask,
    patch_lengths_for,
    patch_lengths_from_entropies,
    split_long_patches,
    start_mask_bpe,
    start_mask_combined,
    start_mask_for,
    start_mask_from_lengths,
    start_mask_global,
    start_mask_monotonic,
    start_mask_space,
    start_mask_static,
)

__all__ = [
    "BytesTokenizer",
    "EntropyModel",
    "Patcher",
    "calibrate_patching",
    "calibrate_threshold_from_entropies",
    "cap_start_mask",
    "check_patch_lengths",
    "decoder_patch_ids",
    "document_starts",
    "entropy_from_logits",
    "lengths_from_start_mask",
    "mean_patch_size",
    "num_patches",
    "pad_patch_lengths",
    "patch_ids_from_lengths",
    "patch_lengths_for",
    "patch_lengths_from_entropies",
    "patch_lengths_from_ids",
    "patch_starts",
    "split_long_patches",
    "start_mask_bpe",
    "start_mask_combined",
    "start_mask_for",
    "start_mask_from_lengths",
    "start_mask_global",
    "start_mask_monotonic",
    "start_mask_space",
    "start_mask_static",
    "trim_padding",
]
