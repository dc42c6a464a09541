"""A corpus of mixed bytes made on this machine, with nothing downloaded: `blt data mixed`.

One folder per kind of file under the output folder; a document's kind is the folder it lies in (the
second part of its name once prepared, e.g. ``mixed-files/speech/0003.wav``):

=============  ==========================================================================================
``text``       English prose: the topics of Python's built-in help (``pydoc_data``)
``code``       Python source files of the standard library
``speech``     the prose spoken by ``espeak-ng`` as 16-bit mono WAV, resampled to 8 kHz by ``sox`` (one file
               with seconds of silence inside)
``png``        crops of real pictures (a photograph, elevation maps, an MRI slice from matplotlib's sample
               data) as PNG
``bmp``        the same kind of crops as uncompressed 24-bit BMP, written here
``ppm``        ... and as uncompressed binary PPM (P6)
``pdf``        one-page PDF plots of real series (stock prices, EEG, a membrane potential) by matplotlib
``gzip``       prose and code compressed with gzip -9 (one gzip member each)
``xz``         prose and code compressed with xz -9
``random``     uniformly random bytes (seeded)
``degenerate`` runs of one byte (10,000 spaces among them) and one line repeated
=============  ==========================================================================================

A kind whose tool is missing (``espeak-ng`` for speech; without ``sox`` the WAVs keep espeak's 22,050 Hz) is
skipped with one line saying which tool to install. Everything is deterministic for a seed and a machine
(the standard library and the installed espeak-ng voice decide the exact bytes).
"""

from __future__ import annotations

import gzip
import lzma
import os
import random
import re
import shutil
import struct
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blt.errors import DataError
from blt.fileio import atomic_write_bytes

KINDS = ("text", "code", "speech", "png", "bmp", "ppm", "pdf", "gzip", "xz", "random", "degenerate")
DEFAULT_FILES_PER_KIND = 32
MIXED_VAL_FRACTION = 0.2  # so that every kind has validation files (checked by the report)
MAX_DOCUMENT_BYTES = 16 * 1024  # prose and code are cut (at a line end) to at most this
SPEECH_RATE = 8000  # Hz, after sox
SPEECH_CHARS = 36  # about two and a half seconds of speech per file
SILENCE_SECONDS = 3.0  # inside the one WAV that has silence
TOOL_TIMEOUT_S = 60


@dataclass
class MixedReport:
    """What `build_mixed` wrote: files and bytes per kind, and the kinds it skipped with the reason."""

    out: Path
    files: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class MissingTool(Exception):
    """A program a kind needs is not on PATH (its name is the message)."""


def kind_of(name: str | bytes) -> str | None:
    """The kind of a prepared document named ``<root>/<kind>/<file>``, or None for another name."""
    parts = (os.fsdecode(name) if isinstance(name, bytes) else name).split("/")
    return parts[1] if len(parts) >= 3 and parts[1] in KINDS else None


# --- prose and code ------------------------------------------------------------------------------------

