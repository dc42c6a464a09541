"""Small builders shared by tests (random byte rows, random causal patchings)."""

from __future__ import annotations

import itertools

import torch

from blt.tokenizer import BOS_ID, OFFSET


def random_ids(B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """(B, T) ids: BOS then random bytes (no specials)."""
    ids = torch.randint(OFFSET, 256 + OFFSET, (B, T), generator=gen)
    ids[:, 0] = BOS_ID
    return ids


def random_start_mask(B: int, T: int, gen: torch.Generator, p: float) -> torch.Tensor:
    """(B, T) bool patch starts: BOS alone, byte 1 starts, then starts with probability p."""
    mask = torch.rand(B, T, generator=gen) < p
    mask[:, :2] = True
    return mask


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) start mask -> (B, P) patch lengths, right-padded with 0."""
    rows = []
    for row in mask:
        starts = row.nonzero().flatten().tolist() + [row.numel()]
        rows.append(torch.tensor([b - a for a, b in itertools.pairwise(starts)]))
    width = max(r.numel() for r in rows)
    return torch.stack([torch.nn.functional.pad(r, (0, width - r.numel())) for r in rows])
