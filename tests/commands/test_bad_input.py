"""Bad input never gets a traceback: every `blt` subcommand, driven in-process through `blt.cli.main` with
generated bad arguments and files, exits with code 2, says why in exactly one line on stderr, and leaves every
existing run and prepared data directory as it was (the same files with the same bytes and times).

A case is a valid command line (a `Template`, over the small runs that `world` trains once for the module) with
one to three of its slots replaced by a bad value (`Bad`): a missing path, an empty or binary file, a directory
where a file belongs and a file where a directory belongs, a huge size, a value of the wrong type, a negative or
zero count, nan and inf, text that is not UTF-8, a corrupt copy of a run (its config.json, its weights' header
and data, its entropy model, its tokenizer) or of a prepared data directory (its manifest, index and shards).
Every bad value is invalid whatever the other slots hold, so exit code 2 is always the right answer.

CI runs `SHORT_EXAMPLES` cases per template; ``pytest -m long tests/commands/test_bad_input.py`` runs
`LONG_EXAMPLES`. The module reports how many cases it tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from blt.bench import torch_threads
from blt.cli import main
from blt.config import HashEmbeddingConfig
from blt.data import prepare
from blt.interop.bytelatent import reference_entropy_name, reference_sources
from tests.evaluate.conftest import pseudo_words
from tests.train.conftest import synthetic_documents

SHORT_EXAMPLES = 50  # cases per template in CI
LONG_EXAMPLES = 1000  # cases per template with `-m long`
CASE_SECONDS = 60  # a case running longer did work before checking its input
CASE_MEMORY = 4 * 2**30  # address space a case may add; more is an allocation no bad input should reach

CASES: Counter[str] = Counter()  # cases tried per template, reported at the end of the module


# --- the world: small runs of every kind, trained once ---------------------------------------------------------

MICRO_ENTROPY = ["dim=32", "n_layers=1", "n_heads=2", "window=32", "max_seq_len=64"]
MICRO_BLT = ["encoder.dim=32", "encoder.n_layers=1", "encoder.n_heads=2", "encoder.window=32", "global_model.dim=64",
             "global_model.n_layers=1", "global_model.n_heads=2", "decoder.dim=32", "decoder.n_layers=1",
             "decoder.n_heads=2", "decoder.window=32", "hash.rows=257", "max_seq_len=64"]
MICRO_TOKEN = ["dim=32", "n_layers=1", "n_heads=2"]
MICRO_TRAIN = ["train.batch_size=2", "train.seq_len=64", "train.eval_batches=1", "train.log_every=1",
               "train.checkpoint_every=1", "train.warmup_steps=1"]
THRESHOLD = "2.0"


def sets(values: list[str], prefix: str = "") -> list[str]:
    return [arg for value in values for arg in ("--set", prefix + value)]


@dataclass(frozen=True)
class World:
    """Read-only inputs every case may name: prepared data, its corpus, runs of every kind (`blt train-entropy`,
    `blt train`, the byte and BPE baselines), a transformers export, a reference bytelatent checkpoint, a word
    list, a short text, and texts for the noise evaluation."""

    root: Path
    cases: Path  # each case's scratch directory is made here, outside root

    def __getattr__(self, name: str) -> Path:
        return self.root / name


def cli(argv: list[str]) -> None:
    code = main([str(a) for a in argv])
    assert code == 0, argv


def write_bytelatent(blt_run: Path, out: Path) -> None:
    """The reference release's layout of a BLT run: config.json ``{"args"}`` and model.safetensors with the
    reference's names, the entropy model as params.json and consolidated.pth under ``entropy_model/``."""
    record = json.loads((blt_run / "config.json").read_text())
    m = record["model"]
    enc, glob, dec, hashing = m["encoder"], m["global_model"], m["decoder"], m["hash"]
    args = {
        "dim_local_encoder": enc["dim"], "n_layers_local_encoder": enc["n_layers"], "n_heads_local_encoder": enc["n_heads"],
        "dim_global": glob["dim"], "n_layers_global": glob["n_layers"], "n_heads_global": glob["n_heads"],
        "dim_local_decoder": dec["dim"], "n_layers_local_decoder": dec["n_layers"], "n_heads_local_decoder": dec["n_heads"],
        "cross_attn_nheads": enc["n_heads"], "cross_attn_k": m["cross_attn_k"],
        "cross_attn_all_layers_encoder": enc["cross_attn_all_layers"],
        "cross_attn_all_layers_decoder": dec["cross_attn_all_layers"], "cross_attn_encoder": True,
        "cross_attn_decoder": True, "cross_attn_init_by_pooling": True, "downsampling_by_pooling": "max",
        "use_local_encoder_transformer": True, "encoder_hash_byte_group_size": ",".join(map(str, hashing["ngram_sizes"])),
        "encoder_hash_byte_group_vocab": hashing["rows"], "encoder_hash_byte_group_nb_functions": hashing["num_functions"],
        "local_attention_window_len": enc["window"], "max_encoder_seq_length": m["max_seq_len"],
        "max_seqlen": m["max_seq_len"], "rope_theta": glob["rope_theta"], "norm_eps": glob["norm_eps"],
        "multiple_of": 256, "ffn_dim_multiplier": 1.0, "vocab_size": 260, "patching_mode": "entropy",
        "patching_threshold": m["patching"]["threshold"],
    }
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"args": args}))
    ours = load_file(blt_run / "model.safetensors")
    theirs = {}
    for name, pieces in reference_sources(list(ours), HashEmbeddingConfig(**hashing)).items():
        for piece, tensor in zip(pieces, ours[name].split(hashing["rows"]) if len(pieces) > 1 else [ours[name]]):
            theirs[piece] = tensor.clone()
    save_file(theirs, out / "model.safetensors")
    entropy = json.loads((blt_run / "entropy_model" / "config.json").read_text())["model"]
    (out / "entropy_model").mkdir()
    (out / "entropy_model" / "params.json").write_text(json.dumps({"entropy_model": {
        "dim": entropy["dim"], "n_layers": entropy["n_layers"], "n_heads": entropy["n_heads"],
        "max_seqlen": entropy["max_seq_len"], "ffn_dim_multiplier": 1.0, "vocab_size": 260}}))
    entropy_tensors = load_file(blt_run / "entropy_model" / "model.safetensors")
    torch.save({"model": {reference_entropy_name(n): t for n, t in entropy_tensors.items()}},
               out / "entropy_model" / "consolidated.pth")


def build_world(root: Path) -> None:
    """Prepare the data and train, convert and write every input of `World` into ``root`` (a few seconds)."""
    corpus = root / "corpus"
    corpus.mkdir()
    for name, data in synthetic_documents(40, seed=0).items():
        (corpus / name).write_bytes(data)
    prepare([str(corpus)], root / "data", val_fraction=0.1, seed=0, progress=False)
    common = ["--data", root / "data", "--steps", "2", "--quiet"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli(["train-entropy", *common, "--out", root / "ent", *sets(MICRO_ENTROPY + MICRO_TRAIN)])
        cli(["train", *common, "--entropy-model", root / "ent", "--out", root / "blt", "--threshold", THRESHOLD,
             *sets(MICRO_BLT + MICRO_TRAIN)])
        cli(["train-baseline", "--kind", "byte", *common, "--out", root / "byte", *sets(MICRO_TOKEN + MICRO_TRAIN)])
        cli(["train-baseline", "--kind", "bpe", "--vocab-size", "300", "--bpe-train-bytes", "20000", *common,
             "--out", root / "bpe", *sets(MICRO_TOKEN + MICRO_TRAIN)])
        cli(["convert", "--to-hf", root / "blt", "--out", root / "hf"])
    write_bytelatent(root / "blt", root / "bytelatent")
    (root / "words.txt").write_text("\n".join(pseudo_words()) + "\n")
    (root / "text.txt").write_text("The quick brown fox jumps over the lazy dog.\n")
    (root / "noise").mkdir()
    for i in range(3):
        (root / "noise" / f"{i}.txt").write_bytes(b"".join(synthetic_documents(4, seed=1 + i).values()))


@pytest.fixture(scope="module")
def world(tmp_path_factory, request) -> World:
    root = tmp_path_factory.mktemp("world")
    started = time.perf_counter()
    with torch_threads(1):
        build_world(root)
        started_cases = time.perf_counter()
        yield World(root, tmp_path_factory.mktemp("cases"))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and CASES:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nbad input: {sum(CASES.values())} cases over {len(CASES)} templates in "
                                f"{time.perf_counter() - started_cases:.0f} s (world built in "
                                f"{started_cases - started:.0f} s): " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())))


