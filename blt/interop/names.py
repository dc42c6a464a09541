"""Our parameter names -> another layout's, from a few small tables (one `NameTable` per layout)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from blt.errors import CheckpointError

# Parameter names of one transformer block and one cross-attention module in our models.
BLOCK_NAMES = (
    "attention_norm.weight", "attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
    "attention.wo.weight", "ffn_norm.weight", "feed_forward.w1.weight", "feed_forward.w3.weight",
    "feed_forward.w2.weight",
)


@dataclass(frozen=True)
class NameTable:
    """How our BLT and entropy-model parameter names read in another layout."""

    layout: str  # for messages, e.g. "transformers"
    single: Mapping[str, str]  # whole names of BLT parameters outside the stacks
    stages: Mapping[str, str]  # encoder / global_model / decoder -> that layout's prefix
    block: Mapping[str, str]  # a block's parameter -> its name there
    cross: Mapping[str, str]  # a cross-attention's parameter -> its name there
    entropy_single: Mapping[str, str]  # entropy-model parameters outside its stack (prefix included)
    entropy_layers: str  # prefix of the entropy model's layers there, e.g. "model.patcher.layers."

    def blt(self, name: str) -> str:
        """Our BLT parameter name -> this layout's; CheckpointError when it has no counterpart."""
        if name in self.single:
            return self.single[name]
        m = re.fullmatch(r"(encoder|global_model|decoder)\.transformer\.layers\.(\d+)\.(.+)", name)
        if m and m.group(3) in self.block:
            return f"{self.stages[m.group(1)]}.layers.{m.group(2)}.{self.block[m.group(3)]}"
        m = re.fullmatch(r"(encoder|decoder)\.cross_attn_layers\.(\d+)\.(.+)", name)
        if m and m.group(3) in self.cross:
            return f"{self.stages[m.group(1)]}.cross_attn_layers.{m.group(2)}.{self.cross[m.group(3)]}"
        raise CheckpointError(f"no {self.layout} name for parameter {name!r}")

    def entropy(self, name: str) -> str:
        """Our entropy-model parameter name -> this layout's."""
        if name in self.entropy_single:
            return self.entropy_single[name]
        m = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", name)
        if m and m.group(2) in self.block:
            return f"{self.entropy_layers}{m.group(1)}.{self.block[m.group(2)]}"
        raise CheckpointError(f"no {self.layout} name for entropy-model parameter {name!r}")
