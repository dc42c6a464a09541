"""`blt data prepare SOURCE... --out DIR`, `blt data info DIR` and `blt data mixed --out FILES [--prepare DIR]`."""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np

from blt.data import (
    DEFAULT_SHARD_BYTES,
    DEFAULT_VAL_FRACTION,
    Manifest,
    PreparedData,
    byte_summary,
    prepare,
)
from blt.data.mixed import DEFAULT_FILES_PER_KIND, KINDS, MIXED_VAL_FRACTION, build_mixed
from blt.errors import DataError

_SIZE = re.compile(r"^(\d+)([KMG]i?B?)?$", re.IGNORECASE)


def _size(text: str) -> int:
    """``1048576``, ``64M``, ``1GiB`` -> bytes (suffixes are powers of 1024)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1048576, 64M, 1G)")
    unit = (match.group(2) or "")[:1].upper()
    size = int(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit]
    if size > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (sizes here are at most 2**63 - 1 bytes)")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("prepare", help="files, directories and globs -> byte shards, index and manifest",
                       description="Prepare any files (each file one document) into uint8 shards with a "
                                   "deterministic train/validation split by document. Without SOURCE: the Python "
                                   "standard library's .py files and pydoc topics of this interpreter.")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="file, directory (recursive) or glob pattern")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; see --force)")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help=f"expected fraction of documents for validation (default {DEFAULT_VAL_FRACTION})")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--shard-bytes", type=_size, default=DEFAULT_SHARD_BYTES, metavar="N",
                   help=f"target shard size, e.g. 64M (default {DEFAULT_SHARD_BYTES // 2**20}M)")
    p.add_argument("--force", action="store_true",
                   help="replace DIR if it holds prepared data (anything else in it is never deleted)")
    m = sub.add_parser("mixed", help="write a corpus of mixed bytes (prose, code, speech, images, PDF, "
                       "compressed, random, degenerate), made here with nothing downloaded",
                       description="Write one folder per kind of file into --out (see blt.data.mixed); a kind whose "
                                   "tool is missing is skipped with a line saying so. With --prepare, also prepare "
                                   "them as `blt data prepare` would.")
    m.add_argument("--out", required=True, metavar="FILES", help="folder for the files (new, empty, or an earlier "
                   "build's, whose kinds are replaced)")
    m.add_argument("--prepare", metavar="DIR", help="then prepare the files into DIR (see --force)")
    m.add_argument("--files-per-kind", type=int, default=DEFAULT_FILES_PER_KIND,
                   help=f"files of each kind (default {DEFAULT_FILES_PER_KIND})")
    m.add_argument("--kinds", nargs="+", choices=KINDS, metavar="KIND", default=list(KINDS),
                   help=f"the kinds to write (default: all of {', '.join(KINDS)})")
    m.add_argument("--seed", type=int, default=0, help="seed of the files and of the split (default 0)")
    m.add_argument("--val-fraction", type=float, default=MIXED_VAL_FRACTION,
                   help=f"with --prepare: expected fraction of documents for validation (default {MIXED_VAL_FRACTION})")
    m.add_argument("--force", action="store_true", help="with --prepare: replace DIR if it holds prepared data")
    i = sub.add_parser("info", help="documents, bytes, shards and byte statistics of a prepared directory")
    i.add_argument("dir", metavar="DIR")
    i.add_argument("--no-verify", action="store_true", help="skip checking the sha256 of every shard")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        return _prepare(args)
    if args.data_command == "mixed":
        return _mixed(args)
    return _info(args)


def _mixed(args: argparse.Namespace) -> int:
    report = build_mixed(args.out, files_per_kind=args.files_per_kind, seed=args.seed, kinds=tuple(args.kinds))
    total = sum(report.bytes.values())
    print(f"wrote {sum(report.files.values())} files, {_human(total)} ({total:,} bytes) of {len(report.files)} kinds "
          f"into {_show_path(args.out)}" + (f"; skipped {', '.join(report.skipped)}" if report.skipped else ""))
    for note in report.notes:
        print(f"  note: {note}")
    if not report.files:
        raise DataError("no kind could be written")
    if args.prepare is None:
        print(f"next: blt data prepare {_show_path(args.out)} --out DIR --val-fraction {args.val_fraction:g}")
        return 0
    args.sources, args.out, args.shard_bytes = [args.out], args.prepare, DEFAULT_SHARD_BYTES
    return _prepare(args)


def _prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    manifest = prepare(args.sources or None, args.out, val_fraction=args.val_fraction, seed=args.seed,
                       shard_bytes=args.shard_bytes, force=args.force)
    seconds = time.perf_counter() - start
    total = manifest.total_bytes
    print(f"prepared {manifest.total_documents} documents, {_human(total)} ({total:,} bytes) "
          f"into {_show_path(args.out)} "
          f"in {seconds:.1f} s ({_human(total / max(seconds, 1e-9))}/s)")
    _print_splits(manifest)
    if manifest.skipped:
        print("  skipped: " + ", ".join(f"{n} {_SKIPPED[kind]}" for kind, n in manifest.skipped.items()))
    return 0


_SKIPPED = {"empty": "empty files", "duplicate": "files reached twice", "special": "special files or links"}


def _info(args: argparse.Namespace) -> int:
    data = PreparedData.open(args.dir, verify=not args.no_verify)
    m = data.manifest
    print(f"{_show_path(args.dir)}: {m.total_documents} documents, {_human(m.total_bytes)} ({m.total_bytes:,} bytes); "
          f"created {m.created_at} by {m.created_by}, format {m.format} v{m.format_version}")
    print(f"  sources: {', '.join(m.sources)}; seed {m.args['seed']}, val fraction {m.args['val_fraction']}")
    _print_splits(m)
    histogram = np.sum([s.byte_histogram for s in m.splits.values()], axis=0)
    summary = byte_summary(histogram)
    print(f"  bytes: {summary['printable_ascii']:.1%} printable ASCII (with tab/newline), "
          f"{summary['high']:.1%} >= 0x80, {summary['other_control']:.1%} other control, {summary['nul']:.1%} NUL; "
          f"{int(summary['distinct'])} distinct values")
    top = np.argsort(histogram, kind="stable")[::-1][:8]
    print("  most common: " + ", ".join(f"{_show_byte(int(b))} {histogram[b] / histogram.sum():.1%}"
                                        for b in top if histogram[b]))
    if m.skipped:
        print("  skipped when prepared: " + ", ".join(f"{n} {_SKIPPED.get(kind, kind)}" for kind, n in m.skipped.items()))
    checked = "sizes and sha256" if not args.no_verify else "sizes"
    print(f"  ok: {checked} of {len(m.shards)} shards match the manifest")
    return 0


def _print_splits(manifest: Manifest) -> None:
    for name, stats in manifest.splits.items():
        print(f"  {name}: {stats.documents} documents, {stats.bytes:,} bytes, {stats.shards} "
              f"shard{'s' if stats.shards != 1 else ''}")


def _show_path(path: str) -> str:
    """A path for the terminal: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _show_byte(b: int) -> str:
    """``'e'``, ``' '``, ``'\\n'`` for ASCII; ``0xe9`` above."""
    return repr(chr(b)) if b < 0x80 else f"0x{b:02x}"


def _human(n: float) -> str:
    """``12.6 MiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")