# --- cases --------------------------------------------------------------------------------------------------

OMIT = object()  # a slot value that drops the slot (e.g. a required option left out)


@dataclass
class Ctx:
    """What a case's values are made in: the world, and a fresh scratch directory of the case's own."""

    world: World
    scratch: Path
    made: int = 0

    def path(self, name: str) -> Path:
        """A fresh path for an input, ending in ``name``, in a folder of its own (made)."""
        self.made += 1
        folder = self.scratch / f"{self.made:02d}"
        folder.mkdir()
        return folder / name

    def output(self, name: str) -> Path:
        """A fresh path for an output, at the top of the scratch directory (not made)."""
        self.made += 1
        return self.scratch / f"{self.made:02d}-{name}"

    def copy(self, source: Path, checkpoints: bool = False) -> Path:
        """A copy of a world directory (without checkpoints or pictures unless asked)."""
        ignore = None if checkpoints else shutil.ignore_patterns("checkpoints", "*.png")
        target = self.path(source.name)
        shutil.copytree(source, target, ignore=ignore)
        return target


Make = Callable[[Ctx], object]  # -> str, a list of str (several arguments), None (a bare flag) or OMIT


@dataclass(frozen=True)
class Bad:
    """A bad value of one slot: ``kind`` says what is wrong, ``make`` makes it (and any
    files it names), ``shown`` is the generated detail, for the report of a failing case."""

    kind: str
    make: Make = field(compare=False)
    shown: str = ""

    def __repr__(self) -> str:
        return f"{self.kind} ({self.shown})" if self.shown else self.kind

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


def const(value: object) -> Make:
    return lambda ctx: value


def world_path(name: str) -> Make:
    return lambda ctx: str(getattr(ctx.world, name))


def fresh(name: str) -> Make:
    return lambda ctx: str(ctx.output(name))


def copied(name: str, checkpoints: bool = False) -> Make:
    return lambda ctx: str(ctx.copy(getattr(ctx.world, name), checkpoints))


@dataclass(frozen=True)
class Template:
    """A valid command line: ``args`` maps each slot (an option, ``--set#tag`` for one of several, or a
    positional name in capitals) to its value (a string, a `Make`, or None for a flag); ``bad`` maps slots to
    strategies of bad values (slots not in ``args`` are added)."""

    command: str
    args: dict[str, object]
    bad: dict[str, st.SearchStrategy[Bad]]

    def argv(self, ctx: Ctx, replaced: dict[str, Bad]) -> list[str]:
        argv = self.command.split()
        for slot, value in {**self.args, **replaced}.items():
            value = value.make(ctx) if isinstance(value, Bad) else value(ctx) if callable(value) else value
            name = slot.split("#")[0]
            if value is OMIT:
                continue
            parts = [] if value is None else value if isinstance(value, list) else [value]
            argv += ([name] if name.startswith("-") else []) + [str(p) for p in parts]
        return argv


@dataclass(frozen=True)
class Case:
    template: str
    replaced: dict[str, Bad]

    @property
    def kinds(self) -> list[str]:
        return [f"{slot}: {bad.kind}" for slot, bad in self.replaced.items()]

    def __repr__(self) -> str:
        return f"{self.template}: " + "; ".join(f"{slot} = {bad!r}" for slot, bad in self.replaced.items())

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


# --- bad values -----------------------------------------------------------------------------------------------

NO_NUL = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")  # argv can't hold NUL
NOT_UTF8 = ["caf\udce9", "\udcff\udcfe", "na\udcefve"]  # bytes that are not UTF-8, as Python decodes argv


def literal(kind: str, values: list[str]) -> st.SearchStrategy[Bad]:
    return st.sampled_from(values).map(lambda v: Bad(kind, const(v), repr(v)))


def _parses(convert: Callable[[str], object], text: str) -> bool:
    try:
        convert(text)
    except (ValueError, OverflowError):
        return False
    return True


def not_int() -> st.SearchStrategy[Bad]:
    fixed = ["abc", "", "1.5", "1e3", "0x10", "3 apples", "½", "nan", "--", *NOT_UTF8]
    text = st.text(NO_NUL, max_size=8).filter(lambda t: not _parses(int, t))
    return st.one_of(st.sampled_from(fixed), text).map(lambda v: Bad("not an integer", const(v), repr(v)))


def huge_int() -> st.SearchStrategy[Bad]:
    values = st.one_of(st.just(10**30), st.integers(2**63, 10**40), st.integers(-(10**40), -(2**63) - 1))
    return values.map(lambda v: Bad("an integer past 64 bits", const(str(v)), str(v)))


def int_below(least: int) -> st.SearchStrategy[Bad]:
    def bad(v: int) -> Bad:
        return Bad("zero" if v == 0 else f"an integer below {least}", const(str(v)), str(v))
    return st.integers(-(2**63) + 1, least - 1).map(bad)


def int_above(most: int) -> st.SearchStrategy[Bad]:
    return st.integers(most + 1, 2**63 - 1).map(lambda v: Bad(f"an integer above {most}", const(str(v)), str(v)))


def bad_int(least: int, most: int | None = None) -> st.SearchStrategy[Bad]:
    """Not an integer, past 64 bits, below ``least`` or above ``most``."""
    return st.one_of(not_int(), huge_int(), int_below(least), *([int_above(most)] if most is not None else []))


def not_float() -> st.SearchStrategy[Bad]:
    fixed = ["abc", "", "1,5", "1.2.3", "0x10", "e5", "--", *NOT_UTF8]
    text = st.text(NO_NUL, max_size=8).filter(lambda t: not _parses(float, t))
    return st.one_of(st.sampled_from(fixed), text).map(lambda v: Bad("not a number", const(v), repr(v)))


