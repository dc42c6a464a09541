"""`blt patch`: the shown patches agree with the library, thresholds are chosen as documented, files are
written, and every bad input is one clear line with exit code 2."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blt.cli import main
from blt.config import BLTConfig, EntropyModelConfig, PatchingConfig
from blt.patching import (
    EntropyModel,
    entropy_from_logits,
    lengths_from_start_mask,
    patch_lengths_from_entropies,
    start_mask_space,
)
from blt.run import load, write_run_config
from blt.tokenizer import encode

TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."


@pytest.fixture(scope="module")
def entropy_run(tmp_path_factory) -> Path:
    cfg = EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=16)
    model = EntropyModel(cfg).init_weights(seed=0)
    run = tmp_path_factory.mktemp("entropy_run")
    save_file(model.state_dict(), run / "model.safetensors")
    write_run_config(run, "entropy_model", cfg)
    return run


@pytest.fixture(scope="module")
def model(entropy_run) -> EntropyModel:
    return load(entropy_run, expect="entropy_model").model


def patch(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["patch", *map(str, argv)])
    except SystemExit as exit_:  # argparse refused an argument
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stat(out: str, name: str) -> float:
    return float(re.search(rf"^{name}\s+([\d,.]+)", out, re.MULTILINE).group(1).replace(",", ""))


def shown_text(out: str) -> str:
    """The rendered text: the lines between the two-line header and the legend."""
    return out.split("\n\n")[1].rsplit("\n", 1)[0]


def test_shown_patches_and_stats_agree_with_the_library(capsys, entropy_run, model):
    H = model.entropies(encode(TEXT))
    theta = float(H[1:-1].median())
    code, out, err = patch(capsys, "--text", TEXT, "--entropy-model", entropy_run, "--threshold", theta,
                           "--width", 200)
    assert code == 0 and err == ""
    expected = patch_lengths_from_entropies(H[None], theta)[0, 1:]  # without the BOS patch
    assert stat(out, "bytes") == len(TEXT.encode()) == int(expected.sum())
    assert stat(out, "patches") == expected.numel() > 2
    assert stat(out, "mean patch size") == pytest.approx(len(TEXT) / expected.numel(), abs=0.005)
    assert stat(out, "max patch") == int(expected.max())
    assert shown_text(out).replace("|", "") == TEXT
    assert shown_text(out).count("|") == expected.numel() - 1
    histogram = out.split("patch sizes\n")[1].splitlines()
    assert sum(int(line.rsplit(" ", 1)[1]) for line in histogram) == expected.numel()
    assert f"θ_g = {theta:.4g} nats (given)" in out


def test_short_input_uses_the_released_threshold(capsys, entropy_run):
    code, out, _ = patch(capsys, "--text", TEXT, "--entropy-model", entropy_run)
    assert code == 0
    assert "θ_g = 1.335 nats (the released default; the input (81 bytes) is shorter than 2,048 bytes" in out


def test_long_input_is_calibrated_to_the_target(capsys, entropy_run, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(TEXT * 40)  # 3,240 bytes
    code, out, _ = patch(capsys, path, "--entropy-model", entropy_run, "--width", 200)
    assert code == 0
    assert "calibrated on this input to a mean patch size of 4.5 bytes" in out
    assert stat(out, "mean patch size") == pytest.approx(4.5, rel=0.02)
    code, out, _ = patch(capsys, path, "--entropy-model", entropy_run, "--target-patch-size", 8,
                         "--max-patch-length", 12)
    assert code == 0 and stat(out, "mean patch size") == pytest.approx(8, rel=0.02) and stat(out, "max patch") <= 12


def test_a_blt_run_lends_its_entropy_model_and_threshold(capsys, entropy_run, tmp_path):
    blt_run = tmp_path / "blt_run"
    write_run_config(blt_run, "blt", BLTConfig.preset("tiny").replace(patching=PatchingConfig(threshold=4.25)))
    shutil.copytree(entropy_run, blt_run / "entropy_model")
    code, out, _ = patch(capsys, "--text", TEXT, "--entropy-model", blt_run)
    assert code == 0 and "θ_g = 4.25 nats (from the BLT run's config)" in out
    code, out, _ = patch(capsys, "--text", TEXT, "--entropy-model", blt_run, "--mode", "byte")
    assert code == 0 and stat(out, "patches") == len(TEXT)


def test_png_and_html_are_written(capsys, entropy_run, tmp_path):
    png, page = tmp_path / "p.png", tmp_path / "p.html"
    code, out, _ = patch(capsys, "--text", TEXT, "--entropy-model", entropy_run, "--threshold", 5.0,
                         "--png", png, "--html", page, "--plot-bytes", 40)
    assert code == 0 and f"wrote {png}" in out and f"wrote {page}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text(encoding="utf-8")
    text = html.split('<div class="text">')[1].split("</div>")[0]
    assert re.sub(r"<[^>]+>", "", text).replace("│", "") == TEXT
    assert text.count('class="sep"') == stat(out, "patches") - 1
    assert "θ_g = 5 nats (given)" in html


def test_colors_follow_the_terminal_and_no_color(capsys, entropy_run, monkeypatch):
    argv = ("--text", TEXT, "--entropy-model", entropy_run)
    assert "\x1b[" not in patch(capsys, *argv)[1]  # captured stdout is not a TTY
    assert "\x1b[" in patch(capsys, *argv, "--color", "always")[1]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    colored = patch(capsys, *argv)[1]
    assert "\x1b[48;5;" in colored and "│" in colored
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in patch(capsys, *argv)[1]


def test_binary_input_and_long_runs_of_spaces_work(capsys, entropy_run, tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(0)).tolist()))
    code, out, _ = patch(capsys, noise, "--entropy-model", entropy_run)
    assert code == 0 and stat(out, "bytes") == 3000 and "\\x" in out
    spaces = tmp_path / "spaces.txt"
    spaces.write_bytes(b" " * 10_000)
    code, out, _ = patch(capsys, spaces, "--entropy-model", entropy_run)
    assert code == 0 and stat(out, "bytes") == 10_000


def test_fixed_schemes(capsys, entropy_run):
    base = ("--text", TEXT, "--entropy-model", entropy_run)
    assert stat(patch(capsys, *base, "--mode", "static", "--patch-size", 8)[1], "patches") == math.ceil(len(TEXT) / 8)
    space_lengths = lengths_from_start_mask(start_mask_space(encode(TEXT)[None]))[0, 1:]
    code, out, _ = patch(capsys, *base, "--mode", "space")
    assert code == 0 and stat(out, "patches") == space_lengths.numel()
    code, out, _ = patch(capsys, *base, "--mode", "combined", "--threshold", 4.0, "--relative-threshold", 0.05)
    assert code == 0 and "θ_r = 0.05 nats" in out


def test_standard_input(capsys, entropy_run, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
    code, out, _ = patch(capsys, "-", "--entropy-model", entropy_run)
    assert code == 0 and out.startswith("standard input:") and stat(out, "bytes") == 11


@pytest.mark.parametrize("case, message", [
    ("empty text", "--text is empty: there is nothing to patch"),
    ("empty file", "is empty: there is nothing to patch"),
    ("missing file", "does not exist"),
    ("directory", "is a directory; give a file"),
    ("missing run", "run directory"),
    ("not a run", "is not a blt run directory (no config.json)"),
    ("blt run without entropy model", "is a BLT run without an entropy_model/ folder"),
    ("nan threshold", "argument --threshold: 'nan' is not a finite number"),
    ("monotonic without threshold", "--mode monotonic needs --threshold"),
    ("combined without relative", "--mode combined needs --relative-threshold"),
    ("threshold with space mode", "are for the entropy modes, not --mode space"),
    ("data", "is not a prepared data directory"),
])
def test_bad_input_is_one_clear_line(capsys, entropy_run, tmp_path, case, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blt_run").mkdir()
    write_run_config(tmp_path / "blt_run", "blt", BLTConfig.preset("tiny"))
    run = ("--entropy-model", entropy_run)
    argv = {
        "empty text": ("--text", "", *run),
        "empty file": (tmp_path / "empty.txt", *run),
        "missing file": (tmp_path / "nope.txt", *run),
        "directory": (tmp_path, *run),
        "missing run": ("--text", TEXT, "--entropy-model", tmp_path / "no_run"),
        "not a run": ("--text", TEXT, "--entropy-model", tmp_path),
        "blt run without entropy model": ("--text", TEXT, "--entropy-model", tmp_path / "blt_run"),
        "nan threshold": ("--text", TEXT, *run, "--threshold", "nan"),
        "monotonic without threshold": ("--text", TEXT, *run, "--mode", "monotonic"),
        "combined without relative": ("--text", TEXT, *run, "--mode", "combined"),
        "threshold with space mode": ("--text", TEXT, *run, "--mode", "space", "--threshold", 1.0),
        "data": ("--data", tmp_path, *run),
    }[case]
    code, out, err = patch(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("blt patch: error: ") and err.count("\n") == 1 and message in err


def stats_rows(out: str) -> dict[str, list[str]]:
    """The --stats table's lines by file name (the first column), cells split on runs of spaces."""
    rows = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 10 and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells
    return rows


