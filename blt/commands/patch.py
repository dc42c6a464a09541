"""`blt patch FILE | --text TEXT --entropy-model RUN`: show where the patches of a text fall, with each
byte's entropy, statistics, and optionally a Figure-4-style plot (--png) and an HTML page (--html).

The threshold, when not given, comes from the BLT run's config (if RUN is a BLT run patching in the
same mode), else is calibrated on the input to a target mean patch size (the run's, or 4.5) when the
input has at least 2 KB, else is the released default θ_g = 1.335 nats. The header says which.

`blt patch --data DIR --entropy-model RUN [--batch-size N] [--precision bf16]` instead precomputes the
entropy model's per-byte entropies of every document of a prepared data directory and stores them beside
its shards (``DIR/entropies/<key>/``, see `blt.data.entropies`), so that `blt train` with that entropy model
reads them instead of running the entropy model in the loop. It shows progress in bytes/s, can be
interrupted and rerun to finish, and reuses finished work. Entropies computed in bf16 (faster where the
hardware has it) get a key of their own and say so in their manifest; a BLT trained on them computes every
other entropy in bf16 too (`blt.pipelines.recipes.entropy_model_for`).

`blt patch --stats FILE... --entropy-model RUN [--json OUT.json]` instead prints one line per file: bytes,
patches, bytes per patch, global steps per KB, the file's share of all the bytes and of all the patches (the
global model's compute), the entropy model's bits per byte, and gzip -9 / xz -9 bits per byte of the same
bytes (`blt.patching.file_stats`). One patching rule serves every file: the threshold given, the BLT run's, or
one calibrated on all the files together.

`blt patch --entropy-model RUN --curve OUT.png [FILE | --text TEXT | --data DIR]` instead plots how the
mean patch size grows with the threshold of global and monotonic patching, on the input or on a sample
of DIR's validation rows, with the thresholds that give mean patch sizes of 4.5, 6 and 8 bytes; the
numbers go to OUT.json beside it (`blt.patching.calibration.patch_size_curves`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from blt.commands._paths import check_output_file
from blt.config import ENTROPY_PRECISIONS, BLTConfig, PatchingConfig
from blt.data import PreparedData
from blt.errors import BLTError, CheckpointError
from blt.fileio import atomic_write_bytes, atomic_write_text
from blt.patching import (
    EntropyModel,
    Patcher,
    lengths_from_start_mask,
)
from blt.patching.calibration import calibration_sample, patch_size_curves, threshold_for_input
from blt.patching.file_stats import file_stats, format_table, shares
from blt.patching.precompute import DEFAULT_BATCH_SIZE, precompute_entropies, with_precision
from blt.run import ENTROPY_SUBDIR, load, read_run_config
from blt.tokenizer import encode
from blt.train import resolve_device
from blt.train.device import slow_bf16_warning
from blt.viz import (
    PLOT_BYTES,
    format_stats,
    patch_stats,
    plot_entropies,
    render_html,
    render_terminal,
    write_patch_size_curves,
)

SHOWN_MODES = ("entropy", "monotonic", "combined", "space", "static", "byte")
DEFAULT_TARGET_PATCH_SIZE = 4.5
SHOW_BYTES = 8192  # bytes shown in the terminal by default (a binary file shows about 4 characters a byte)
CURVE_ROWS = 64  # rows of the entropy model's training length that --curve --data measures on


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="*", type=Path, metavar="FILE",
                   help="file to patch ('-' reads standard input); with --stats, any number of files")
    p.add_argument("--stats", action="store_true",
                   help="instead, a table of patches, compute share and bits per byte for each FILE")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="with --stats: also write the table's numbers here")
    p.add_argument("--text", help="patch this text instead of a file")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="instead, precompute per-byte entropies beside a prepared data directory's shards, "
                        "for training")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=f"with --data: documents per entropy-model call (default: {DEFAULT_BATCH_SIZE})")
    p.add_argument("--precision", choices=list(ENTROPY_PRECISIONS),
                   help="what the entropy model computes in (default: what RUN records, fp32 for a `blt "
                        "train-entropy` run); with --data, entropies precomputed in bf16 are kept apart from fp32 "
                        "ones, and `blt train` patches in the precision of those it finds")
    p.add_argument("--device", help="with --data or --curve: where the entropy model runs (default: cuda if "
                   "available, else cpu)")
    p.add_argument("--curve", type=Path, metavar="OUT.png",
                   help="instead, plot the mean patch size against the threshold (global and monotonic modes) on "
                        f"the input, or on {CURVE_ROWS} validation rows of --data DIR, and write the numbers to "
                        "OUT.json")
    p.add_argument("--entropy-model", required=True, type=Path, metavar="RUN",
                   help="entropy-model run (from `blt train-entropy`), or a BLT run that carries one")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--threshold", type=float, metavar="NATS",
                      help="entropy threshold (θ_g; θ_r for --mode monotonic)")
    size.add_argument("--target-patch-size", type=float, metavar="BYTES",
                      help="calibrate the threshold on the input to this mean patch size (e.g. 4.5, 6, 8)")
    p.add_argument("--relative-threshold", type=float, metavar="NATS", help="θ_r for --mode combined")
    p.add_argument("--mode", choices=SHOWN_MODES, help="patching scheme (default: the BLT run's, else entropy)")
    p.add_argument("--max-patch-length", type=int, metavar="N", help="split patches longer than N bytes "
                   "(default: the BLT run's)")
    p.add_argument("--patch-size", type=int, metavar="K", help="bytes per patch for --mode static (default: the "
                   "BLT run's, else 4)")
    p.add_argument("--width", type=int, default=100,
                   help="wrap the shown text at this many columns (default: %(default)s)")
    p.add_argument("--show-bytes", type=int, default=SHOW_BYTES, metavar="N",
                   help="show the first N bytes in the terminal, 0 for all (default: %(default)s)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="shade bytes by entropy: auto = when stdout is a terminal and NO_COLOR is unset")
    p.add_argument("--png", type=Path, metavar="OUT.png", help="also plot the entropies and patch starts here")
    p.add_argument("--plot-bytes", type=int, default=PLOT_BYTES, metavar="N",
                   help="plot the first N bytes (default: %(default)s)")
    p.add_argument("--html", type=Path, metavar="OUT.html", help="also write a self-contained HTML page here")


# --- inputs --------------------------------------------------------------------------------------

def read_input(args: argparse.Namespace) -> tuple[bytes, str]:
    """The bytes to patch and a name for them."""
    if args.file and args.text is not None:
        raise BLTError("give either FILE or --text, not both")
    if len(args.file) > 1:
        raise BLTError(f"give one FILE to show ({len(args.file)} given); --stats takes several")
    if args.text is not None:
        data, name = args.text.encode("utf-8", errors="surrogateescape"), "--text"
    elif not args.file:
        raise BLTError("nothing to patch: give a FILE, --text TEXT, or --data DIR")
    else:
        data, name = read_file(args.file[0])
    if not data:
        raise BLTError(f"{name} is empty: there is nothing to patch (BOS alone is a patch of its own)")
    return data, name


def read_file(path: Path) -> tuple[bytes, str]:
    """A file's bytes and its name ('-': standard input)."""
    if str(path) == "-":
        return sys.stdin.buffer.read(), "standard input"
    if path.is_dir():
        raise BLTError(f"{path} is a directory; give a file to patch (or --data DIR for a prepared data directory)")
    if not path.exists():
        raise BLTError(f"{path} does not exist")
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise BLTError(f"cannot read {path}: {err.strerror or err}") from None