def non_finite() -> st.SearchStrategy[Bad]:
    return literal("not finite", ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e999"])


def float_outside(low: float | None, high: float | None, low_open: bool = False, high_open: bool = True,
                  ) -> st.SearchStrategy[Bad]:
    """A finite number below ``low`` (or equal, if ``low_open``) or above ``high`` (or equal, if not ``high_open``)."""
    def outside(v: float) -> bool:
        below = low is not None and (v < low or (low_open and v == low))
        above = high is not None and (v > high or (high_open and v == high))
        return below or above

    parts = []
    if low is not None:
        parts.append(st.floats(max_value=low, allow_nan=False, allow_infinity=False))
    if high is not None:
        parts.append(st.floats(min_value=high, allow_nan=False, allow_infinity=False))
    span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def bad(v: float) -> Bad:
        bound = next((b for b in (low, high) if b is not None and v == b), None)
        kind = f"{float(bound)!r}, the open end of {span}" if bound is not None else f"a number outside {span}"
        return Bad(kind, const(repr(v)), repr(v))
    return st.one_of(*parts, *(st.just(float(b)) for b in (low, high) if b is not None)).filter(outside).map(bad)


def bad_float(low: float | None = None, high: float | None = None, low_open: bool = False,
              high_open: bool = True) -> st.SearchStrategy[Bad]:
    ranges = [float_outside(low, high, low_open, high_open)] if low is not None or high is not None else []
    return st.one_of(not_float(), non_finite(), *ranges)


def not_a_choice(choices: list[str]) -> st.SearchStrategy[Bad]:
    fixed = ["nope", "", "NOPE", *NOT_UTF8, *(c.upper() for c in choices if c.upper() != c)]
    text = st.text(NO_NUL, max_size=10).filter(lambda t: t not in choices and not t.startswith("-"))
    return st.one_of(st.sampled_from(fixed), text).filter(lambda t: t not in choices).map(
        lambda v: Bad("not a choice", const(v), repr(v)))


def bad_device() -> st.SearchStrategy[Bad]:
    return literal("not a device", ["tpu", "gpu", "mps", "cuda:99", "cuda:-1", "cpu:0", "", "cuda:x", *NOT_UTF8])


def any_value(kind: str) -> st.SearchStrategy[Bad]:
    """Any value at all, for an option that must not be given here (``kind`` says why)."""
    return st.sampled_from(["1", "0", "abc", "4.5"]).map(lambda v: Bad(kind, const(v), repr(v)))


def flag(kind: str) -> st.SearchStrategy[Bad]:
    """A flag that must not be given here."""
    return st.just(Bad(kind, const(None)))


def omitted(kind: str = "left out") -> st.SearchStrategy[Bad]:
    return st.just(Bad(kind, const(OMIT)))


# Paths: things that are not what a slot needs.

def _write(ctx: Ctx, name: str, payload: bytes | None) -> str:
    path = ctx.path(name)
    if payload is None:
        path.mkdir()
    else:
        path.write_bytes(payload)
    return str(path)


def missing() -> st.SearchStrategy[Bad]:
    names = st.sampled_from(["missing", "no/such/dir", "missing.json", " ", *NOT_UTF8])
    return names.map(lambda n: Bad("a missing path", lambda ctx: str(ctx.path(n)), repr(n)))


def under_a_file() -> st.SearchStrategy[Bad]:
    def make(ctx: Ctx) -> str:
        return str(Path(_write(ctx, "a_file", b"x")) / "inside")
    return st.just(Bad("a path under a file", make))


def a_directory() -> st.SearchStrategy[Bad]:
    return st.just(Bad("a directory", lambda ctx: _write(ctx, "a_dir", None)))


def a_file(kind: str = "a file", payload: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[Bad]:
    payload = payload if payload is not None else st.one_of(st.just(b""), st.binary(min_size=1, max_size=200))
    return payload.map(lambda data: Bad(kind, lambda ctx: _write(ctx, "a_file", data), f"{len(data)} bytes"))


def empty_file() -> st.SearchStrategy[Bad]:
    return st.just(Bad("an empty file", lambda ctx: _write(ctx, "empty", b"")))


def junk_directory() -> st.SearchStrategy[Bad]:
    def make(data: bytes) -> Make:
        def write(ctx: Ctx) -> str:
            folder = Path(_write(ctx, "junk", None))
            (folder / "junk.bin").write_bytes(data)
            return str(folder)
        return write
    return st.binary(max_size=100).map(lambda data: Bad("a directory of other files", make(data), f"{len(data)} bytes"))


def unusable_directory() -> st.SearchStrategy[Bad]:
    """For a slot that needs a directory of some kind (a run, prepared data, a checkpoint): a missing path, a
    file, an empty directory, a directory of other files, a path under a file."""
    return st.one_of(missing(), a_file(), a_directory(), junk_directory(), under_a_file())


def unusable_file() -> st.SearchStrategy[Bad]:
    """For a slot that needs an existing file, whatever its bytes: a missing path, a directory, a path under a file."""
    return st.one_of(missing(), a_directory(), under_a_file())


def bad_output_file(missing_folder: bool = True) -> st.SearchStrategy[Bad]:
    """For a file the command writes: a directory, a path under a file, one in a folder that does not exist."""
    folder = [st.just(Bad("in a missing folder", lambda ctx: str(ctx.output("no_folder") / "out.x")))] if missing_folder else []
    return st.one_of(a_directory(), under_a_file(), *folder)


# Corrupt copies of runs and prepared data. A corruption edits files of a copied directory in place.

Corrupt = Callable[[Path], None]  # applied to the directory holding the file it breaks


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def _set(record: dict, keys: tuple[str, ...], value: object) -> None:
    for key in keys[:-1]:
        record = record[key]
    record[keys[-1]] = value


def _to_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def on(name: str, change: Callable[[Path], None]) -> Corrupt:
    """A corruption of the file ``name`` of the directory it is applied to."""
    return lambda folder: change(folder / name)


def edit(name: str, change: Callable[[dict], None]) -> Corrupt:
    """A change of the JSON file ``name``."""
    return on(name, lambda path: _edit_json(path, change))


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def json_garbage(name: str, shapes: tuple[bytes, ...] = (b"[]", b"null", b'"x"', b"5", b"{}", b"[{}]")
                 ) -> st.SearchStrategy[tuple[str, Corrupt]]:
    """The JSON file ``name`` missing, empty, binary, not UTF-8, truncated, a directory, or of another shape."""
    def truncate(cut: float) -> Corrupt:
        def apply(path: Path) -> None:
            text = path.read_bytes().rstrip()
            path.write_bytes(text[: int(cut * (len(text) - 1))])
        return on(name, apply)

    def replace(payload: bytes) -> Corrupt:
        return on(name, lambda path: path.write_bytes(payload))

    return st.one_of(
        st.just((f"{name} missing", on(name, Path.unlink))),
        st.just((f"{name} empty", replace(b""))),
        st.just((f"{name} a directory", on(name, _to_directory))),
        st.binary(min_size=1, max_size=64).filter(lambda b: not _is_json(b)).map(lambda b: (f"{name} binary", replace(b))),
        st.just((f"{name} not UTF-8", replace('{"kind": "caf\xe9"}'.encode("latin-1")))),
        st.floats(0, 1).map(lambda cut: (f"{name} truncated", truncate(cut))),
        st.sampled_from(shapes).map(lambda b: (f"{name} JSON of another shape", replace(b))),
    )


# Invalid values of model config fields, per run kind: (keys, value), each refused by the config itself.
MODEL_FIELD_VALUES: dict[str, list[tuple[tuple[str, ...], object]]] = {
    "blt": [(("encoder", "dim"), "abc"), (("encoder", "dim"), 48), (("global_model", "n_heads"), 3),
            (("global_model", "dim"), -64), (("decoder", "window"), 0), (("hash", "rows"), 0),
            (("hash", "ngram_sizes"), [3, 3]), (("hash", "num_functions"), 99), (("patching", "mode"), "nope"),
            (("patching", "threshold"), "high"), (("cross_attn_k",), 0), (("vocab_size",), 300),
            (("max_seq_len",), 1), (("encoder",), 5), (("global_model", "dim"), True), (("decoder", "dim"), None),
            (("global_model", "dim"), 10**30), (("encoder", "norm_eps"), float("nan")), (("nope",), 1),
            (("encoder", "nope"), 1)],
    "entropy_model": [(("dim",), "abc"), (("dim",), 3), (("n_heads",), 0), (("n_heads",), 32), (("window",), -1),
                      (("vocab_size",), 259), (("chunk_len",), 1), (("norm_eps",), 0), (("dim",), None),
                      (("dim",), 10**30), (("rope_theta",), float("inf")), (("nope",), 1), (("n_kv_heads",), 3)],
    "token_model": [(("dim",), "abc"), (("dim",), 3), (("n_heads",), 5), (("vocab_size",), 100), (("n_layers",), -1),
                    (("dim",), [32]), (("ffn_dim",), 0), (("dim",), 10**30), (("nope",), 1)],
}
# Model changes the config accepts but the weights contradict (other shapes, or shapes no memory holds).
MODEL_SHAPE_CHANGES: dict[str, list[tuple[tuple[str, ...], object]]] = {
    "blt": [(("global_model", "dim"), 128), (("encoder", "n_layers"), 2), (("hash", "rows"), 300),
            (("global_model", "dim"), 10**9), (("hash", "rows"), 10**12)],
    "entropy_model": [(("dim",), 64), (("n_layers",), 3), (("dim",), 10**9)],
    "token_model": [(("dim",), 64), (("vocab_size",), 400), (("dim",), 10**9)],
}
OTHER_KIND = {"blt": "entropy_model", "entropy_model": "token_model", "token_model": "blt"}
RUN_KINDS = {"ent": "entropy_model", "blt": "blt", "byte": "token_model", "bpe": "token_model"}


def config_broken(kind: str) -> st.SearchStrategy[tuple[str, Corrupt]]:
    """A run's config.json that describes no run: unreadable, of another shape, or with a refused model config."""
    def model_value(keys: tuple[str, ...], value: object) -> tuple[str, Corrupt]:
        return (f"config.json model.{'.'.join(keys)} = {value!r}", edit("config.json", lambda r: _set(r["model"], keys, value)))

    return st.one_of(
        json_garbage("config.json"),
        st.just(("config.json without a model", edit("config.json", lambda r: r.pop("model")))),
        st.sampled_from([[], 5, "blt", None]).map(
            lambda v: ("config.json model not an object", edit("config.json", lambda r: r.update(model=v)))),
        st.sampled_from(["nope", None, 5]).map(
            lambda v: ("config.json of an unknown kind", edit("config.json", lambda r: r.update(kind=v)))),
        st.just((f"config.json of a {OTHER_KIND[kind]} run", edit("config.json", lambda r: r.update(kind=OTHER_KIND[kind])))),
        st.sampled_from(MODEL_FIELD_VALUES[kind]).map(lambda kv: model_value(*kv)),
    )


def config_against_weights(kind: str) -> st.SearchStrategy[tuple[str, Corrupt]]:
    def change(keys: tuple[str, ...], value: object) -> tuple[str, Corrupt]:
        return (f"config.json model.{'.'.join(keys)} = {value!r}, not the weights' shape",
                edit("config.json", lambda r: _set(r["model"], keys, value)))
    return st.sampled_from(MODEL_SHAPE_CHANGES[kind]).map(lambda kv: change(*kv))


def _header(path: Path) -> tuple[dict, bytes, int]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data, length


def _rewrite_header(path: Path, change: Callable[[dict, str], None]) -> None:
    header, data, length = _header(path)
    change(header, min(k for k in header if k != "__metadata__"))
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length:])


