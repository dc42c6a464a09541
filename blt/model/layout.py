"""Patch bookkeeping as small pure functions on tensors: what the model and the patchers derive from patch
lengths (docs/design.md §2, §3).

Representation: ``patch_lengths: LongTensor[B, P]``, right-padded with 0, each row summing to T;
``patch_ids: LongTensor[B, T]``, the index of the patch each byte belongs to.
"""

from __future__ import annotations

import torch

from blt.tokenizer import BOS_ID, VOCAB_SIZE


def patch_starts(patch_lengths: torch.Tensor) -> torch.Tensor:
    """Start position of each patch: exclusive cumulative sum. (B, P) -> (B, P).

    >>> patch_starts(torch.tensor([[1, 3, 4, 2]])).tolist()
    [[0, 1, 4, 8]]
    """
    return torch.cumsum(patch_lengths, dim=-1) - patch_lengths


def patch_ids_from_lengths(patch_lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Patch index of every byte. (B, P) -> (B, T). Zero-length (padding) patches own no byte.

    >>> patch_ids_from_lengths(torch.tensor([[1, 3, 4, 2, 0]]), 10).tolist()
    [[0, 1, 1, 1, 2, 2, 2, 2, 3, 3]]
    """
    ends = torch.cumsum(patch_lengths, dim=-1)  # (B, P) exclusive end of each patch
    positions = torch.arange(seq_len, device=patch_lengths.device)
    # A byte's patch is the number of patches that end at or before it.
    return torch.searchsorted(ends, positions.expand(patch_lengths.shape[0], seq_len).contiguous(), right=True)


def patch_lengths_from_ids(patch_ids: torch.Tensor, num_patches: int | None = None) -> torch.Tensor:
    """Inverse of `patch_ids_from_lengths`. (B, T) -> (B, P), right-padded with 0.

    >>> patch_lengths_from_ids(torch.tensor([[0, 1, 1, 1, 2, 2, 2, 2, 3, 3]])).tolist()
    [[1, 3, 4, 2]]
    """
    num_patches = int(patch_ids.max()) + 1 if num_patches is None else num_patches
    lengths = torch.zeros(patch_ids.shape[0], num_patches, dtype=torch.long, device=patch_ids.device)
    return lengths.scatter_add_(1, patch_ids, torch.ones_like(patch_ids))


def num_patches(patch_lengths: torch.Tensor) -> torch.Tensor:
    """Real (non-padding) patches per row. (B, P) -> (B,)."""
    return (patch_lengths > 0).sum(dim=-1)


def decoder_patch_ids(patch_lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The patch whose global state each byte's decoder reads. (B, P) -> (B, T).

    Byte b reads the last patch that is complete at b (ends at or before b): the last byte of a
    patch reads its own patch, the other bytes read the previous one. This is the reference's
    one-patch shift (patch ids computed from ``patch_lengths[:, 1:]``) and is causal only because the
    first patch is exactly one byte (BOS). The last patch of a row is never read: the sequence ends
    before we know it is complete. Unlike the reference, this does not depend on right padding
    (a padded row's last byte would otherwise read the final patch).

    >>> decoder_patch_ids(torch.tensor([[1, 3, 4, 2]]), 10).tolist()
    [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]
    >>> decoder_patch_ids(torch.tensor([[1, 3, 4, 2, 0]]), 10).tolist()
    [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]]
    """
    ends = torch.cumsum(patch_lengths, dim=-1)  # (B, P) exclusive ends
    positions = torch.arange(seq_len, device=patch_lengths.device).expand(patch_lengths.shape[0], seq_len)
    completed = torch.searchsorted(ends, positions.contiguous() + 1, right=True)  # patches ending at or before b
    last_readable = (num_patches(patch_lengths) - 2).clamp(min=0).unsqueeze(-1)
    return (completed - 1).clamp(min=0).minimum(last_readable)


def pad_patch_lengths(rows: list[torch.Tensor], num_patches: int | None = None) -> torch.Tensor:
    """Stack ragged 1-D patch-length rows into (B, P), right-padded with 0.

    >>> pad_patch_lengths([torch.tensor([1, 3]), torch.tensor([1, 1, 2])]).tolist()
    [[1, 3, 0], [1, 1, 2]]
    """
    width = max(int(r.numel()) for r in rows) if num_patches is None else num_patches
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        if r.numel() > width:
            raise ValueError(f"row {i} has {r.numel()} patches, more than the {width} allowed")
        out[i, : r.numel()] = r
    return out


def trim_padding(patch_lengths: torch.Tensor) -> torch.Tensor:
    """Drop columns that are padding in every row. (B, P) -> (B, P')."""
    keep = int(num_patches(patch_lengths).max()) if patch_lengths.numel() else 0
    return patch_lengths[:, :keep]


def check_patch_lengths(ids: torch.Tensor, patch_lengths: torch.Tensor) -> None:
    """Validate model inputs; raise ValueError that says what to fix.

    ids (B, T) in [0, 260); patch_lengths (B, P) non-negative, padding only on the right, each row
    summing to T, and the first patch exactly the BOS byte.
    """
    if ids.dim() != 2:
        raise ValueError(f"ids must be (B, T), got shape {tuple(ids.shape)}; add a batch dimension with ids[None]")
    if patch_lengths.dim() != 2 or patch_lengths.shape[0] != ids.shape[0]:
        raise ValueError(f"patch_lengths must be (B, P) with B = {ids.shape[0]}, got shape {tuple(patch_lengths.shape)}")
    if ids.dtype not in (torch.int64, torch.int32) or patch_lengths.dtype not in (torch.int64, torch.int32):
        raise ValueError("ids and patch_lengths must be integer tensors (torch.long)")
    T = ids.shape[1]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= VOCAB_SIZE):
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE}); got min {int(ids.min())}, max {int(ids.max())}")
    if patch_lengths.numel() and int(patch_lengths.min()) < 0:
        raise ValueError("patch_lengths must be >= 0")
    sums = patch_lengths.sum(dim=-1)
    if bool((sums != T).any()):
        row = int((sums != T).nonzero()[0])
        raise ValueError(f"patch_lengths of row {row} sum to {int(sums[row])}, but the sequence has T = {T} bytes")
    positive = patch_lengths > 0
    if bool((positive[:, 1:] & ~positive[:, :-1]).any()):
        raise ValueError("patch_lengths may have zero padding only on the right (a 0 followed by a positive length)")
    if T and (bool((patch_lengths[:, 0] != 1).any()) or bool((ids[:, 0] != BOS_ID).any())):
        raise ValueError("each row must start with BOS as a patch of its own (ids[:, 0] == 1 and patch_lengths[:, 0] == 1); "
                         "use blt.encode(), which adds BOS, and a patcher from blt.patching")