def load_entropy_model(run_dir: Path, precision: str | None = None) -> tuple[EntropyModel, PatchingConfig | None]:
    """The entropy model of an entropy-model run or of a BLT run (its ``entropy_model/``), computing in
    ``precision`` (default: the one its run records, fp32 unless a BLT run's was precomputed in bf16), and
    the BLT run's patching config (None for an entropy-model run). A BLT run's own weights are not loaded."""
    record = read_run_config(run_dir)
    if record["kind"] == "entropy_model":
        model, patching = load(run_dir, expect="entropy_model").model, None
    else:
        patching = BLTConfig.from_dict(record["model"]).patching
        if not (run_dir / ENTROPY_SUBDIR).is_dir():
            raise CheckpointError(f"{run_dir} is a BLT run without an {ENTROPY_SUBDIR}/ folder; pass the entropy-model "
                                  "run it was patched with")
        model = load(run_dir / ENTROPY_SUBDIR, expect="entropy_model").model
    if precision is not None:
        with_precision(model, precision)
    return model, patching


def _finite(flag: str, value: float | None, at_least: float | None = None) -> None:
    if value is not None and (not math.isfinite(value) or (at_least is not None and value < at_least)):
        bound = f" >= {at_least:g}" if at_least is not None else ""
        raise BLTError(f"{flag} must be a finite number{bound}, got {value}")