def safetensors_broken(name: str) -> st.SearchStrategy[tuple[str, Corrupt]]:
    """The safetensors file ``name`` missing, a directory, truncated, random, or with a header that lies (its
    length prefix, a tensor's data offsets, shape or dtype, the tensor names); or one byte of its data flipped."""
    def header_edit(change: Callable[[dict, str], None]) -> Corrupt:
        return on(name, lambda path: _rewrite_header(path, change))

    def truncate(cut: float) -> Corrupt:
        return on(name, lambda path: path.write_bytes(path.read_bytes()[: int(cut * (path.stat().st_size - 1))]))

    def length_prefix(length: int) -> Corrupt:
        return on(name, lambda path: path.write_bytes(struct.pack("<Q", length) + path.read_bytes()[8:]))

    def length_off_by(delta: int) -> Corrupt:
        def apply(path: Path) -> None:
            _, data, length = _header(path)
            path.write_bytes(struct.pack("<Q", max(0, length + delta)) + data[8:])
        return on(name, apply)

    def offsets(how: str) -> Corrupt:
        def change(header: dict, tensor: str) -> None:
            start, end = header[tensor]["data_offsets"]
            header[tensor]["data_offsets"] = {"past the end": [start, end + 10**6], "reversed": [end, start + 1],
                                              "shifted": [start + 4, end + 4], "negative": [-8, end]}[how]
        return header_edit(change)

    def flip(position: float) -> Corrupt:
        def apply(path: Path) -> None:
            _, data, length = _header(path)
            data = bytearray(data)
            data[8 + length + int(position * (len(data) - 9 - length))] ^= 0xFF
            path.write_bytes(bytes(data))
        return on(name, apply)

    def rename(header: dict, tensor: str) -> None:
        header["bogus." + tensor] = header.pop(tensor)

    def extra(header: dict, tensor: str) -> None:
        header["extra.weight"] = dict(header[tensor])

    return st.one_of(
        st.just((f"{name} missing", on(name, Path.unlink))),
        st.just((f"{name} a directory", on(name, _to_directory))),
        st.floats(0, 1).map(lambda cut: (f"{name} truncated", truncate(cut))),
        st.binary(max_size=256).map(lambda b: (f"{name} random bytes", on(name, lambda p: p.write_bytes(b)))),
        st.one_of(st.integers(2**40, 2**64 - 1), st.integers(0, 7)).map(
            lambda n: (f"{name} header length prefix lies", length_prefix(n))),
        st.sampled_from([-64, -9, -1, 1, 7, 8, 4096]).map(
            lambda d: (f"{name} header length prefix lies", length_off_by(d))),
        st.sampled_from(["past the end", "reversed", "shifted", "negative"]).map(
            lambda how: (f"{name} header data_offsets lie", offsets(how))),
        st.just((f"{name} header shape lies", header_edit(
            lambda h, t: h[t].update(shape=[2 * s for s in h[t]["shape"]] or [2])))),
        st.sampled_from(["F64", "I8", "Q99", ""]).map(
            lambda d: (f"{name} header dtype lies", header_edit(lambda h, t: h[t].update(dtype=d)))),
        st.just((f"{name} a tensor renamed", header_edit(rename))),
        st.just((f"{name} a tensor left out", header_edit(lambda h, t: h.pop(t)))),
        st.just((f"{name} an extra tensor", header_edit(extra))),
        st.floats(0, 1).map(lambda at: (f"{name} a data byte flipped", flip(at))),
    )


def corrupt_copy(source: str, corruptions: st.SearchStrategy[tuple[str, Corrupt]], where: str = "",
                 checkpoints: bool = False) -> st.SearchStrategy[Bad]:
    """A copy of the world's ``source`` with ``where/`` (default: the copy itself) broken by one of
    ``corruptions``."""
    def bad(pair: tuple[str, Corrupt]) -> Bad:
        what, corrupt = pair

        def make(ctx: Ctx) -> str:
            copy = ctx.copy(getattr(ctx.world, source), checkpoints)
            corrupt(copy / where)
            return str(copy)
        return Bad(f"{source} with {where}{what}", make)
    return corruptions.map(bad)


def tokenizer_broken() -> st.SearchStrategy[tuple[str, Corrupt]]:
    shapes = st.sampled_from([b'{"model": 5}', b'{"model": {"type": "BPE"}}'])
    return st.one_of(json_garbage("tokenizer.json"),
                     shapes.map(lambda b: ("tokenizer.json not a tokenizer", on("tokenizer.json", lambda p: p.write_bytes(b)))))


def broken_run(source: str, weights: bool = True, inner: bool = True, checkpoints: bool = False) -> st.SearchStrategy[Bad]:
    """A corrupt copy of a world run: its config.json; with ``weights`` (for commands that load them) also its
    config against its weights and the weights themselves; with ``inner`` (for commands that load them) the
    BLT run's entropy_model/ and the BPE run's tokenizer.json."""
    kind = RUN_KINDS[source]
    parts = [corrupt_copy(source, config_broken(kind), checkpoints=checkpoints)]
    if weights:
        parts += [corrupt_copy(source, config_against_weights(kind), checkpoints=checkpoints),
                  corrupt_copy(source, safetensors_broken("model.safetensors"), checkpoints=checkpoints)]
    if source == "blt" and inner:
        parts += [corrupt_copy(source, st.one_of(config_broken("entropy_model"), config_against_weights("entropy_model"),
                                                 safetensors_broken("model.safetensors")), "entropy_model/")]
    if source == "bpe" and inner:
        parts.append(corrupt_copy(source, tokenizer_broken()))
    return st.one_of(*parts)


def wrong_kind(*sources: str) -> st.SearchStrategy[Bad]:
    return st.sampled_from(sources).map(lambda s: Bad(f"a run of the wrong kind ({s})", world_path(s)))


def bad_run(*sources: str, weights: bool = True, inner: bool = True) -> st.SearchStrategy[Bad]:
    return st.one_of(unusable_directory(), *(broken_run(s, weights, inner) for s in sources))


SHARD = "train-00000.bin"
PTH = "consolidated.pth"


