"""Data: files -> byte shards (`prepare`), memory-mapped reading (`PreparedData`), batches (`ByteBatchIterator`),
per-byte entropies stored beside the shards (`PrecomputedEntropies`; `blt.patching.precompute` computes them).

>>> manifest = prepare(["corpus/"], "data_cache/mine")                  # doctest: +SKIP
>>> data = PreparedData.open("data_cache/mine")                          # doctest: +SKIP
>>> it = ByteBatchIterator(data, "train", seq_len=512, batch_size=8, seed=0)  # doctest: +SKIP
>>> ids = next(it)            # LongTensor[8, 512], every row starts with BOS   # doctest: +SKIP
>>> it.load_state(it.state().to_dict())                                  # doctest: +SKIP
>>> stored = PrecomputedEntropies.open(data, key)                        # doctest: +SKIP
>>> ids, entropies = next(ByteBatchIterator(data, "train", 512, 8, entropies=stored))  # doctest: +SKIP
"""

from blt.data.entropies import (
    PrecomputedEntropies,
    SplitEntropies,
)
from blt.data.iterator import (
    ByteBatchIterator,
    IteratorState,
    epoch_order,
    validation_batches,
)
from blt.data.manifest import DocumentEntry, Manifest, ShardEntry, SplitStats
from blt.data.prepared import PreparedData, Split, byte_summary
from blt.data.sources import default_corpus_documents
from blt.data.writer import (
    DEFAULT_SHARD_BYTES,
    DEFAULT_VAL_FRACTION,
    assign_split,
    assign_splits,
    prepare,
)

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "DEFAULT_VAL_FRACTION",
    "ByteBatchIterator",
    "DocumentEntry",
    "IteratorState",
    "Manifest",
    "PrecomputedEntropies",
    "PreparedData",
    "ShardEntry",
    "Split",
    "SplitEntropies",
    "SplitStats",
    "assign_split",
    "assign_splits",
    "byte_summary",
    "default_corpus_documents",
    "epoch_order",
    "prepare",
    "validation_batches",
]