def test_stats_table_gives_each_file_its_patches_share_and_bits(capsys, entropy_run, model, tmp_path):
    rng = torch.Generator().manual_seed(0)
    files = {"prose.txt": (TEXT * 40).encode(), "spaces.txt": b" " * 3000,
             "noise.bin": bytes(torch.randint(0, 256, (2500,), generator=rng).tolist())}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in files]
    code, out, err = patch(capsys, "--stats", *paths, "--entropy-model", entropy_run, "--threshold", 2.0,
                           "--json", tmp_path / "stats.json")
    assert code == 0, err
    assert out.startswith("entropy patching, θ_g = 2 nats (given) (one rule for all 3 files)")
    rows = stats_rows(out)
    record = json.loads((tmp_path / "stats.json").read_text())
    assert [f["name"] for f in record["files"]] == [str(p) for p in paths]
    for path, f in zip(paths, record["files"]):
        data = path.read_bytes()
        ids = encode(data)
        with torch.no_grad():
            logits = model(ids[None])[0]
        entropies = entropy_from_logits(logits)
        nll = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None])[:, 0]
        lengths = patch_lengths_from_entropies(entropies[None], 2.0)[0]
        patches = int((lengths[1:] > 0).sum())  # BOS's own patch is not the file's
        assert f["bytes"] == len(data) and f["patches"] == patches
        assert f["model_bits_per_byte"] == pytest.approx(float(nll.sum()) / len(data) / math.log(2), rel=1e-4)
        assert f["gzip_bits_per_byte"] == pytest.approx(8 * len(gzip.compress(data, 9, mtime=0)) / len(data))
        assert f["xz_bits_per_byte"] == pytest.approx(8 * len(lzma.compress(data, preset=9)) / len(data))
        assert rows[str(path)][1:3] == [f"{len(data):,}", f"{patches:,}"]
    assert sum(f["compute_share"] for f in record["files"]) == pytest.approx(1)
    assert sum(f["bytes_share"] for f in record["files"]) == pytest.approx(1)
    spaces = record["files"][1]
    assert spaces["gzip_bits_per_byte"] < 0.2 and record["files"][2]["xz_bits_per_byte"] > 7.9
    assert rows["all 3 files"][1] == f"{sum(len(d) for d in files.values()):,}"