def data_broken() -> st.SearchStrategy[tuple[str, Corrupt]]:
    """A prepared directory's manifest, index or a shard broken (a shard's bytes: see `flipped_shard`)."""
    edits = [
        ("of another format", lambda m: m.update(format="other")),
        ("of a newer version", lambda m: m.update(format_version=99)),
        ("documents not a list", lambda m: m.update(documents=5)),
        ("with a shard of an unknown split", lambda m: m["shards"][0].update(split="test")),
        ("with a shard outside the directory", lambda m: m["shards"][0].update(file="../train-00000.bin")),
        ("with a shard of another size", lambda m: m["shards"][0].update(size=m["shards"][0]["size"] + 1)),
        ("without the val split", lambda m: m["splits"].pop("val")),
        ("with a short byte histogram", lambda m: m["splits"]["train"].update(byte_histogram=[1, 2])),
        ("without args", lambda m: m.update(args={})),
        ("with a document of an unknown split", lambda m: m["documents"][0].update(split="test")),
        ("with a document of another size", lambda m: m["documents"][0].update(size=m["documents"][0]["size"] + 1)),
        ("with another index checksum", lambda m: m.update(index_sha256="0" * 64)),
        ("with a negative document count", lambda m: m["splits"]["val"].update(documents=-1)),
        ("with a name that is not hex", lambda m: m["documents"][0].update(name_hex="zz")),
    ]
    files = [("truncated", lambda p: p.write_bytes(p.read_bytes()[:-7])), ("missing", Path.unlink),
             ("a directory", _to_directory)]
    return st.one_of(
        json_garbage("manifest.json", (b"[]", b"null", b"5", b"{}", b'{"format": 5}')),
        st.sampled_from(edits).map(lambda e: (f"manifest.json {e[0]}", edit("manifest.json", e[1]))),
        st.sampled_from(files + [("longer", lambda p: p.write_bytes(p.read_bytes() + b"x"))]).map(
            lambda e: (f"{SHARD} {e[0]}", on(SHARD, e[1]))),
        st.sampled_from(files + [("garbage", lambda p: p.write_bytes(b"\x93NUMPY"))]).map(
            lambda e: (f"index.npy {e[0]}", on("index.npy", e[1]))),
    )


