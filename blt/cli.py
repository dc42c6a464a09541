"""The `blt` command line. Each subcommand lives in `blt/commands/<name>.py` with `add_arguments` and `run`.

Errors a user can cause (bad arguments, `BLTError`, missing files, permissions, a model or batch too large
for memory) print one line on stderr and exit 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from typing import Callable, NoReturn

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
    "byteify": ("byteify", "turn a trained token model (ours or a transformers Llama) into a BLT, in two stages"),
    "flops": ("flops", "FLOPs per byte and parameter counts of a config"),
    "convert": ("convert", "convert transformers BltForCausalLM and reference bytelatent checkpoints to runs, and runs to transformers"),
    "compare": ("compare", "train BLT at patch sizes 4.5, 6, 8 and the BPE and byte baselines at one FLOP budget; table and plot"),
    "bench": ("bench", "benchmarks, each as a ratio against a baseline measured in the same run"),
}


INT64_MAX = 2**63 - 1
STOPPED = "stopped; run the same command again to continue"  # what a resumable job prints on Ctrl-C


def integer(text: str) -> int:
    """An integer option's value: one that fits in 64 bits, as every size, count and seed must for torch."""
    value = int(text)
    if abs(value) > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is out of range (integers here are at most 2**63 - 1)")
    return value


def finite(text: str) -> float:
    """A number option's value: a finite float (no nan, inf or overflow to inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr, exit code 2 (``--help`` shows the usage),
    and whose ``type=int`` and ``type=float`` options take only values that fit in 64 bits and finite numbers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("type", int, integer)
        self.register("type", float, finite)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`\n")


def one_line(text: str) -> str:
    """``text`` with its line breaks turned into spaces."""
    return " ".join(str(text).splitlines()).strip()


_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "Storage size calculation overflowed")
_TRIED = re.compile(r"(?:tried to allocate|Tried to allocate) ([\d.]+) ?(bytes|[KMGT]iB)")


def allocation_failure(err: BaseException) -> str | None:
    """A one-line description when ``err`` is an allocation that failed (torch's CPU or CUDA allocator, numpy,
    a size past what a tensor can hold), else None."""
    if isinstance(err, MemoryError):
        return "not enough memory" + (f" ({one_line(err)})" if str(err) else "")
    if not isinstance(err, RuntimeError) or not any(s in str(err) for s in _ALLOCATION_FAILURES):
        return None
    if "Storage size calculation overflowed" in str(err):
        return "a tensor of this size can't exist (its byte size overflows 64 bits)"
    tried = _TRIED.search(str(err))
    if tried is None:
        return "not enough memory"
    size = f"{float(tried.group(1)) / 2**30:,.3g} GiB" if tried.group(2) == "bytes" else f"{tried.group(1)} {tried.group(2)}"
    return f"not enough memory: an allocation of {size} failed"


def _load(module: str):
    try:
        return importlib.import_module(f"blt.commands.{module}")
    except ModuleNotFoundError as err:
        if err.name == f"blt.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    from blt.version import __version__

    parser = Parser(
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

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print("blt: error: no COMMAND given; `blt COMMAND --help` shows the options of one", file=sys.stderr)
        return 2
    if args._module is None:
        print(f"blt {args._name}: not built yet in this version of blt; see the project's open issues", file=sys.stderr)
        return 2
    keep_freed_memory()  # no page faults for memory a step freed and the next one needs (blt/allocator.py)
    return run_reporting_errors(f"blt {args._name}", lambda: args._module.run(args))


def run_reporting_errors(prog: str, job: Callable[[], int | None], interrupted: str = "interrupted") -> int:
    """Run ``job`` and return its exit code; an error a user can cause becomes one line on stderr and code 2.

    ``prog`` starts each line (``blt train``, or a script's name); ``interrupted`` is what Ctrl-C prints (code 130).
    Anything else is a bug and keeps its traceback.
    """
    from blt.errors import BLTError

    try:
        result = job()
    except BLTError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {one_line(err.strerror or err)}{one_line(where)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        failure = allocation_failure(err)
        if failure is None:
            raise
        print(f"{prog}: error: {failure}; choose a smaller model, batch or sequence length", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `blt patch FILE | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
