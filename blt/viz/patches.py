"""Seeing patches: a text's bytes with their patch boundaries and entropies, as terminal text, as an
entropy plot like Figure 4 of the BLT paper, or as a self-contained HTML page; and how the mean patch size
of an entropy model grows with the threshold (`plot_patch_size_curves`).

Every function takes the same three views of one text (the BOS patch is never shown):

- ``data``: the bytes, as given (any bytes: invalid UTF-8 and control bytes are shown as ``\\xNN``, and a
  backslash as ``\\\\``).
- ``entropies[j]``: the entropy (nats) of the entropy model's distribution over byte ``j`` given the bytes
  before it. For ``ids = encode(data)`` (BOS first) that is ``entropy_model.entropies(ids)[:-1]``, and in
  global-threshold patching byte ``j >= 1`` starts a patch exactly when ``entropies[j] > θ``, which is
  what the paper's Figure 4 plots.
- ``starts[j]``: True where byte ``j`` starts a patch (``starts[0]`` is always True); for the start mask
  of ``encode(data)`` that is ``start_mask[1:]``.

A printable UTF-8 character is shown whole even when a patch starts inside it (entropy and space
patching can split one): the character stays with the patch of its first byte and is followed by a
dotted separator per patch that starts inside it.

>>> data, H = b"ab cd", [4.0, 0.5, 2.0, 0.3, 0.1]  # θ = 1: the space starts a patch
>>> print(render_terminal(data, H, [True, False, True, False, False], threshold=1.0, color=False))
ab| cd
| patch start
>>> patch_stats([2, 3])["mean"]
2.5
"""

from __future__ import annotations

import functools
import html
import io
import itertools
import json
import math
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from blt.fileio import atomic_write_bytes, atomic_write_text

ArrayLike = Sequence[float] | Sequence[bool] | np.ndarray | torch.Tensor

# Viridis, low to high entropy: perceptually even, and readable under black or white text.
_COLORMAP = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
             (1.0, (253, 231, 37)))
_SHADES = 64  # colors on the entropy scale
_XTERM_LEVELS = (0, 95, 135, 175, 215, 255)  # channel values of the xterm 6x6x6 color cube
_RESET = "\x1b[0m"
_SEPARATOR_STYLE = "\x1b[1m"
# Newline and tab made visible (the newline also breaks the line); a backslash doubled, so that it can't be
# mistaken for the start of an \xNN escape.
_SHOWN_ASCII = {0x0A: "↵", 0x09: "⇥", 0x5C: "\\\\"}
_HISTOGRAM_BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 12), (13, 16),
                      (17, 24), (25, 32), (33, 64), (65, 128), (129, None))
_HISTOGRAM_WIDTH = 40
PLOT_BYTES = 100  # bytes plotted by default, about the length of the paper's Figure 4
PLOT_LABEL_BYTES = 160  # plots of at most this many bytes label every byte with its character


class PatchStats(TypedDict):
    """What `patch_stats` measures. ``mean`` is bytes per patch (`blt.patching.mean_patch_size` of the
    patching with BOS); ``histogram`` is ``(size range, patches)`` from the smallest to the largest patch."""

    bytes: int
    patches: int
    mean: float
    median: float
    patches_per_kb: float  # patches per 1024 bytes
    max: int
    histogram: list[tuple[str, int]]


@dataclass(frozen=True)
class _Cell:
    """One shown glyph: a printable character (one or more bytes) or one byte as an escape."""

    text: str
    start: int  # first byte
    end: int  # one past the last byte
    patch: int  # index of the patch of the first byte
    opens_patch: bool  # the first byte starts a patch
    inner_starts: int  # patches starting at a later byte of this cell (inside a character)
    escaped: bool  # shown as \xNN
    newline: bool


# --- inputs --------------------------------------------------------------------------------------