def flipped_shard() -> st.SearchStrategy[tuple[str, Corrupt]]:
    def flip(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    return st.just((f"{SHARD} with a byte flipped", on(SHARD, flip)))


def bad_data(verify: bool = True) -> st.SearchStrategy[Bad]:
    """Not a prepared directory, or a corrupt copy of the world's (a flipped byte only when shards are verified)."""
    corruptions = st.one_of(data_broken(), flipped_shard()) if verify else data_broken()
    return st.one_of(unusable_directory(), corrupt_copy("data", corruptions))


def existing(source: str) -> st.SearchStrategy[Bad]:
    """A copy of a world directory, for an output that must not already exist."""
    return st.just(Bad(f"an existing {source} directory", copied(source, checkpoints=True)))


def bad_out(*sources: str) -> st.SearchStrategy[Bad]:
    """For a directory the command creates: one that exists (a copy of a world run or data), a file, a path
    under a file."""
    return st.one_of(*(existing(s) for s in sources), a_file("an existing file"), under_a_file())


# Config overrides (--set): each refused by the config, whatever else is set.

def overrides(kind: str, pairs: list[tuple[str, str]], prefix: str = "") -> st.SearchStrategy[Bad]:
    return st.sampled_from(pairs).map(lambda kv: Bad(kind, const(f"{prefix}{kv[0]}={kv[1]}"), f"{prefix}{kv[0]}={kv[1]}"))


MALFORMED_SETS = ["nope=1", "dim", "", "=1", "dim.x.y=1", "caf\udce9=1", "train", "train.=1"]
ENTROPY_SETS = [("dim", "abc"), ("dim", "-1"), ("dim", "0"), ("dim", "3"), ("dim", "true"), ("dim", "[]"),
                ("dim", "null"), ("dim", "1e3"), ("dim", str(10**30)), ("dim", "caf\udce9"), ("n_heads", "0"),
                ("n_heads", "3"), ("n_heads", "32"), ("window", "0"), ("window", "-1"), ("vocab_size", "300"),
                ("chunk_len", "1"), ("max_seq_len", "1"), ("norm_eps", "0"), ("norm_eps", "NaN"),
                ("rope_theta", "-1"), ("ffn_dim", "0"), ("n_kv_heads", "3"), ("rope_theta", "Infinity")]
ENTROPY_HUGE = [("dim", "1000000000"), ("ffn_dim", "1000000000000")]
BLT_SETS = [("encoder.dim", "abc"), ("encoder.dim", "48"), ("global_model.n_heads", "3"), ("hash.rows", "0"),
            ("hash.num_functions", "12"), ("hash.ngram_sizes", "[3,3]"), ("hash.ngram_sizes", "[0]"),
            ("cross_attn_k", "0"), ("vocab_size", "300"), ("max_seq_len", "1"), ("max_patches", "0"),
            ("init_std_factor", "NaN"), ("encoder", "5"), ("encoder.nope", "1"), ("decoder.window", "0"),
            ("global_model.dim", str(10**30)), ("global_model", "null")]
BLT_HUGE = [("global_model.dim", "1000000000"), ("hash.rows", "1000000000000"), ("encoder.ffn_dim", "1000000000000")]
TOKEN_SETS = [("dim", "abc"), ("dim", "3"), ("n_heads", "5"), ("vocab_size", "100"), ("n_layers", "-1"),
              ("ffn_dim", "0"), ("dim", str(10**30)), ("window", "0")]
TOKEN_HUGE = [("dim", "1000000000")]
TRAIN_SETS = [("nope", "1"), ("lr", "abc"), ("lr", "0"), ("lr", "-1"), ("lr", "NaN"), ("lr", "Infinity"),
              ("batch_size", "0"), ("batch_size", "abc"), ("batch_size", str(10**30)), ("seq_len", "1"), ("steps", "0"), ("grad_accum", "0"), ("warmup_steps", "-1"), ("min_lr_ratio", "2"),
              ("precision", "fp16"), ("parallel", "nope"), ("keep_checkpoints", "0"), ("log_every", "0"),
              ("eval_batches", "0"), ("checkpoint_minutes", "-1"), ("checkpoint_minutes", "NaN"), ("seed", "abc"),
              ("beta1", "NaN"), ("weight_decay", "-1"), ("eval_every", "-1")]
PAST_MAX_SEQ_LEN = [("seq_len", "65")]  # the micro entropy model's and BLT's max_seq_len is 64


def bad_sets(model: list[tuple[str, str]], huge: list[tuple[str, str]] = (),
             train: list[tuple[str, str]] = TRAIN_SETS, prefix: str = "") -> st.SearchStrategy[Bad]:
    """--set values refused whatever else is set: malformed or unknown keys, ``model`` values, ``huge`` sizes,
    ``train`` values (``train.`` keys)."""
    parts = [st.sampled_from(MALFORMED_SETS).map(lambda v: Bad("--set malformed or unknown", const(prefix + v), v)),
             overrides("--set a model value the config refuses", model, prefix)]
    if huge:
        parts.append(overrides("--set a model size no memory holds", list(huge), prefix))
    if train:
        parts.append(overrides("--set a training value the config refuses", train, "train."))
    return st.one_of(*parts)


# Word lists and texts.

def words_file(words: list[str]) -> bytes:
    return ("\n".join(words) + "\n").encode()


def bad_words() -> st.SearchStrategy[Bad]:
    """A word list with no lower-case words (binary without a-z), too few to split, or no file at all."""
    no_words = st.binary(min_size=1, max_size=200).map(lambda b: bytes(c for c in b if not 97 <= c <= 122) or b"1")
    few = st.lists(st.sampled_from(pseudo_words()), min_size=1, max_size=6).map(words_file)
    return st.one_of(unusable_file(), empty_file(), a_file("a word list without words", no_words),
                     a_file("a word list of too few words", few))


def bad_noise_text() -> st.SearchStrategy[Bad]:
    short = st.one_of(st.binary(max_size=150), st.text(NO_NUL, max_size=100).map(lambda t: t.encode()))
    return st.one_of(unusable_file(), a_file("a text too short for a passage", short))


def bad_tokenizer() -> st.SearchStrategy[Bad]:
    shapes = st.sampled_from([b"[]", b"{}", b'{"model": 5}', b'{"model": {"type": "BPE"}}', b"null"])
    return st.one_of(unusable_file(), empty_file(), a_file("binary", st.binary(min_size=1, max_size=200)),
                     a_file("JSON that is not a tokenizer", shapes))


# --- the templates ----------------------------------------------------------------------------------------------

def training(micro: list[str], extra: dict[str, object] | None = None) -> dict[str, object]:
    """The arguments of a training command over the world's data: one step of a micro model, to a new run."""
    args = {"--data": world_path("data"), "--out": fresh("run"), "--steps": "1", "--quiet": None, **(extra or {})}
    for i, value in enumerate(micro + MICRO_TRAIN):
        args[f"--set#{i}"] = value
    return args


COMMON_TRAINING = {
    "--data": bad_data(),
    "--out": bad_out("ent", "data"),
    "--steps": bad_int(1),
    "--preset": not_a_choice(["tiny", "small", "paper-xs", "paper-s", "100m", "released", "1b", "8b"]),
    "--precision": not_a_choice(["fp32", "bf16"]),
    "--device": bad_device(),
}

TEMPLATES: dict[str, Template] = {
    "demo": Template("demo", {"--out": fresh("demo"), "--data": world_path("data"), "--steps": "1",
                              "--entropy-steps": "1", "--quiet": None}, {
        "--steps": bad_int(1),
        "--entropy-steps": bad_int(1),
        "--target-patch-size": bad_float(1.0, None),
        "--data": st.one_of(a_file(), junk_directory(), corrupt_copy("data", data_broken())),
        "--out": st.one_of(a_file("an existing file"), under_a_file()),
    }),
    "data prepare": Template("data prepare", {"SOURCE": world_path("corpus"), "--out": fresh("prepared")}, {
        "SOURCE": st.one_of(missing(), a_directory(), under_a_file(), empty_file(),
                            literal("a glob that matches nothing", ["/nonexistent/*.txt", "/nonexistent/**/x"])),
        "--out": bad_out("data", "ent"),
        "--val-fraction": bad_float(0.0, 1.0),
        "--shard-bytes": st.one_of(literal("not a size", ["abc", "", "1T", "1.5M", "-1", "M", "1 G", *NOT_UTF8]),
                                   literal("zero", ["0", "0K"]), literal("a size past 64 bits", [str(10**30), "9" * 20 + "G"])),
        "--seed": st.one_of(not_int(), huge_int()),
    }),
    "data prepare --force": Template("data prepare", {"SOURCE": world_path("corpus"), "--out": copied("data"),
                                                      "--force": None}, {
        "SOURCE": st.one_of(missing(), a_directory(), under_a_file(), empty_file()),
        "--val-fraction": bad_float(0.0, 1.0),
        "--shard-bytes": literal("not a size", ["abc", "0", "-5", str(10**30)]),
        "--seed": st.one_of(not_int(), huge_int()),
    }),
    "data info": Template("data info", {"DIR": world_path("data")}, {"DIR": bad_data()}),
    "data info --no-verify": Template("data info", {"DIR": world_path("data"), "--no-verify": None},
                                      {"DIR": bad_data(verify=False)}),
    "train-entropy": Template("train-entropy", training(MICRO_ENTROPY), {
        **COMMON_TRAINING,
        "--set#bad": bad_sets(ENTROPY_SETS, ENTROPY_HUGE, TRAIN_SETS + PAST_MAX_SEQ_LEN),
    }),
    "train-entropy --resume": Template("train-entropy", {"--data": world_path("data"), "--out": copied("ent", True),
                                                         "--resume": None, "--steps": "2", "--quiet": None}, {
        "--data": bad_data(),
        "--out": st.one_of(unusable_directory(), broken_run("ent", weights=False, checkpoints=True)),
        "--steps": bad_int(1),
        "--set#bad": bad_sets(ENTROPY_SETS),
    }),
    "train": Template("train", training(MICRO_BLT, {"--entropy-model": world_path("ent"),
                                                            "--threshold": THRESHOLD}), {
        **COMMON_TRAINING,
        "--entropy-model": st.one_of(bad_run("ent"), wrong_kind("blt", "byte", "bpe")),
        "--threshold": bad_float(),
        "--target-patch-size": bad_float(1.0, None),
        "--max-patch-length": bad_int(1),
        "--patching": not_a_choice(["entropy", "monotonic", "combined", "static", "space", "bpe", "byte"]),
        "--patch-size": bad_int(1),
        "--tokenizer": any_value("--tokenizer without --patching bpe"),
        "--set#bad": bad_sets(BLT_SETS, BLT_HUGE, TRAIN_SETS + PAST_MAX_SEQ_LEN),
    }),
    "train --patching bpe": Template("train", training(MICRO_BLT, {"--patching": "bpe", "--vocab-size": "300"}), {
        "--vocab-size": bad_int(260, 2**24),
        "--tokenizer": bad_tokenizer(),
        "--data": bad_data(),
    }),
    "train-baseline": Template("train-baseline", training(MICRO_TOKEN, {"--kind": "byte"}), {
        **COMMON_TRAINING,
        "--kind": not_a_choice(["bpe", "byte"]),
        "--vocab-size": st.one_of(any_value("--vocab-size for the byte baseline"), not_int()),
        "--tokenizer": any_value("--tokenizer for the byte baseline"),
        "--set#bad": bad_sets(TOKEN_SETS, TOKEN_HUGE),
    }),
    "train-baseline --kind bpe": Template("train-baseline", training(MICRO_TOKEN, {
        "--kind": "bpe", "--vocab-size": "300", "--bpe-train-bytes": "20000"}), {
        "--vocab-size": bad_int(260, 2**24),
        "--bpe-train-bytes": bad_int(1),
        "--tokenizer": st.one_of(bad_tokenizer(), st.just(Bad("--tokenizer with --vocab-size", lambda ctx: str(ctx.world.bpe / "tokenizer.json")))),
        "--data": bad_data(),
    }),
    "patch": Template("patch", {"--text": "hello world, hello patches", "--entropy-model": world_path("ent")}, {
        "--entropy-model": st.one_of(bad_run("ent"), broken_run("blt", weights=False), wrong_kind("byte", "bpe")),
        "FILE": any_value("FILE with --text"),
        "--text": literal("an empty text", [""]),
        "--threshold": bad_float(),
        "--target-patch-size": bad_float(1.0, None),
        "--relative-threshold": any_value("--relative-threshold without --mode combined"),
        "--mode": not_a_choice(["entropy", "monotonic", "combined", "space", "static", "byte"]),
        "--max-patch-length": bad_int(1),
        "--patch-size": any_value("--patch-size without --mode static"),
        "--width": bad_int(20),
        "--plot-bytes": bad_int(2),
        "--png": bad_output_file(),
        "--html": bad_output_file(),
        "--batch-size": any_value("--batch-size without --data"),
        "--device": any_value("--device without --data"),
        "--color": not_a_choice(["auto", "always", "never"]),
        "--curve": st.one_of(literal("--curve not a .png", ["x.txt", "x", "x.png.json"]),
                             st.just(Bad("--curve a directory", lambda ctx: _write(ctx, "curve.png", None)))),
    }),
    "patch FILE": Template("patch", {"FILE": world_path("text.txt"), "--entropy-model": world_path("ent")}, {
        "FILE": st.one_of(unusable_file(), empty_file()),
        "--mode": st.just(Bad("--mode static with --patch-size 0", const(["static", "--patch-size", "0"]))),
    }),
    "patch --data": Template("patch", {"--data": copied("data"), "--entropy-model": world_path("ent")}, {
        "--data": bad_data(),
        "--entropy-model": st.one_of(bad_run("ent"), wrong_kind("byte", "bpe")),
        "--batch-size": bad_int(1),
        "--device": bad_device(),
        "--text": any_value("--text with --data"),
        "--threshold": any_value("--threshold with --data"),
        "--png": any_value("--png with --data"),
    }),
    "generate": Template("generate", {"RUN": world_path("blt"), "--prompt": "The", "--max-bytes": "3"}, {
        "RUN": bad_run("blt"),
        "--max-bytes": bad_int(0),
        "--temperature": bad_float(0.0, None),
        "--top-k": bad_int(1),
        "--top-p": bad_float(0.0, 1.0, low_open=True, high_open=False),
        "--samples": st.one_of(bad_int(1), literal("--samples > 1 with greedy decoding", ["2", "8"])),
        "--seed": st.one_of(not_int(), huge_int()),
        "--prompt-file": any_value("--prompt-file with --prompt"),
        "--prompt": omitted("no prompt"),
        "--out": bad_output_file(),
        "--device": bad_device(),
    }),
    "generate --prompt-file": Template("generate", {"RUN": world_path("blt"), "--prompt-file": world_path("text.txt"),
                                                    "--max-bytes": "3"}, {"--prompt-file": unusable_file()}),
    "eval": Template("eval", {"RUN": world_path("blt"), "--batches": "1"}, {
        "RUN": st.one_of(bad_run("blt", "ent", "byte", "bpe"),
                         corrupt_copy("blt", st.one_of(
                             st.sampled_from([5, [], "x"]).map(lambda v: (
                                 "config.json train section not an object", edit("config.json", lambda r: r.update(train=v)))),
                             st.sampled_from([1, -5, "abc", 2.5, True]).map(lambda v: (
                                 "config.json train.seq_len not an integer >= 2",
                                 edit("config.json", lambda r: r["train"].update(seq_len=v)))),
                             st.sampled_from([5, [], {"x": 1}]).map(lambda v: (
                                 "config.json data not a path", edit("config.json", lambda r: r.update(data=v)))),
                             st.just(("config.json data a missing path",
                                      edit("config.json", lambda r: r.update(data="/nonexistent/data")))),
                         ))),
        "--data": bad_data(),
        "--split": not_a_choice(["val", "train"]),
        "--seq-len": bad_int(2),
        "--batch-size": bad_int(1),
        "--batches": bad_int(1),
        "--precision": not_a_choice(["fp32", "bf16"]),
        "--device": bad_device(),
        "--json": bad_output_file(),
    }),
    "eval-char": Template("eval-char", {"RUN": world_path("byte"), "--examples": "1", "--shots": "0", "--tasks": "spell",
                                        "--no-greedy": None, "--words": world_path("words.txt"),
                                        "--json": fresh("e.json"), "--png": fresh("e.png"), "--quiet": None}, {
        "RUN": bad_run("blt", "ent", "byte", "bpe"),
        "--baseline": bad_run("byte", "bpe"),
        "--examples": bad_int(1, 100_000),
        "--shots": bad_int(0, 64),
        "--passages": bad_int(4),
        "--held-out-fraction": bad_float(0.0, 1.0, low_open=True, high_open=True),
        "--words": bad_words(),
        "--tasks": not_a_choice(["spell", "spell_inverse", "contains_char", "contains_word", "insert_char",
                                 "delete_char", "substitute_char", "swap_char", "insert_word", "delete_word",
                                 "substitute_word", "swap_word", "compare_numbers"]),
        "--no-tasks": flag("--no-tasks without --noise"),
        "--json": bad_output_file(),
        "--png": bad_output_file(),
    }),
    "eval-char --noise": Template("eval-char", {"RUN": world_path("byte"), "--no-tasks": None, "--noise": None,
                                                "--noise-text": lambda ctx: [str(p) for p in sorted(ctx.world.noise.iterdir())], "--json": fresh("e.json"),
                                                "--png": fresh("e.png"), "--quiet": None}, {
        "--noise-text": bad_noise_text(),
        "--passages": bad_int(4),
    }),
    "finetune": Template("finetune", {"RUN": world_path("byte"), "--out": fresh("ft"), "--steps": "1", "--examples": "4",
                                      "--words": world_path("words.txt"), "--quiet": None}, {
        "RUN": bad_run("blt", "byte", "bpe"),
        "--out": bad_out("byte", "data"),
        "--steps": bad_int(1),
        "--examples": bad_int(1, 100_000),
        "--shots": bad_int(0, 64),
        "--lr": bad_float(0.0, None, low_open=True),
        "--set#bad": st.one_of(overrides("--set a model value", [("dim", "64"), ("encoder.dim", "8"), ("nope", "1")]),
                               overrides("--set a training value the config refuses", TRAIN_SETS, "train.")),
        "--words": bad_words(),
        "--held-out-fraction": bad_float(0.0, 1.0, low_open=True, high_open=True),
        "--tasks": not_a_choice(["spell", "swap_char", "compare_numbers"]),
        "--device": bad_device(),
    }),
    "flops": Template("flops", {}, {
        "--preset": not_a_choice(["tiny", "small", "paper-xs", "paper-s", "1b", "8b"]),
        "--set#bad": bad_sets(BLT_SETS, train=[]),
        "--patch-size": bad_float(1.0, None),
        "--seq-len": bad_int(1),
        "--entropy-preset": not_a_choice(["tiny", "small", "100m", "released"]),
        "--baseline": not_a_choice(["bpe", "byte"]),
        "--vocab-size": any_value("--vocab-size without --baseline bpe"),
        "--bytes-per-token": any_value("--bytes-per-token without --baseline bpe"),
        "--set#token": overrides("--set token.KEY without a baseline", [("n_layers", "2")], "token."),
        "--json": bad_output_file(),
    }),
    "flops --baseline": Template("flops", {"--baseline": "bpe"}, {
        "--vocab-size": bad_int(260),
        "--bytes-per-token": bad_float(1.0, None),
        "--set#token": st.one_of(overrides("--set a token-model value the config refuses", TOKEN_SETS, "token."),
                                 literal("--set malformed", ["token.nope=1", "token.", "token.dim"])),
    }),
    "flops --run": Template("flops", {"--run": world_path("blt"), "--patch-size": "4.5"}, {
        "--run": bad_run("blt", "ent", "byte", "bpe", weights=False, inner=False),
        "--patch-size": bad_float(1.0, None),
        "--seq-len": bad_int(1),
        "--preset": any_value("--preset with --run"),
        "--set#bad": any_value("--set with --run"),
        "--baseline": literal("--baseline with --run", ["bpe", "byte"]),
        "--json": bad_output_file(),
    }),
    "convert --from-hf": Template("convert", {"--from-hf": world_path("hf"), "--out": fresh("converted")}, {
        "--from-hf": st.one_of(
            unusable_directory(), wrong_kind("blt", "ent"),
            corrupt_copy("hf", st.one_of(
                json_garbage("config.json"),
                st.sampled_from([
                    ("config.json of another model", lambda c: c.update(model_type="llama")),
                    ("config.json without encoder_config", lambda c: c.pop("encoder_config")),
                    ("config.json with a malformed global_config", lambda c: c.update(global_config=5)),
                    ("config.json with a patch_in_forward but no patcher_config", lambda c: c.pop("patcher_config")),
                    ("config.json with another hash vocabulary", lambda c: c.update(encoder_hash_byte_group_vocab=103)),
                    ("config.json with a huge width", lambda c: c["global_config"].update(hidden_size=10**9)),
                    ("config.json with a width past 64 bits", lambda c: c["global_config"].update(hidden_size=10**30)),
                    ("config.json with a nan threshold", lambda c: c.update(patching_threshold=float("nan"))),
                ]).map(lambda e: (e[0], edit("config.json", e[1]))),
                safetensors_broken("model.safetensors").filter(lambda e: "flipped" not in e[0]),
            )),
        ),
        "--out": st.one_of(bad_out("ent", "data"), st.just(Bad("--out inside the source",
                                                                lambda ctx: str(ctx.world.hf / "inside")))),
        "--entropy-model": any_value("--entropy-model with --from-hf"),
        "--threshold": any_value("--threshold with --from-hf"),
        "--to-hf": st.just(Bad("a second source", world_path("blt"))),
    }),
    "convert --to-hf": Template("convert", {"--to-hf": world_path("blt"), "--out": fresh("hf"), "--threshold": "1.5"}, {
        "--to-hf": st.one_of(bad_run("blt"), wrong_kind("ent", "byte", "bpe")),
        "--out": st.one_of(bad_out("ent", "data"), st.just(Bad("--out inside the source",
                                                                lambda ctx: str(ctx.world.blt / "hf")))),
        "--threshold": bad_float(),
        "--entropy-model": any_value("--entropy-model with --to-hf"),
    }),
    "convert --from-bytelatent": Template("convert", {"--from-bytelatent": world_path("bytelatent"),
                                                      "--out": fresh("converted")}, {
        "--from-bytelatent": st.one_of(
            unusable_directory(), wrong_kind("hf", "blt"),
            corrupt_copy("bytelatent", st.one_of(
                json_garbage("config.json"),
                st.sampled_from([
                    ("config.json without args", lambda c: c.pop("args")),
                    ("config.json args not an object", lambda c: c.update(args=[1])),
                    ("config.json without cross-attention", lambda c: c["args"].update(cross_attn_encoder=False)),
                    ("config.json of other heads", lambda c: c["args"].update(cross_attn_nheads=3)),
                    ("config.json with a malformed width", lambda c: c["args"].update(dim_global="wide")),
                    ("config.json without hash n-grams", lambda c: c["args"].update(encoder_hash_byte_group_size=None)),
                    ("config.json of a bpe patcher", lambda c: c["args"].update(patching_mode="bpe_patcher")),
                    ("config.json with a huge width", lambda c: c["args"].update(dim_global=10**9)),
                    ("config.json without cross_attn_k", lambda c: c["args"].pop("cross_attn_k")),
                ]).map(lambda e: (e[0], edit("config.json", e[1]))),
                safetensors_broken("model.safetensors").filter(lambda e: "flipped" not in e[0]),
            )),
            corrupt_copy("bytelatent", st.one_of(
                json_garbage("params.json"),
                st.just(("params.json without entropy_model", edit("params.json", lambda r: r.pop("entropy_model")))),
                st.just(("params.json of another vocabulary",
                         edit("params.json", lambda r: r["entropy_model"].update(vocab_size=256)))),
            ), "entropy_model/"),
            corrupt_copy("bytelatent", st.one_of(
                st.just(("consolidated.pth missing", on(PTH, Path.unlink))),
                st.binary(max_size=200).map(lambda b: ("consolidated.pth random bytes", on(PTH, lambda p: p.write_bytes(b)))),
                st.floats(0, 0.99).map(lambda cut: ("consolidated.pth truncated", on(
                    PTH, lambda p: p.write_bytes(p.read_bytes()[: int(cut * p.stat().st_size)])))),
                st.just(("consolidated.pth holding an object", on(PTH, lambda p: torch.save({"model": {}, "x": object()}, p)))),
                st.just(("consolidated.pth of other tensors", on(PTH, lambda p: torch.save({"model": {"x": torch.zeros(2)}}, p)))),
            ), "entropy_model/"),
        ),
        "--out": bad_out("ent", "data"),
        "--entropy-model": unusable_directory(),
        "--threshold": any_value("--threshold with --from-bytelatent"),
    }),
    "compare": Template("compare", {"--data": world_path("data"), "--entropy-model": world_path("ent"),
                                    "--out": fresh("compare"), "--budget": "1e9", "--patch-sizes": "4",
                                    "--baselines": "byte", "--quiet": None,
                                    **{f"--set#{i}": v for i, v in enumerate(
                                        [f"blt.{s}" for s in MICRO_BLT] + [f"token.{s}" for s in MICRO_TOKEN]
                                        + MICRO_TRAIN)}}, {
        "--data": bad_data(),
        "--entropy-model": st.one_of(bad_run("ent"), wrong_kind("blt", "byte")),
        "--out": bad_out("ent", "data"),
        "--budget": bad_float(0.0, None, low_open=True),
        "--patch-sizes": st.one_of(bad_float(1.0, None), st.just(Bad("repeated patch sizes", const(["4", "4"])))),
        "--baselines": st.one_of(not_a_choice(["bpe", "byte"]), st.just(Bad("repeated baselines", const(["byte", "byte"])))),
        "--vocab-size": bad_int(260),
        "--evals": bad_int(1),
        "--warmup-fraction": bad_float(0.0, 1.0),
        "--preset": not_a_choice(["tiny", "small", "paper-xs", "paper-s", "1b", "8b"]),
        "--precision": not_a_choice(["fp32", "bf16"]),
        "--set#bad": st.one_of(
            literal("--set without a prefix", ["dim=1", "batch_size=8", "nope=1"]),
            overrides("--set a BLT value the config refuses", BLT_SETS, "blt."),
            overrides("--set a token-model value the config refuses", TOKEN_SETS, "token."),
            overrides("--set a training value the config refuses", TRAIN_SETS + PAST_MAX_SEQ_LEN, "train.")),
    }),
    "bench": Template("bench", {"CASE": "model", "--suite": "quick"}, {
        "CASE": not_a_choice(["model", "patching", "training", "generation"]),
        "--suite": not_a_choice(["quick", "full"]),
        "--threads": bad_int(1),
        "--device": bad_device(),
        "--json": bad_output_file(missing_folder=False),
    }),
}


@st.composite
def cases(draw, name: str) -> Case:
    """A case of template ``name``: one to three of its bad slots, each with a bad value."""
    template = TEMPLATES[name]
    slots = draw(st.lists(st.sampled_from(sorted(template.bad)), min_size=1, max_size=3, unique=True), label="slots")
    return Case(name, {slot: draw(template.bad[slot], label=slot) for slot in slots})


# --- running a case ---------------------------------------------------------------------------------------------

class CaseTimeout(BaseException):
    """A case ran past `CASE_SECONDS`: it did work before it checked its input."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_limit(extra: int):
    """At most ``extra`` more bytes of address space while the block runs: an allocation past it fails (and is
    one line, exit 2) instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status")
    if not status.is_file():
        yield
        return
    size = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines() if line.startswith("VmSize:"))
    limit = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def warnings_to_stderr():
    """Warnings as the `blt` command shows them (Python's default filters, printed on stderr), not recorded by
    pytest: a warning is a line on stderr too."""
    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = show
        yield