def check_options(args: argparse.Namespace) -> None:
    _finite("--threshold", args.threshold)
    _finite("--relative-threshold", args.relative_threshold)
    _finite("--target-patch-size", args.target_patch_size, at_least=1)
    for flag, value, least in (("--max-patch-length", args.max_patch_length, 1), ("--patch-size", args.patch_size, 1),
                               ("--width", args.width, 20), ("--plot-bytes", args.plot_bytes, 2),
                               ("--show-bytes", args.show_bytes, 0)):
        if value is not None and value < least:
            raise BLTError(f"{flag} must be at least {least}, got {value}")


# --- the threshold -------------------------------------------------------------------------------

def choose_patching(args: argparse.Namespace, run_patching: PatchingConfig | None,
                    entropies: torch.Tensor) -> tuple[PatchingConfig, str]:
    """The patching config to show, and a line describing it (with how its threshold was chosen).

    Unset options come from the BLT run's patching config (``run_patching``) where it has them.
    ``entropies`` are the entropy model's (T,) entropies of the input with BOS, for calibration.
    """
    mode = args.mode or (run_patching.mode if run_patching is not None else "entropy")
    if mode not in SHOWN_MODES:
        raise BLTError(f"the BLT run patches with mode {mode!r}, which `blt patch` can't show; pass --mode")
    same = run_patching if run_patching is not None and run_patching.mode == mode else None
    entropy_mode = mode in ("entropy", "monotonic", "combined")
    if not entropy_mode and (args.threshold is not None or args.target_patch_size is not None):
        raise BLTError(f"--threshold and --target-patch-size are for the entropy modes, not --mode {mode}")
    if args.relative_threshold is not None and mode != "combined":
        raise BLTError("--relative-threshold is θ_r of --mode combined; for --mode monotonic use --threshold")
    if args.patch_size is not None and mode != "static":
        raise BLTError(f"--patch-size is for --mode static, not --mode {mode}")
    max_patch_length = args.max_patch_length or (run_patching.max_patch_length if run_patching else None)
    cap = f", patches split at {max_patch_length} bytes" if max_patch_length else ""
    if not entropy_mode:
        patch_size = args.patch_size or (same.patch_size if same is not None else 4)
        config = PatchingConfig(mode=mode, max_patch_length=max_patch_length, patch_size=patch_size)
        scheme = f"static patching, {patch_size} bytes per patch" if mode == "static" else f"{mode} patching"
        return config, scheme + cap

    relative = args.relative_threshold if args.relative_threshold is not None else (
        same.relative_threshold if same is not None else None)
    if mode == "combined" and relative is None:
        raise BLTError("--mode combined needs --relative-threshold θ_r (nats) as well as θ_g")
    target = (run_patching.target_patch_size if run_patching is not None else None) or DEFAULT_TARGET_PATCH_SIZE
    threshold, how = threshold_for_input(entropies, mode, given=args.threshold, target_patch_size=args.target_patch_size,
                                         inherited=same.threshold if same is not None else None, default_target=target,
                                         relative=relative, max_patch_length=max_patch_length)
    config = PatchingConfig(mode=mode, threshold=threshold, relative_threshold=relative if mode == "combined" else None,
                            max_patch_length=max_patch_length)
    name = "θ_r" if mode == "monotonic" else "θ_g"
    extra = f", θ_r = {relative:.4g} nats" if mode == "combined" else ""
    return config, f"{mode} patching, {name} = {threshold:.4g} nats ({how}){extra}{cap}"


# --- the command ---------------------------------------------------------------------------------

def use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def choose_device(args: argparse.Namespace) -> torch.device:
    """--device (`blt.train.resolve_device`: cpu, cuda, cuda:N), else a GPU when torch sees one, else the CPU."""
    return resolve_device("auto" if args.device is None else args.device)


