"""Where the compute goes, file by file (`blt patch --stats FILE...`): each file's patches under one patching
rule, the entropy model's bits per byte on it, and what gzip -9 and xz -9 make of the same bytes.

A BLT runs its global model once per patch, so a file's share of the global model's work is its share of
the patches; where that share is larger than its share of the bytes, the file is harder than average.
"""

from __future__ import annotations

import gzip
import lzma
import math
from dataclasses import asdict, dataclass

import torch

from blt.patching.patchers import lengths_from_start_mask


def gzip_bits_per_byte(data: bytes) -> float:
    """Bits per byte of ``gzip -9`` (deflate at level 9, with gzip's header and trailer)."""
    return 8 * len(gzip.compress(data, compresslevel=9, mtime=0)) / len(data)


def xz_bits_per_byte(data: bytes) -> float:
    """Bits per byte of ``xz -9`` (LZMA2 at preset 9, in the .xz container)."""
    return 8 * len(lzma.compress(data, preset=9)) / len(data)


@dataclass
class FileStats:
    """One file: its bytes, its patches (not counting BOS's), and bits per byte by three measures."""

    name: str
    bytes: int
    patches: int
    model_bits_per_byte: float  # the entropy model's loss on the file's bytes (each predicted from BOS on)
    mean_entropy_bits: float  # the mean entropy the patcher thresholds, over the file's bytes
    gzip_bits_per_byte: float
    xz_bits_per_byte: float
    longest_patch: int

    @property
    def bytes_per_patch(self) -> float:
        return self.bytes / self.patches

    @property
    def global_steps_per_kb(self) -> float:
        return 1024 * self.patches / self.bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_per_patch": self.bytes_per_patch, "global_steps_per_kb": self.global_steps_per_kb}


def file_stats(name: str, data: bytes, entropies: torch.Tensor, surprisals: torch.Tensor,
               start_mask: torch.Tensor) -> FileStats:
    """The statistics of one file from its ``[BOS] bytes`` ids' per-position values (each (T,), T = bytes + 1):
    the entropies and surprisals of `EntropyModel.entropies_and_surprisals` and the patch starts."""
    if len(data) == 0 or entropies.shape != (len(data) + 1,) or surprisals.shape != entropies.shape \
            or start_mask.shape != entropies.shape:
        raise ValueError(f"{name}: expected (bytes + 1,) = ({len(data) + 1},) values for non-empty data")
    lengths = lengths_from_start_mask(start_mask[None])[0, 1:]  # the file's patches; BOS is a patch of its own
    lengths = lengths[lengths > 0]
    nll = surprisals[:-1].double()  # the prediction of each byte, from BOS on
    return FileStats(name=name, bytes=len(data), patches=len(lengths),
                     model_bits_per_byte=float(nll.sum()) / len(data) / math.log(2),
                     mean_entropy_bits=float(entropies[:-1].double().mean()) / math.log(2),
                     gzip_bits_per_byte=gzip_bits_per_byte(data), xz_bits_per_byte=xz_bits_per_byte(data),
                     longest_patch=int(lengths.max()))


def shares(rows: list[FileStats]) -> list[dict]:
    """Each file's share of all the bytes and of all the patches (the global model's steps), and their ratio."""
    total_bytes, total_patches = sum(r.bytes for r in rows), sum(r.patches for r in rows)
    return [{"bytes_share": r.bytes / total_bytes, "compute_share": r.patches / total_patches,
             "compute_per_byte": (r.patches / total_patches) / (r.bytes / total_bytes)} for r in rows]


def format_table(rows: list[FileStats]) -> str:
    """The `blt patch --stats` table: one line per file, then the total."""
    header = ("file", "bytes", "patches", "B/patch", "steps/KB", "bytes %", "compute %", "model bpb",
              "gzip -9", "xz -9")
    lines = []
    for r, s in zip(rows, shares(rows)):
        lines.append((r.name, f"{r.bytes:,}", f"{r.patches:,}", f"{r.bytes_per_patch:.2f}", f"{r.global_steps_per_kb:.1f}",
                      f"{100 * s['bytes_share']:.1f}", f"{100 * s['compute_share']:.1f}", f"{r.model_bits_per_byte:.3f}",
                      f"{r.gzip_bits_per_byte:.3f}", f"{r.xz_bits_per_byte:.3f}"))
    if len(rows) > 1:
        b, p = sum(r.bytes for r in rows), sum(r.patches for r in rows)
        model = sum(r.model_bits_per_byte * r.bytes for r in rows) / b
        gz = sum(r.gzip_bits_per_byte * r.bytes for r in rows) / b
        xz = sum(r.xz_bits_per_byte * r.bytes for r in rows) / b
        lines.append((f"all {len(rows)} files", f"{b:,}", f"{p:,}", f"{b / p:.2f}", f"{1024 * p / b:.1f}", "100.0", "100.0",
                      f"{model:.3f}", f"{gz:.3f}", f"{xz:.3f}"))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = []
    for k, row in enumerate([header, *lines]):
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if k == 0 or (k == len(lines) - 1 and len(rows) > 1):
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
