"""`blt data mixed`: every kind is written, deterministically and in its real format; a missing tool skips
its kind with one line; bad output folders are refused; the files prepare like any others."""

from __future__ import annotations

import gzip
import lzma
import os
import stat
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from blt.cli import main
from blt.data import PreparedData
from blt.data.mixed import KINDS, bmp_bytes, build_mixed, kind_of, ppm_bytes
from blt.errors import DataError

FAKE_ESPEAK = """#!{python}
import sys, wave
out = sys.argv[sys.argv.index("-w") + 1]
text = sys.argv[-1].encode()
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050)
    w.writeframes(b"".join(bytes([c, 0]) * 50 for c in text))
"""
# `sox IN -r RATE -b 16 -c 1 OUT [pad SECONDS@AT]`: rewrite at RATE, with silence inserted when asked
FAKE_SOX = """#!{python}
import sys, wave
args = sys.argv[1:]
with wave.open(args[0], "rb") as r:
    frames = r.readframes(r.getnframes())
rate = int(args[args.index("-r") + 1])
if "pad" in args:
    seconds, at = args[args.index("pad") + 1].split("@")
    cut = int(float(at) * rate) * 2
    frames = frames[:cut] + bytes(int(float(seconds) * rate) * 2) + frames[cut:]
with wave.open(args[7], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
    w.writeframes(frames)
"""