def run_cli(argv: list[str]) -> tuple[object, str, str]:
    """(exit code, stdout, stderr) of `blt.cli.main`; a SystemExit (argparse) gives its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings_to_stderr(), \
            memory_limit(CASE_MEMORY), time_limit(CASE_SECONDS):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


_hashes: dict[tuple, str] = {}


def _sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _hashes[key]


def fingerprint(roots: list[Path]) -> dict[str, tuple]:
    """Every file, directory and link under ``roots``: a file's size, modification time and sha256."""
    found: dict[str, tuple] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                stat = path.lstat()
                if path.is_symlink():
                    found[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    found[str(path)] = ("dir",)
                else:
                    found[str(path)] = ("file", stat.st_size, stat.st_mtime_ns, _sha256(path, stat))
        if not root.is_dir():
            found[str(root)] = ("file", root.stat().st_size, root.stat().st_mtime_ns)
    return found


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return ([f"removed {p}" for p in sorted(set(before) - set(after))] + [f"added {p}" for p in sorted(set(after) - set(before))]
            + [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]])


def check(world: World, case: Case) -> None:
    """Run ``case``; assert exit code 2, one line on stderr, and that every input it existed with is unchanged:
    the world, and everything the case made before it ran (outputs it names may be created, nothing else)."""
    template = TEMPLATES[case.template]
    scratch = Path(tempfile.mkdtemp(dir=world.cases))
    CASES[case.template] += 1
    try:
        argv = template.argv(Ctx(world, scratch), case.replaced)
        note(f"argv: {argv!r}")
        inputs = [world.root, *scratch.iterdir()]
        before = fingerprint(inputs)
        code, out, err = run_cli(argv)
        after = fingerprint([p for p in inputs if p.exists()])
        lines = err.splitlines()
        note(f"exit code {code!r}; stdout {out[-500:]!r}; stderr {err[-2000:]!r}")
        assert code == 2, f"exit code {code!r} for {argv!r}: {err[-1000:]!r}"
        assert len(lines) == 1 and lines[0].startswith("blt") and "error" in lines[0], f"stderr is not one line: {err!r}"
        assert not changes(before, after), f"{argv!r} changed its inputs: {changes(before, after)[:5]}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", list(TEMPLATES))
