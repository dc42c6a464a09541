"""blt.viz: terminal, plot and HTML renderings of patches, and patch statistics."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from blt.fileio import atomic_write_bytes as write_atomically
from blt.patching.calibration import patch_size_curves
from blt.viz import (
    format_stats,
    patch_stats,
    plot_entropies,
    plot_patch_size_curves,
    render_html,
    render_terminal,
    write_patch_size_curves,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def starts_at(n: int, *positions: int) -> list[bool]:
    return [i == 0 or i in positions for i in range(n)]


def body(rendered: str) -> str:
    """The shown text without the legend line."""
    return rendered.rsplit("\n", 1)[0]


def test_plain_rendering_marks_every_boundary_and_nothing_else():
    data = b"Hello world, hi"
    out = render_terminal(data, np.linspace(0, 3, len(data)), starts_at(len(data), 5, 11), color=False)
    assert body(out) == "Hello| world|, hi"
    assert "\x1b" not in out


def test_color_rendering_shades_every_byte_and_alternates_patches():
    data = b"ab cd"
    out = render_terminal(data, [0.1, 0.2, 3.0, 0.3, 0.4], starts_at(5, 2), color=True)
    shown = body(out)
    assert ANSI.sub("", shown) == "ab│ cd"
    assert shown.count("48;5;") == len(data)  # one background per glyph
    assert shown.count(";4m") == 3  # the second patch, " cd", is underlined
    assert "48;2;" in render_terminal(data, [0.1] * 5, starts_at(5), color=True, truecolor=True)


def test_high_entropy_is_shaded_differently_from_low():
    out = render_terminal(b"ab", [0.0, 5.0], [True, False], color=True, truecolor=True)
    low, high = re.findall(r"48;2;(\d+;\d+;\d+)", body(out))
    assert low != high


def test_binary_bytes_show_as_escapes_and_a_backslash_as_two():
    data = bytes([0x00, 0x41, 0xFF, 0x80, 0x1B, 0xC3])  # NUL, A, invalid, lone continuation, ESC, cut-off lead
    out = render_terminal(data, [1.0] * 6, starts_at(6, 2), color=False)
    assert body(out) == r"\x00A|\xff\x80\x1b\xc3"
    assert body(render_terminal(b"\\x41", [1.0] * 4, starts_at(4), color=False)) == r"\\x41"
    colored = render_terminal(data, [1.0] * 6, starts_at(6, 2), color=True)
    assert "\x1b" not in ANSI.sub("", colored)  # the ESC byte itself never reaches the terminal


def test_multibyte_characters_stay_whole_with_inner_boundaries_marked():
    data = "aé€b".encode()  # a, c3 a9, e2 82 ac, b
    starts = starts_at(len(data), 1, 2, 5)  # é starts a patch; one starts inside é, one inside €
    out = render_terminal(data, [1.0] * len(data), starts, color=False)
    assert body(out) == "a|é¦€¦b"
    assert "inside the character" in out.splitlines()[-1]


def test_invisible_characters_are_escaped_byte_by_byte():
    data = "a\u00a0b\u202ec".encode()  # no-break space and right-to-left override
    out = render_terminal(data, [1.0] * len(data), starts_at(len(data)), color=False)
    assert body(out) == r"a\xc2\xa0b\xe2\x80\xaec"


def test_newlines_break_lines_and_long_lines_wrap():
    data = b"abc\ndef"
    assert body(render_terminal(data, [1.0] * 7, starts_at(7, 4), color=False)) == "abc\u21b5\n|def"
    data = b"x" * 50
    lines = body(render_terminal(data, [1.0] * 50, starts_at(50, *range(0, 50, 5)), width=20)).splitlines()
    assert all(len(line) <= 20 for line in lines) and len(lines) > 1
    assert "".join(lines).replace("|", "") == "x" * 50


def test_bad_inputs_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="one value per byte"):
        render_terminal(b"abc", [1.0, 2.0], starts_at(3))
    with pytest.raises(ValueError, match="starts\\[0\\] must be True"):
        render_terminal(b"abc", [1.0] * 3, [False, True, False])
    with pytest.raises(ValueError, match="finite"):
        render_terminal(b"abc", [1.0, float("nan"), 1.0], starts_at(3))
    with pytest.raises(ValueError, match="empty"):
        render_html(b"", [], [])
    with pytest.raises(ValueError, match="threshold"):
        render_terminal(b"abc", [1.0] * 3, starts_at(3), threshold=float("nan"))


def test_patch_stats_numbers_agree():
    lengths = torch.tensor([3, 1, 7, 4, 4, 20])
    s = patch_stats(lengths)
    assert (s["bytes"], s["patches"], s["max"], s["median"]) == (39, 6, 20, 4.0)
    assert s["mean"] == pytest.approx(39 / 6)
    assert s["patches_per_kb"] == pytest.approx(6 * 1024 / 39)
    assert sum(count for _, count in s["histogram"]) == 6
    assert s["histogram"][0] == ("1", 1) and s["histogram"][-1] == ("17–24", 1)
    text = format_stats(s)
    assert "6.50 bytes" in text and "17–24" in text
    with pytest.raises(ValueError):
        patch_stats([2, 0])
    with pytest.raises(ValueError):
        patch_stats([])


def test_html_is_self_contained_with_bytes_boundaries_and_tooltips():
    data = "<b>&é\nok".encode()
    starts = starts_at(len(data), 3, 5)  # the second starts inside é
    page = render_html(data, np.arange(len(data), dtype=float), starts, threshold=1.5, title="T", notes=["why θ"])
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    text = page.split('<div class="text">')[1].split("</div>")[0]
    shown = re.sub(r"<[^>]+>", "", text)
    assert shown == "&lt;b&gt;│&amp;é┊\u21b5\nok"  # escaped, é kept whole, the newline shown and kept
    assert text.count('class="sep"') == 1 and text.count('class="sep inner"') == 1
    assert 'title="bytes 4–5 (c3 a9): entropy 4.000, 5.000 nats, patch 2' in page
    assert "why θ" in page and "mean patch size" in page and "threshold 1.5 nats" in page


def test_png_is_written_atomically(tmp_path):
    data = "Daenerys Targaryen is in Game of Thrones. 日本 \xff".encode("utf-8", "surrogateescape")
    H = torch.rand(len(data), generator=torch.Generator().manual_seed(0)) * 4
    starts = (H > 2.0).tolist()
    starts[0] = True
    path = plot_entropies(data, H, starts, 2.0, tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    long = plot_entropies(data * 20, H.repeat(20), starts * 20, None, tmp_path / "long.png", max_bytes=500)
    assert long.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "long.png"]  # no temporary files left


def test_write_atomically_leaves_nothing_behind_on_failure(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "missing" / "x.html", b"x")
    assert write_atomically(tmp_path / "x.html", b"x").read_bytes() == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["x.html"]


def test_patch_size_curves_are_plotted_with_their_numbers_beside(tmp_path):
    H = torch.from_numpy(np.random.default_rng(0).gamma(1.5, 0.8, size=(4, 400)).astype(np.float32))
    curves = patch_size_curves(H, targets=(4.5, 6, 8, 10_000), points=16)  # the last target is out of reach
    png, numbers = write_patch_size_curves(curves, tmp_path / "run" / "patch_size_vs_threshold.png")
    assert png == tmp_path / "run" / "patch_size_vs_threshold.png" and numbers == png.with_suffix(".json")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(numbers.read_text()) == curves
    assert sorted(p.name for p in png.parent.iterdir()) == ["patch_size_vs_threshold.json", "patch_size_vs_threshold.png"]
    with pytest.raises(ValueError, match="non-empty curve per mode"):
        plot_patch_size_curves({"modes": {}}, tmp_path / "empty.png")