def test_stats_calibrates_one_threshold_on_all_the_files_together(capsys, entropy_run, tmp_path):
    (tmp_path / "a.txt").write_bytes((TEXT * 30).encode())
    (tmp_path / "b.txt").write_bytes((TEXT[::-1] * 30).encode())
    code, out, _ = patch(capsys, "--stats", tmp_path / "a.txt", tmp_path / "b.txt", "--entropy-model", entropy_run,
                         "--target-patch-size", 6)
    assert code == 0 and "calibrated on all the files together to a mean patch size of 6 bytes" in out
    total = stats_rows(out)["all 2 files"]
    assert float(total[3]) == pytest.approx(6, rel=0.05)


def test_stats_with_a_cap_splits_a_long_run_of_spaces(capsys, entropy_run, tmp_path):
    (tmp_path / "spaces.txt").write_bytes(b" " * 10_000)
    code, out, _ = patch(capsys, "--stats", tmp_path / "spaces.txt", "--entropy-model", entropy_run,
                         "--threshold", 50, "--max-patch-length", 16)
    assert code == 0 and stats_rows(out)[str(tmp_path / "spaces.txt")][2] == "625"


@pytest.mark.parametrize("argv, message", [
    (("--stats",), "--stats needs one or more FILE arguments"),
    (("--stats", "A", "--png", "x.png"), "--png does not go with --stats"),
    (("--stats", "A", "-", "-"), "standard input ('-') can be given once"),
    (("--stats", "EMPTY"), "is empty: there is nothing to patch"),
    (("A", "A"), "give one FILE to show (2 given); --stats takes several"),
    (("A", "--json", "x.json"), "--json goes with --stats"),
    (("--stats", "A", "--data", "D"), "FILE does not go with --data"),
])
def test_stats_bad_input_is_one_clear_line(capsys, entropy_run, tmp_path, argv, message):
    (tmp_path / "a.txt").write_bytes(TEXT.encode())
    (tmp_path / "empty.txt").write_bytes(b"")
    names = {"A": tmp_path / "a.txt", "EMPTY": tmp_path / "empty.txt", "D": tmp_path, "x.png": tmp_path / "x.png",
             "x.json": tmp_path / "x.json"}
    code, out, err = patch(capsys, *[names.get(a, a) for a in argv], "--entropy-model", entropy_run)
    assert code == 2 and out == ""
    assert err.startswith("blt patch: error: ") and err.count("\n") == 1 and message in err


def test_a_long_file_shows_its_first_bytes_and_counts_all_of_them(capsys, entropy_run, tmp_path):
    data = bytes(range(256)) * 40  # 10,240 bytes of every value
    (tmp_path / "all.bin").write_bytes(data)
    code, out, _ = patch(capsys, tmp_path / "all.bin", "--entropy-model", entropy_run, "--show-bytes", 300,
                         "--color", "never")
    assert code == 0 and "(the first 300 of 10,240 bytes; the statistics below are of all of them" in out
    assert stat(out, "bytes") == 10_240
    code, whole, _ = patch(capsys, tmp_path / "all.bin", "--entropy-model", entropy_run, "--show-bytes", 0,
                           "--color", "never")
    assert code == 0 and "the first" not in whole and len(whole) > 10 * len(out) / 2