@settings(max_examples=SHORT_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_bad_input_exits_2_with_one_line_and_changes_nothing(world, name, data):
    check(world, data.draw(cases(name), label="case"))


@pytest.mark.long
@pytest.mark.parametrize("name", list(TEMPLATES))
@settings(max_examples=LONG_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_bad_input_exits_2_with_one_line_and_changes_nothing_long(world, name, data):
    check(world, data.draw(cases(name), label="case"))


# The templates the cases start from are valid command lines: each exits 0 as it is. The demo (tiny presets) and
# a benchmark take half a minute each, so those two are checked with `-m long` only.
SLOW_TEMPLATES = ("demo", "bench")


def check_valid(world: World, name: str) -> None:
    scratch = Path(tempfile.mkdtemp(dir=world.cases))
    try:
        argv = TEMPLATES[name].argv(Ctx(world, scratch), {})
        code, out, err = run_cli(argv)
        assert code == 0, f"the template {name!r} is not a valid command line: {argv!r} -> {code!r}: {err[-2000:]}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("name", [n for n in TEMPLATES if n not in SLOW_TEMPLATES])
def test_templates_are_valid(world, name):
    check_valid(world, name)


@pytest.mark.long
@pytest.mark.parametrize("name", SLOW_TEMPLATES)
def test_slow_templates_are_valid(world, name):
    check_valid(world, name)