def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_inputs(data: bytes, entropies: ArrayLike, starts: ArrayLike) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Validate the three views (see the module docstring); returns bytes, float64 entropies, bool starts."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError("data is empty: there are no patches to show")
    H = _to_numpy(entropies).astype(np.float64)
    S = _to_numpy(starts)
    for name, arr in (("entropies", H), ("starts", S)):
        if arr.shape != (len(data),):
            raise ValueError(f"{name} must be 1-D with one value per byte ({len(data)}), got shape {arr.shape}")
    if not np.isfinite(H).all():
        raise ValueError(f"entropies[{int(np.argmin(np.isfinite(H)))}] is not finite; entropies must be finite nats")
    if S.dtype != np.bool_:
        raise ValueError(f"starts must be booleans (True where a patch starts), got dtype {S.dtype}")
    if not S[0]:
        raise ValueError("starts[0] must be True: the first byte always starts a patch")
    return data, H, S


def _check_threshold(threshold: float | None) -> float | None:
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number of nats or None, got {threshold!r}")
    return threshold


# --- glyphs and colors ---------------------------------------------------------------------------

def _glyph(data: bytes, i: int) -> tuple[str, int, bool]:
    """The glyph at byte ``i``: (text, bytes it covers, escaped)."""
    b = data[i]
    if b < 0x80:
        if b in _SHOWN_ASCII:
            return _SHOWN_ASCII[b], 1, False
        if b < 0x20 or b == 0x7F:
            return f"\\x{b:02x}", 1, True
        return chr(b), 1, False
    size = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
    if size:
        try:
            char = data[i : i + size].decode("utf-8")
        except UnicodeDecodeError:
            char = ""
        if len(char) == 1 and char.isprintable():
            return char, size, False
    return f"\\x{b:02x}", 1, True  # invalid UTF-8, or an invisible character (shown byte by byte)


def _cells(data: bytes, starts: np.ndarray) -> list[_Cell]:
    patch_of = (np.cumsum(starts) - 1).tolist()  # (T,) index of each byte's patch
    is_start = starts.tolist()
    cells, i = [], 0
    while i < len(data):
        text, size, escaped = _glyph(data, i)
        cells.append(_Cell(text, i, i + size, patch_of[i], is_start[i], sum(is_start[i + 1 : i + size]), escaped,
                           data[i] == 0x0A))
        i += size
    return cells


