"""Small builders shared by tests (random byte rows, random causal patchings, the micro models of generation)."""

from __future__ import annotations

import itertools

import torch

from blt.config import (
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
)
from blt.patching.entropy_model import EntropyModel
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


def micro_config(**changes) -> BLTConfig:
    """Windows of 8 and 6 bytes, so prompts exceed them; GQA; cross-attention in every local layer."""
    cfg = BLTConfig(
        encoder=LocalEncoderConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, window=8, cross_attn_all_layers=True),
        global_model=GlobalConfig(dim=48, n_layers=2, n_heads=4, n_kv_heads=2),
        decoder=LocalDecoderConfig(dim=32, n_layers=2, n_heads=2, window=6, cross_attn_all_layers=True),
        hash=HashEmbeddingConfig(rows=97, num_functions=2),
        cross_attn_k=2,
        max_seq_len=64,
    )
    return cfg.replace(**changes)


def other_layout() -> BLTConfig:
    """Cross-attention in the last encoder / first decoder layer only, k = 1, no windows, no hash embeddings."""
    return micro_config(
        encoder=LocalEncoderConfig(dim=32, n_layers=1, n_heads=2, window=None, cross_attn_all_layers=False),
        decoder=LocalDecoderConfig(dim=32, n_layers=3, n_heads=4, window=None, cross_attn_all_layers=False),
        global_model=GlobalConfig(dim=32, n_layers=1, n_heads=2),
        hash=HashEmbeddingConfig(num_functions=0),
        cross_attn_k=1,
    )


def scaled_entropy_model(seed: int = 1) -> EntropyModel:
    """A random entropy model whose output is scaled up, so entropies spread over ~0-5 nats."""
    em = EntropyModel(EntropyModelConfig(dim=32, n_layers=2, n_heads=2, window=5, chunk_len=16)).init_weights(seed=seed)
    with torch.no_grad():
        em.output.weight.mul_(4.0)
    return em.eval()



def load_script(name: str, folder: str = "scripts"):
    """The module of ``<folder>/<name>.py`` (scripts and benchmarks are not packages)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