def _cut(data: bytes, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """At most ``limit`` bytes, ending at a line end when there is one."""
    if len(data) <= limit:
        return data
    end = data.rfind(b"\n", 0, limit)
    return data[: end + 1 if end > 0 else limit]


def prose(n: int, rng: random.Random) -> list[bytes]:
    """``n`` texts of Python's built-in help as UTF-8, each two of its topics (distinct while they last)."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    picked = rng.sample(names, len(names))
    picked = (picked * (2 * n // len(picked) + 1))[: 2 * n]
    return [_cut((topics[a] + "\n\n" + topics[b]).encode("utf-8")) for a, b in zip(picked[::2], picked[1::2])]


def code(n: int, rng: random.Random) -> list[bytes]:
    """``n`` Python files of the standard library (not its test suite), cut to size."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 2048)
    if not files:
        raise DataError(f"no Python files of at least 2 KB in {root}")
    return [_cut(p.read_bytes()) for p in rng.sample(files, min(n, len(files)))]


# --- speech ------------------------------------------------------------------------------------------

def sentences(n: int, rng: random.Random) -> list[str]:
    """``n`` snippets of prose (letters, digits and punctuation, about `SPEECH_CHARS` characters each)."""
    from pydoc_data.topics import topics

    words = re.findall(r"[A-Za-z][A-Za-z,.'-]*", " ".join(topics[k] for k in sorted(topics)))
    out = []
    for _ in range(n):
        start = rng.randrange(max(1, len(words) - 40))
        text, i = "", start
        while len(text) < SPEECH_CHARS and i < len(words):
            text += (" " if text else "") + words[i]
            i += 1
        out.append(text)
    return out


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataError(f"{what}: {argv[0]} failed: {err}") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        raise DataError(f"{what}: {argv[0]} exited with {done.returncode}" + (f": {last[-1]}" if last else ""))


def speech(texts: list[str], work: Path, *, silence_in: int | None) -> tuple[list[bytes], str | None]:
    """Each text spoken by espeak-ng as WAV; resampled by sox to `SPEECH_RATE` Hz when sox is there, and
    with `SILENCE_SECONDS` of silence inserted one second in for text number ``silence_in``. Returns the
    files and a note (None, or what was done without sox)."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None:
        raise MissingTool("espeak-ng")
    out = []
    for i, text in enumerate(texts):
        raw, wav = work / f"{i}.raw.wav", work / f"{i}.wav"
        _run([espeak, "-v", "en", "-s", "165", "-w", str(raw), text], "speech")
        if sox is not None:
            effects = ["pad", f"{SILENCE_SECONDS:g}@1"] if i == silence_in else []
            _run([sox, str(raw), "-r", str(SPEECH_RATE), "-b", "16", "-c", "1", str(wav), *effects], "speech")
        else:
            wav = raw
        out.append(wav.read_bytes())
    return out, None if sox is not None else "sox is missing: the WAVs keep espeak-ng's rate and have no silence inside"


# --- images ------------------------------------------------------------------------------------------

def bmp_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as an uncompressed 24-bit BMP (rows bottom-up, BGR, padded to 4 bytes)."""
    h, w, _ = rgb.shape
    stride = (3 * w + 3) // 4 * 4
    rows = np.zeros((h, stride), np.uint8)
    rows[:, : 3 * w] = rgb[::-1, :, ::-1].reshape(h, 3 * w)
    header = struct.pack("<2sIHHI", b"BM", 54 + rows.size, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, rows.size, 2835, 2835, 0, 0)
    return header + info + rows.tobytes()


def ppm_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as a binary PPM (P6)."""
    h, w, _ = rgb.shape
    return f"P6\n{w} {h}\n255\n".encode("ascii") + np.ascontiguousarray(rgb).tobytes()


def crops(n: int, rng: random.Random) -> list[np.ndarray]:
    """``n`` crops of the real pictures, 48 to 96 pixels a side."""
    from blt.viz.corpus import source_images

    images = source_images()
    names = sorted(images)
    out = []
    for i in range(n):
        image = images[names[i % len(names)]]
        h, w = rng.randint(48, min(96, image.shape[0])), rng.randint(48, min(96, image.shape[1]))
        y, x = rng.randrange(image.shape[0] - h + 1), rng.randrange(image.shape[1] - w + 1)
        out.append(np.ascontiguousarray(image[y : y + h, x : x + w]))
    return out


def pdfs(n: int, rng: random.Random) -> list[bytes]:
    from blt.viz.corpus import pdf_plot, series

    found = series()
    out = []
    for i in range(n):
        title, x, y = found[i % len(found)]
        length = rng.randint(min(len(x), 60), len(x))
        start = rng.randrange(len(x) - length + 1)
        out.append(pdf_plot(title, x[start : start + length], y[start : start + length],
                            f"{title}: samples {start} to {start + length - 1}"))
    return out


# --- the rest ----------------------------------------------------------------------------------------

def degenerate(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """10,000 spaces, then runs of one byte and repeated lines of varied lengths."""
    out = [("spaces-10000.txt", b" " * 10_000)]
    lines = [b"=" * 72 + b"\n", b"import os\n", b"0123456789\n", b"the same line, over and over\n"]
    for i in range(1, n):
        if i % 2:
            value = rng.choice([0x00, 0x20, 0xFF, ord("a"), ord("\n")])
            out.append((f"run-{i:04d}.bin", bytes([value]) * rng.randint(2_000, 12_000)))
        else:
            line = rng.choice(lines)
            out.append((f"repeated-{i:04d}.txt", line * rng.randint(50, 400)))
    return out


def _write(folder: Path, files: list[tuple[str, bytes]], report: MixedReport, kind: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        atomic_write_bytes(folder / name, data)
    report.files[kind] = len(files)
    report.bytes[kind] = sum(len(d) for _, d in files)


def _numbered(items: list[bytes], ext: str) -> list[tuple[str, bytes]]:
    return [(f"{i:04d}.{ext}", data) for i, data in enumerate(items)]


def build_mixed(out: str | os.PathLike[str], *, files_per_kind: int = DEFAULT_FILES_PER_KIND, seed: int = 0,
                kinds: tuple[str, ...] = KINDS, log: Callable[[str], None] = print) -> MixedReport:
    """Write the mixed corpus into ``out`` (one folder per kind; see the module docstring).

    ``out`` must be new or empty, or hold only the kinds' folders of an earlier build (replaced). A kind
    whose tool is missing is skipped and ``log`` says why.
    """
    if files_per_kind < 1:
        raise DataError(f"files_per_kind must be at least 1, got {files_per_kind}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise DataError(f"unknown kind {unknown[0]!r}; the kinds are {', '.join(KINDS)}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} exists and is not a directory")
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in KINDS)
        if foreign:
            raise DataError(f"{root} holds {foreign[0]!r}, which is not a kind of the mixed corpus; give a new or "
                            "empty directory")
    report = MixedReport(out=root)
    n = files_per_kind
    with tempfile.TemporaryDirectory(prefix="blt-mixed-") as tmp:
        for kind in kinds:
            rng = random.Random(f"{seed}:{kind}")
            if (root / kind).exists():
                shutil.rmtree(root / kind)
            try:
                files = _kind_files(kind, n, rng, Path(tmp), report)
            except MissingTool as missing:
                report.skipped[kind] = f"{missing} is not installed (Debian: apt-get install {missing})"
                log(f"mixed: skipped {kind}: {report.skipped[kind]}")
                continue
            _write(root / kind, files, report, kind)
            log(f"mixed: {kind:<10} {report.files[kind]:>4} files {report.bytes[kind]:>11,} bytes")
    return report


def _kind_files(kind: str, n: int, rng: random.Random, work: Path, report: MixedReport) -> list[tuple[str, bytes]]:
    if kind == "text":
        return _numbered(prose(n, rng), "txt")
    if kind == "code":
        return _numbered(code(n, rng), "py")
    if kind == "speech":
        wavs, note = speech(sentences(n, rng), work, silence_in=0)
        if note:
            report.notes.append(note)
        named = _numbered(wavs, "wav")
        if shutil.which("sox") is not None:
            named[0] = ("silence-inside.wav", named[0][1])
        return named
    if kind in ("png", "bmp", "ppm"):
        from blt.viz.corpus import png_bytes

        writer = {"png": png_bytes, "bmp": bmp_bytes, "ppm": ppm_bytes}[kind]
        return _numbered([writer(c) for c in crops(n, rng)], kind)
    if kind == "pdf":
        return _numbered(pdfs(n, rng), "pdf")
    if kind in ("gzip", "xz"):
        sources = prose(n // 2 + n % 2, rng) + code(n // 2, rng)
        if kind == "gzip":
            return _numbered([gzip.compress(s, compresslevel=9, mtime=0) for s in sources], "gz")
        return _numbered([lzma.compress(s, preset=9) for s in sources], "xz")
    if kind == "random":
        gen = np.random.default_rng(rng.randrange(2**63))
        return _numbered([gen.bytes(rng.randint(2_000, 12_000)) for _ in range(n)], "bin")
    assert kind == "degenerate"
    return degenerate(n, rng)