@functools.cache
def _width(text: str) -> int:
    """Terminal columns of ``text``: wide East Asian characters take 2, combining marks 0."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _shades(entropies: np.ndarray, threshold: float | None) -> tuple[list[int], float]:
    """Each byte's shade, 0 .. _SHADES - 1, on a scale from 0 to the largest entropy or the threshold,
    whichever is higher; and that top of the scale (nats)."""
    top = max(float(entropies.max()), threshold or 0.0, 1e-6)
    shades = np.clip(np.rint(entropies / top * (_SHADES - 1)), 0, _SHADES - 1).astype(np.int64)
    return shades.tolist(), top


def _cell_shade(shades: list[int], cell: _Cell) -> int:
    """A multi-byte character is shaded by its most uncertain byte."""
    return max(shades[cell.start:cell.end])


@functools.cache
def _rgb(shade: int) -> tuple[int, int, int]:
    """The colormap at ``shade / (_SHADES - 1)``, linearly interpolated."""
    x = shade / (_SHADES - 1)
    for (x0, c0), (x1, c1) in itertools.pairwise(_COLORMAP):
        if x <= x1:
            t = (x - x0) / (x1 - x0)
            return tuple(round(a + t * (b - a)) for a, b in zip(c0, c1))  # type: ignore[return-value]
    return _COLORMAP[-1][1]


def _dark(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b < 140


def _xterm_index(rgb: tuple[int, int, int]) -> int:
    """The nearest color of the xterm 256-color cube."""
    r, g, b = (min(range(6), key=lambda k: abs(_XTERM_LEVELS[k] - c)) for c in rgb)
    return 16 + 36 * r + 6 * g + b


@functools.cache
def _ansi_style(shade: int, underline: bool, truecolor: bool) -> str:
    rgb = _rgb(shade)
    fg = (255, 255, 255) if _dark(rgb) else (0, 0, 0)
    if truecolor:
        codes = ["48;2;{};{};{}".format(*rgb), "38;2;{};{};{}".format(*fg)]
    else:
        codes = [f"48;5;{_xterm_index(rgb)}", f"38;5;{231 if _dark(rgb) else 16}"]
    return "\x1b[" + ";".join(codes + (["4"] if underline else [])) + "m"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# --- terminal ------------------------------------------------------------------------------------

def render_terminal(
    data: bytes,
    entropies: ArrayLike,
    starts: ArrayLike,
    threshold: float | None = None,
    color: bool = False,
    *,
    width: int = 100,
    truecolor: bool = False,
) -> str:
    """The text with its patches, wrapped at ``width`` columns, then a one-line legend.

    With ``color``, each glyph's background shows its entropy (a multi-byte character: the largest of its
    bytes'; the scale runs from 0 to the largest entropy or ``threshold``, whichever is higher) in xterm
    256 colors, or 24-bit with ``truecolor``; every other patch is underlined and ``│`` separates
    patches. Without, ``|`` separates patches and there are no escape codes. ``¦`` (``┊`` in color)
    follows a character that a patch starts inside. Newlines show as ``↵`` and break the line; tabs
    show as ``⇥``.

    >>> print(render_terminal("é!".encode(), [1.0, 0.2, 3.0], [True, True, True]))
    é¦|!
    | patch start   ¦ a patch starts inside the character before it
    """
    data, H, S = _check_inputs(data, entropies, starts)
    threshold = _check_threshold(threshold)
    if width < 8:
        raise ValueError(f"width must be at least 8 columns, got {width}")
    shades, top = _shades(H, threshold)
    boundary, inner = ("│", "┊") if color else ("|", "¦")
    separator_style = _SEPARATOR_STYLE if color else ""
    lines: list[list[tuple[str, str]]] = []  # each line: (text, ANSI style) pieces
    line: list[tuple[str, str]] = []
    column = 0
    cells = _cells(data, S)
    for cell in cells:
        pieces = [(boundary, separator_style)] if cell.opens_patch and cell.start > 0 else []
        style = _ansi_style(_cell_shade(shades, cell), cell.patch % 2 == 1, truecolor) if color else ""
        pieces.append((cell.text, style))
        if cell.inner_starts:
            pieces.append((inner * cell.inner_starts, separator_style))
        cell_width = sum(_width(text) for text, _ in pieces)
        if column and column + cell_width > width:
            lines.append(line)
            line, column = [], 0
        line.extend(pieces)
        column += cell_width
        if cell.newline:
            lines.append(line)
            line, column = [], 0
    if line:
        lines.append(line)
    body = "\n".join("".join(f"{style}{text}{_RESET}" if style else text for text, style in pieces) for pieces in lines)
    legend = [f"{boundary} patch start"]
    if any(cell.inner_starts for cell in cells):
        legend.append(f"{inner} a patch starts inside the character before it")
    if color:
        swatches = "".join(_ansi_style(shade, False, truecolor) + " " + _RESET for shade in range(0, _SHADES, 4))
        marked = f" (threshold {threshold:.3g})" if threshold is not None else ""
        legend.insert(0, f"entropy 0 {swatches} {top:.2f} nats{marked}")
    return body + "\n" + "   ".join(legend)


# --- statistics ----------------------------------------------------------------------------------

def patch_stats(lengths: Sequence[int] | np.ndarray | torch.Tensor) -> PatchStats:
    """Statistics of a text's patch lengths (BOS patch excluded; they sum to the text's bytes).

    >>> s = patch_stats([1, 3, 4, 4, 12])
    >>> s["bytes"], s["patches"], s["mean"], s["median"], s["max"], round(s["patches_per_kb"], 1)
    (24, 5, 4.8, 4.0, 12, 213.3)
    >>> s["histogram"]
    [('1', 1), ('2', 0), ('3', 1), ('4', 2), ('5', 0), ('6', 0), ('7', 0), ('8', 0), ('9–12', 1)]
    """
    L = _to_numpy(lengths)
    if L.ndim != 1 or L.size == 0 or not np.issubdtype(L.dtype, np.integer):
        raise ValueError(f"lengths must be a non-empty 1-D sequence of ints, got shape {L.shape} of {L.dtype}")
    if int(L.min()) < 1:
        raise ValueError("patch lengths must be >= 1 (drop the zero padding of a (B, P) row first)")
    total, count = int(L.sum()), int(L.size)
    buckets = [(lo, hi) for lo, hi in _HISTOGRAM_BUCKETS if (hi is None or hi >= L.min()) and lo <= L.max()]
    histogram = [(str(lo) if hi == lo else f"{lo}+" if hi is None else f"{lo}–{hi}",
                  int(((L >= lo) & (L <= (hi if hi is not None else L.max()))).sum())) for lo, hi in buckets]
    return PatchStats(bytes=total, patches=count, mean=total / count, median=float(np.median(L)),
                      patches_per_kb=count * 1024 / total, max=int(L.max()), histogram=histogram)


def _bar(count: int, most: int) -> str:
    return "█" * (max(1, round(_HISTOGRAM_WIDTH * count / most)) if count else 0)


def _stat_rows(stats: PatchStats) -> list[tuple[str, str, str]]:
    """(name, number, unit) of each statistic but the histogram."""
    return [("bytes", f"{stats['bytes']:,}", ""), ("patches", f"{stats['patches']:,}", ""),
            ("mean patch size", f"{stats['mean']:.2f}", " bytes"),
            ("median patch size", f"{stats['median']:g}", " bytes"),
            ("patches per KB", f"{stats['patches_per_kb']:.1f}", ""), ("max patch", f"{stats['max']:,}", " bytes")]


def format_stats(stats: PatchStats) -> str:
    """`patch_stats` as aligned text lines with a bar histogram of patch sizes.

    >>> print(format_stats(patch_stats([2, 2, 3])))
    bytes                     7
    patches                   3
    mean patch size        2.33 bytes
    median patch size         2 bytes
    patches per KB        438.9
    max patch                 3 bytes
    patch sizes
          2 ████████████████████████████████████████ 2
          3 ████████████████████ 1
    """
    lines = [f"{name:<18}{value:>9}{unit}" for name, value, unit in _stat_rows(stats)]
    most = max(count for _, count in stats["histogram"])
    lines.append("patch sizes")
    lines += [f"{label:>7} {_bar(count, most)} {count:,}".rstrip() for label, count in stats["histogram"]]
    return "\n".join(lines)


# --- plot ----------------------------------------------------------------------------------------

def plot_entropies(
    data: bytes,
    entropies: ArrayLike,
    starts: ArrayLike,
    threshold: float | None,
    path: str | Path,
    *,
    max_bytes: int = PLOT_BYTES,
    title: str | None = None,
) -> Path:
    """Plot each byte's entropy with the threshold and the patch starts (the paper's Figure 4) as a PNG.

    Only the first ``max_bytes`` bytes are plotted (the title says so when that cuts the text). Up to
    `PLOT_LABEL_BYTES` bytes, every byte is labelled on the x axis with its character (``␣`` for a
    space; the later bytes of a multi-byte character get ``·``); longer plots label positions. The
    threshold is drawn when given (pass None for schemes it doesn't decide). Written atomically with
    matplotlib's Agg renderer and no global pyplot state; returns ``path``.
    """
    data, H, S = _check_inputs(data, entropies, starts)
    threshold = _check_threshold(threshold)
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    # Deferred: matplotlib takes a second to import.
    from matplotlib.figure import Figure

    n = min(len(data), max_bytes)
    label_bytes = n <= PLOT_LABEL_BYTES
    fig = Figure(figsize=(min(max(6.0, 0.13 * n + 2.0), 24.0) if label_bytes else 14.0, 4.0), dpi=120,
                 layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.vlines(np.flatnonzero(S[:n]), 0, 1, transform=ax.get_xaxis_transform(), colors="0.7", linewidths=0.9,
              label="patch start", zorder=1)
    ax.plot(x, H[:n], color="tab:blue", marker="o", markersize=3 if label_bytes else 1.5, linewidth=1.1,
            label="entropy", zorder=2)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linewidth=1.2, linestyle="--", label=f"threshold {threshold:.3g} nats",
                   zorder=3)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(bottom=min(0.0, float(H[:n].min()), threshold or 0.0))
    ax.set_ylabel("entropy (nats)")
    if label_bytes:
        labels = ["·"] * n
        for cell in _cells(data[:n], S[:n]):
            labels[cell.start] = "␣" if cell.text == " " else cell.text
        ax.set_xticks(x, labels, fontfamily="monospace", fontsize=8)
        for tick, label in zip(ax.get_xticklabels(), labels):
            tick.set_rotation(90 if len(label) > 1 else 0)
    else:
        ax.set_xlabel("byte position")
    heading = title or "Next-byte entropy and patch starts"
    if n < len(data):
        heading += f" (first {n:,} of {len(data):,} bytes)"
    ax.set_title(heading)
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0, fontsize=8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # characters the font lacks draw as boxes; that is enough here
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


PATCH_SIZE_CURVE_FILE = "patch_size_vs_threshold.png"  # in an entropy-model run, with its .json beside it
_CURVE_TITLES = {"entropy": "global threshold θ_g", "monotonic": "monotonic threshold θ_r"}


def plot_patch_size_curves(curves: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Plot mean patch size against the threshold, one panel per mode, as a PNG.

    ``curves`` is what `blt.patching.calibration.patch_size_curves` returns. The patch-size axis is
    logarithmic; each target size is a dotted line, and its calibrated threshold a labelled point (a target
    out of reach on the sample has its line only). Written atomically without global pyplot state.
    """
    # Deferred: matplotlib takes a second to import.
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    modes = curves.get("modes") or {}
    if not modes or any(not data.get("curve") for data in modes.values()):
        raise ValueError("curves must hold a non-empty curve per mode (from patch_size_curves)")
    fig = Figure(figsize=(5.5 * len(modes), 4.2), dpi=120, layout="constrained")
    axes = fig.subplots(1, len(modes), sharey=True, squeeze=False)[0]
    colors = ("tab:red", "tab:green", "tab:purple", "tab:orange")
    for ax, (mode, data) in zip(axes, modes.items()):
        thresholds, sizes = np.array(data["curve"], dtype=np.float64).T
        ax.plot(thresholds, sizes, color="tab:blue", marker="o", markersize=2.5, linewidth=1.2, label="mean patch size")
        for color, target in zip(colors * len(data["targets"]), data["targets"]):
            reached = target["threshold"] is not None
            ax.axhline(target["target"], color=color, linewidth=0.9, linestyle=":",
                       label=None if reached else f"{target['target']:g} bytes: out of reach on this sample")
            if not reached:
                continue
            ax.plot([target["threshold"]], [target["mean_patch_size"]], "o", color=color, markersize=6,
                    label=f"{target['target']:g} bytes: θ = {target['threshold']:.3f}")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(FixedLocator([2.0**k for k in range(12)]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{_CURVE_TITLES.get(mode, mode)} (nats)")
        ax.set_title(f"{mode} patching", fontsize=10)
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("mean patch size (bytes, log scale)")
    fig.suptitle(title or f"Mean patch size against the threshold ({curves['bytes']:,} bytes in "
                          f"{curves['sequences']:,} sequences)", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def write_patch_size_curves(curves: dict[str, Any], path: str | Path, *, title: str | None = None) -> tuple[Path, Path]:
    """`plot_patch_size_curves` to ``path`` (a .png) and the curves as JSON beside it (same name, .json);
    returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = atomic_write_text(path.with_suffix(".json"), json.dumps(curves, indent=1) + "\n")
    return plot_patch_size_curves(curves, path, title=title), data


# --- HTML ----------------------------------------------------------------------------------------

_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.text { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-all;
        line-height: 1.9; font-size: 15px; }
.c { padding: 1px 0; }
.c.odd { text-decoration: underline; text-underline-offset: 3px; }
.c.esc { font-size: 80%; }
.sep { color: #d62728; font-weight: bold; }
.sep.inner { color: #ff7f0e; }
.scale { display: inline-block; width: 12em; height: 0.9em; vertical-align: middle; background: %GRADIENT%; }
table { border-collapse: collapse; margin-top: 1.5em; }
td { padding: 2px 10px; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; height: 0.8em; background: #3b528b; }
""".strip()


def _tooltip(cell: _Cell, data: bytes, entropies: list[float]) -> str:
    values = ", ".join(f"{h:.3f}" for h in entropies[cell.start:cell.end])
    where = f"byte {cell.start}" if cell.end - cell.start == 1 else f"bytes {cell.start}–{cell.end - 1}"
    hex_bytes = " ".join(f"{b:02x}" for b in data[cell.start:cell.end])
    tip = f"{where} ({hex_bytes}): entropy {values} nats, patch {cell.patch + 1}"
    if cell.inner_starts:
        tip += f"; {cell.inner_starts} patch(es) start inside this character"
    return tip


def render_html(
    data: bytes,
    entropies: ArrayLike,
    starts: ArrayLike,
    threshold: float | None = None,
    *,
    title: str = "Patches",
    notes: Sequence[str] = (),
) -> str:
    """A self-contained HTML page: the text with each glyph colored by its entropy (hover for the exact
    values, the bytes and the patch), patch boundaries as ``│`` (``┊`` inside a character), every other
    patch underlined, then ``notes`` (e.g. how the threshold was chosen) and the `patch_stats`.
    """
    data, H, S = _check_inputs(data, entropies, starts)
    threshold = _check_threshold(threshold)
    shades, top = _shades(H, threshold)
    entropy_list = H.tolist()
    parts: list[str] = []
    used: set[int] = set()
    for cell in _cells(data, S):
        if cell.opens_patch and cell.start > 0:
            parts.append(f'<span class="sep" title="patch {cell.patch + 1} starts at byte {cell.start}">│</span>')
        shade = _cell_shade(shades, cell)
        used.add(shade)
        classes = f"c h{shade}" + (" odd" if cell.patch % 2 else "") + (" esc" if cell.escaped else "")
        tooltip = html.escape(_tooltip(cell, data, entropy_list))
        parts.append(f'<span class="{classes}" title="{tooltip}">{html.escape(cell.text)}</span>')
        if cell.inner_starts:
            parts.append('<span class="sep inner" title="a patch starts inside the character before">'
                         + "┊" * cell.inner_starts + "</span>")
        if cell.newline:
            parts.append("\n")
    stats = patch_stats(np.diff(np.append(np.flatnonzero(S), len(data))))
    shade_rules = "\n".join(f".h{shade} {{ background: {_hex(_rgb(shade))}; "
                            f"color: {'#fff' if _dark(_rgb(shade)) else '#000'} }}" for shade in sorted(used))
    gradient = "linear-gradient(to right, " + ", ".join(f"{_hex(rgb)} {x:.0%}" for x, rgb in _COLORMAP) + ")"
    legend = (f'entropy <span class="scale"></span> 0 – {top:.2f} nats &nbsp; '
              '<span class="sep">│</span> patch start &nbsp; '
              '<span class="sep inner">┊</span> patch start inside a character')
    if threshold is not None:
        legend += f" &nbsp; threshold {threshold:.4g} nats"
    most = max(count for _, count in stats["histogram"])
    histogram = "".join(f'<tr><td class="n">{label}</td><td><span class="bar" style="width:{12 * count / most:.2f}em">'
                        f'</span> {count:,}</td></tr>' for label, count in stats["histogram"])
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_HTML_STYLE.replace('%GRADIENT%', gradient)}\n{shade_rules}\n</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(note)}</p>" for note in notes),
        f'<p class="legend">{legend}</p>',
        f'<div class="text">{"".join(parts)}</div>',
        "<table><tbody>" + "".join(f'<tr><td>{name}</td><td class="n">{value}{unit}</td></tr>'
                                   for name, value, unit in _stat_rows(stats)),
        f'<tr><td colspan="2">patch sizes</td></tr>{histogram}</tbody></table>',
        "</body></html>",
        "",
    ])


__all__ = ["PLOT_BYTES", "PLOT_LABEL_BYTES", "PatchStats", "format_stats", "patch_stats", "plot_entropies",
           "render_html", "render_terminal"]