def fake_tools(folder: Path, *names: str) -> str:
    """A PATH holding only fake versions of ``names`` (espeak-ng, sox) that write real WAV files."""
    folder.mkdir()
    for name in names:
        path = folder / name
        path.write_text({"espeak-ng": FAKE_ESPEAK, "sox": FAKE_SOX}[name].format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(folder)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    path = fake_tools(root / "bin", "espeak-ng", "sox")
    old = os.environ["PATH"]
    os.environ["PATH"] = path
    try:
        report = build_mixed(root / "files", files_per_kind=3, log=lambda m: None)
    finally:
        os.environ["PATH"] = old
    assert report.skipped == {} and report.notes == []
    return root / "files"


def test_every_kind_is_written_in_its_own_folder(mixed):
    assert sorted(p.name for p in mixed.iterdir()) == sorted(KINDS)
    for kind in KINDS:
        files = sorted((mixed / kind).iterdir())
        assert len(files) == 3 and all(f.stat().st_size > 0 for f in files), kind


def test_files_are_in_their_real_formats(mixed):
    for f in (mixed / "png").iterdir():
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for f in (mixed / "pdf").iterdir():
        data = f.read_bytes()
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    for f in (mixed / "bmp").iterdir():
        data = f.read_bytes()
        magic, size, _, _, offset = struct.unpack("<2sIHHI", data[:14])
        width, height, planes, bits = struct.unpack("<iiHH", data[18:30])
        assert magic == b"BM" and size == len(data) and offset == 54 and planes == 1 and bits == 24
        assert 48 <= width <= 96 and 48 <= height <= 96 and len(data) == 54 + height * ((3 * width + 3) // 4 * 4)
    for f in (mixed / "ppm").iterdir():
        header, w, h, maxval, pixels = f.read_bytes().split(maxsplit=4)
        assert header == b"P6" and maxval == b"255" and len(pixels) == int(w) * int(h) * 3
    texts = {f.read_bytes() for f in (mixed / "text").iterdir()} | {f.read_bytes() for f in (mixed / "code").iterdir()}
    for f in (mixed / "gzip").iterdir():
        assert f.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(f.read_bytes()).decode("utf-8")
    for f in (mixed / "xz").iterdir():
        assert lzma.decompress(f.read_bytes()).decode("utf-8")
    assert any(b"def " in t for t in texts)
    with wave.open(str(mixed / "speech" / "silence-inside.wav")) as w:
        assert w.getframerate() == 8000 and w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert (frames[8000 : 8000 + 3 * 8000] == 0).all()  # three seconds of silence one second in
    assert (mixed / "degenerate" / "spaces-10000.txt").read_bytes() == b" " * 10_000


def test_bmp_and_ppm_hold_the_pixels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    bmp = bmp_bytes(rgb)
    stride = (3 * 7 + 3) // 4 * 4
    rows = np.frombuffer(bmp[54:], np.uint8).reshape(5, stride)[:, : 3 * 7].reshape(5, 7, 3)
    assert np.array_equal(rows[::-1, :, ::-1], rgb)  # bottom-up rows of BGR
    assert ppm_bytes(rgb) == b"P6\n7 5\n255\n" + rgb.tobytes()


def test_the_same_seed_writes_the_same_bytes_and_another_seed_others(mixed, tmp_path):
    kinds = ("text", "code", "png", "bmp", "pdf", "gzip", "xz", "random", "degenerate")
    again = build_mixed(tmp_path / "again", files_per_kind=3, kinds=kinds, log=lambda m: None)
    other = build_mixed(tmp_path / "other", files_per_kind=3, kinds=kinds, seed=1, log=lambda m: None)
    for kind in kinds:
        for f in (mixed / kind).iterdir():
            assert (tmp_path / "again" / kind / f.name).read_bytes() == f.read_bytes(), f
    assert again.bytes != other.bytes


def test_a_missing_tool_skips_its_kind_with_a_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin"))
    lines = []
    report = build_mixed(tmp_path / "files", files_per_kind=2, kinds=("speech", "random"), log=lines.append)
    assert report.skipped == {"speech": "espeak-ng is not installed (Debian: apt-get install espeak-ng)"}
    assert "mixed: skipped speech: espeak-ng is not installed" in lines[0]
    assert not (tmp_path / "files" / "speech").exists() and report.files == {"random": 2}

    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin2", "espeak-ng"))
    report = build_mixed(tmp_path / "files2", files_per_kind=2, kinds=("speech",), log=lambda m: None)
    assert report.files == {"speech": 2} and "sox is missing" in report.notes[0]
    with wave.open(str(tmp_path / "files2" / "speech" / "0000.wav")) as w:
        assert w.getframerate() == 22050


def test_a_rebuild_replaces_the_kinds_and_a_foreign_folder_is_refused(tmp_path):
    build_mixed(tmp_path / "files", files_per_kind=2, kinds=("random",), log=lambda m: None)
    (tmp_path / "files" / "random" / "stale.bin").write_bytes(b"x")
    build_mixed(tmp_path / "files", files_per_kind=1, kinds=("random",), log=lambda m: None)
    assert [p.name for p in (tmp_path / "files" / "random").iterdir()] == ["0000.bin"]
    (tmp_path / "files" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="'notes.txt', which is not a kind of the mixed corpus"):
        build_mixed(tmp_path / "files", files_per_kind=1, kinds=("random",), log=lambda m: None)
    with pytest.raises(DataError, match="unknown kind 'video'"):
        build_mixed(tmp_path / "new", kinds=("video",))
    with pytest.raises(DataError, match="files_per_kind must be at least 1"):
        build_mixed(tmp_path / "new", files_per_kind=0)


def test_the_command_writes_and_prepares_and_kinds_come_back_from_the_names(tmp_path, capsys):
    code = main(["data", "mixed", "--out", str(tmp_path / "files"), "--prepare", str(tmp_path / "data"),
                 "--kinds", "text", "random", "degenerate", "--files-per-kind", "8"])
    out = capsys.readouterr().out
    assert code == 0 and "wrote 24 files" in out and "prepared 24 documents" in out
    data = PreparedData.open(tmp_path / "data")
    names = [data.split(s).document_name(i) for s in ("train", "val") for i in range(len(data.split(s)))]
    assert sorted(kind_of(n) for n in names) == sorted(["text"] * 8 + ["random"] * 8 + ["degenerate"] * 8)
    assert kind_of("elsewhere/notes.txt") is None and kind_of(b"files/text/0001.txt") == "text"


def test_the_command_refuses_a_foreign_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "mine.txt").write_text("keep me")
    assert main(["data", "mixed", "--out", str(tmp_path / "files")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("blt data: error: ") and err.count("\n") == 1 and "not a kind of the mixed corpus" in err
    assert (tmp_path / "files" / "mine.txt").read_text() == "keep me"