def precompute(args: argparse.Namespace) -> int:
    """``--data DIR``: store the entropy model's per-byte entropies of DIR's documents beside its shards."""
    shown_only = {"FILE": args.file or None, "--text": args.text, "--stats": args.stats or None, "--json": args.json,
                  "--threshold": args.threshold,
                  "--target-patch-size": args.target_patch_size, "--relative-threshold": args.relative_threshold,
                  "--mode": args.mode, "--max-patch-length": args.max_patch_length, "--patch-size": args.patch_size,
                  "--png": args.png, "--html": args.html}
    given = [flag for flag, value in shown_only.items() if value is not None]
    if given:
        raise BLTError(f"{given[0]} does not go with --data: --data only precomputes entropies for training "
                       "(patching options belong to `blt train`)")
    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise BLTError(f"--batch-size must be at least 1, got {batch_size}")
    device = choose_device(args)
    data = PreparedData.open(args.data)
    entropy_model, _ = load_entropy_model(args.entropy_model, args.precision)
    if warning := slow_bf16_warning(device, entropy_model.cfg.precision):
        print(f"blt patch: {warning}", file=sys.stderr)
    report = precompute_entropies(data, entropy_model.to(device), source=args.entropy_model, batch_size=batch_size)
    rate = report.computed_bytes / max(report.seconds, 1e-9)
    print(f"entropies of {report.documents:,} documents ({report.bytes / 1e6:,.1f} MB, computed in "
          f"{entropy_model.cfg.precision}) -> {report.path}")
    if report.computed_bytes:
        print(f"computed {report.computed_bytes / 1e6:,.1f} MB in {report.seconds:,.1f} s ({rate / 1e6:.3g} MB/s) "
              f"on {device}; reused {report.reused_bytes / 1e6:,.1f} MB finished before")
    else:
        print("all finished before; nothing to compute")
    return 0


def curve(args: argparse.Namespace) -> int:
    """``--curve OUT.png``: the mean patch size against the threshold, on the input or on --data's rows."""
    options = {"--threshold": args.threshold, "--target-patch-size": args.target_patch_size,
               "--relative-threshold": args.relative_threshold, "--mode": args.mode, "--patch-size": args.patch_size,
               "--png": args.png, "--html": args.html, "--batch-size": args.batch_size,
               "--stats": args.stats or None, "--json": args.json}
    given = [flag for flag, value in options.items() if value is not None]
    if given:
        raise BLTError(f"{given[0]} does not go with --curve: the curve sweeps the thresholds of the global and "
                       "monotonic modes")
    if args.curve.suffix.lower() != ".png":
        raise BLTError(f"--curve {args.curve} must name a .png file (the numbers go to a .json beside it)")
    check_output_file(args.curve, "--curve", make_parents=True)
    if args.data is not None and (args.file or args.text is not None):
        raise BLTError("give one sample for --curve: FILE, --text or --data, not several")
    check_options(args)
    device = choose_device(args)
    entropy_model, run_patching = load_entropy_model(args.entropy_model, args.precision)
    max_patch_length = args.max_patch_length or (run_patching.max_patch_length if run_patching else None)
    if args.data is not None:
        seq_len = entropy_model.cfg.max_seq_len
        sample, split = calibration_sample(PreparedData.open(args.data), seq_len, CURVE_ROWS)
        source = f"{CURVE_ROWS} random rows of {seq_len} bytes of the {split} split of {args.data}"
    else:
        data, source = read_input(args)
        sample = encode(data)[None]  # (1, T)
    entropies = entropy_model.to(device).entropies(sample.to(device)).cpu()  # (B, T)
    try:
        curves = patch_size_curves(entropies, max_patch_length=max_patch_length)
    except ValueError as err:  # a sample too short to measure
        raise BLTError(f"{source}: {err}") from None
    curves["sample"] = source
    png, numbers = write_patch_size_curves(curves, args.curve)
    cap = f", patches split at {max_patch_length} bytes" if max_patch_length else ""
    print(f"{source}: mean patch size against the threshold ({curves['bytes']:,} bytes{cap})")
    for mode, name in (("entropy", "global θ_g"), ("monotonic", "monotonic θ_r")):
        targets = [f"{t['target']:g} bytes at {t['threshold']:.4g}" if t["threshold"] is not None
                   else f"{t['target']:g} bytes out of reach" for t in curves["modes"][mode]["targets"]]
        print(f"  {name:<14} " + ", ".join(targets))
    print(f"wrote {png} and {numbers}")
    return 0


