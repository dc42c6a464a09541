"""The `blt` command line. Each subcommand lives in `blt/commands/<name>.py` with `add_arguments` and `run`.

Errors a user can cause (`BLTError`, missing files, permissions) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module under blt.commands, one-line help). A module may be missing: the command is not built yet.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "prepare the default corpus, train a tiny entropy model and BLT, show patches and a generation"),
    "data": ("data", "prepare byte shards from files, directories and globs (default: the Python standard library)"),
    "train-entropy": ("train_entropy", "train the byte-level entropy model used for patching"),
    "train": ("train", "train a BLT (or a baseline) on prepared data"),
    "train-baseline": ("train_baseline", "train a token baseline: a Llama-style model over BPE tokens or raw bytes"),
    "patch": ("patch", "show entropy patches of a text, or precompute entropies for a data directory"),
    "generate": ("generate", "generate bytes from a trained run"),
    "eval": ("eval", "validation bits-per-byte of a trained run"),
    "eval-char": ("eval_char", "character-level (CUTE-style) tasks and noisy-input robustness, against a baseline"),
    "finetune": ("finetune", "train a run briefly on the train split of the character-level tasks"),
    "flops": ("flops", "FLOPs per byte and parameter counts of a config"),
    "convert": ("convert", "convert transformers BltForCausalLM and reference bytelatent checkpoints to runs, and runs to transformers"),
    "compare": ("compare", "train BLT at patch sizes 4.5, 6, 8 and the BPE and byte baselines at one FLOP budget; table and plot"),
    "bench": ("bench", "benchmarks, each as a ratio against a baseline measured in the same run"),
}


def _load(module: str):
    try:
        return importlib.import_module(f"blt.commands.{module}")
    except ModuleNotFoundError as err:
        if err.name == f"blt.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    from blt import __version__

    parser = argparse.ArgumentParser(
        prog="blt",
        description="Byte Latent Transformer: a tokenizer-free language model over raw bytes.",
        epilog="Run `blt COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"blt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = _load(module_name)
        p = sub.add_parser(name, help=help_text if module else f"(not built yet) {help_text}", description=help_text)
        if module is not None:
            module.add_arguments(p)
        p.set_defaults(_module=module, _name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    from blt.allocator import keep_freed_memory
    from blt.errors import BLTError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args._module is None:
        print(f"blt {args._name}: not built yet in this version of blt; see the project's open issues", file=sys.stderr)
        return 2
    keep_freed_memory()  # no page faults for memory a step freed and the next one needs (blt/allocator.py)
    try:
        result = args._module.run(args)
    except BLTError as err:
        print(f"blt {args._name}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"blt {args._name}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"blt {args._name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `blt patch FILE | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