def file_table(args: argparse.Namespace) -> int:
    """``--stats FILE...``: per file, its patches, share of the global model's compute and bits per byte."""
    given = [flag for flag, value in {"--text": args.text, "--png": args.png, "--html": args.html}.items()
             if value is not None]
    if given:
        raise BLTError(f"{given[0]} does not go with --stats, which takes FILE arguments and prints a table")
    if not args.file:
        raise BLTError("--stats needs one or more FILE arguments")
    check_options(args)
    if sum(str(f) == "-" for f in args.file) > 1:
        raise BLTError("standard input ('-') can be given once")
    check_output_file(args.json, "--json")
    files = [read_file(path) for path in args.file]
    empty = [name for data, name in files if not data]
    if empty:
        raise BLTError(f"{empty[0]} is empty: there is nothing to patch")
    entropy_model, run_patching = load_entropy_model(args.entropy_model, args.precision)
    device = choose_device(args)
    entropy_model = entropy_model.to(device)
    measured = []  # (ids, entropies, surprisals) of each file, on the CPU
    for data, _ in files:
        ids = encode(data)
        entropies, surprisals = entropy_model.entropies_and_surprisals(ids.to(device))
        measured.append((ids, entropies.cpu(), surprisals.cpu()))
    config, description = choose_patching(args, run_patching, torch.cat([e for _, e, _ in measured]))
    patcher = Patcher(config, entropy_model.cpu())
    rows = [file_stats(name, data, entropies, surprisals, patcher.start_mask(ids[None], entropies[None])[0])
            for (data, name), (ids, entropies, surprisals) in zip(files, measured)]
    if len(files) > 1:
        description = description.replace("on this input", "on all the files together")
        description += f" (one rule for all {len(files)} files)"
    print(description)
    print(f"entropy model: {args.entropy_model}")
    print()
    print(format_table(rows))
    if args.json is not None:
        record = {"patching": description, "entropy_model": str(args.entropy_model), "config": asdict(config),
                  "files": [{**r.to_dict(), **s} for r, s in zip(rows, shares(rows))]}
        path = atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.curve is not None:
        return curve(args)
    if args.data is not None:
        return precompute(args)
    if args.batch_size is not None:
        raise BLTError("--batch-size is for --data DIR (precomputing entropies)")
    if args.stats:
        return file_table(args)
    if args.json is not None:
        raise BLTError("--json goes with --stats")
    if args.device is not None:
        raise BLTError("--device is for --data DIR, --curve and --stats")
    check_options(args)
    check_output_file(args.png, "--png")
    check_output_file(args.html, "--html")
    data, name = read_input(args)
    entropy_model, run_patching = load_entropy_model(args.entropy_model, args.precision)
    ids = encode(data)  # (T,) = BOS + bytes
    entropies = entropy_model.entropies(ids)  # (T,) H_i: entropy of the byte after position i
    config, description = choose_patching(args, run_patching, entropies)
    start_mask = Patcher(config, entropy_model).start_mask(ids[None], entropies[None])  # (1, T)
    lengths = lengths_from_start_mask(start_mask)[0, 1:]  # the text's patches; BOS is the first, of 1 byte
    # Per byte j of the text (position j + 1): its start, and the entropy that decided it, H_j.
    byte_starts, byte_entropies = start_mask[0, 1:], entropies[:-1]
    shown_threshold = config.threshold if config.mode in ("entropy", "combined") else None
    stats = patch_stats(lengths)

    print(f"{name}: {description}")
    print(f"entropy model: {args.entropy_model}")
    print()
    shown = len(data) if args.show_bytes == 0 else min(len(data), args.show_bytes)
    print(render_terminal(data[:shown], byte_entropies[:shown], byte_starts[:shown], shown_threshold,
                          color=use_color(args.color), width=args.width,
                          truecolor=os.environ.get("COLORTERM") in ("truecolor", "24bit")))
    if shown < len(data):
        print(f"(the first {shown:,} of {len(data):,} bytes; the statistics below are of all of them; "
              "--show-bytes 0 shows every byte)")
    print()
    print(format_stats(stats))
    if args.png is not None:
        path = plot_entropies(data, byte_entropies, byte_starts, shown_threshold, args.png, max_bytes=args.plot_bytes,
                              title=f"{config.mode.capitalize()} patching" + (f" of {name}" if args.file else ""))
        print(f"wrote {path}")
    if args.html is not None:
        page = render_html(data, byte_entropies, byte_starts, shown_threshold, title=f"Patches of {name}",
                           notes=[description, f"entropy model: {args.entropy_model}"])
        print(f"wrote {atomic_write_bytes(args.html, page.encode('utf-8'))}")
    return 0
