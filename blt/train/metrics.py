"""``metrics.jsonl``, one JSON record per logged step, appended as training goes; reading it back, cutting it at
a resumed step, and its plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blt.errors import CheckpointError
from blt.fileio import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A last line cut short (a run killed while appending it) is left
    out; any other line that is not a JSON record with a step is a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        elif number < len(lines):  # not the unfinished last line
            raise CheckpointError(f"{path} line {number} is not a metrics record (corrupt?); remove that line")
    return records


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """One record as one line at the end of ``metrics.jsonl`` (a kill in the middle leaves a partial last line,
    which `read_metrics` leaves out and a resume removes)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def keep_metrics_through(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` (atomically, and only when that changes it) to its records up to ``step``."""
    path = Path(path)
    if not path.is_file():
        return
    text = "".join(json.dumps(r) + "\n" for r in read_metrics(path) if r["step"] <= step)
    if path.read_bytes() != text.encode():
        atomic_write_text(path, text)


def plot_metrics(metrics_path: Path, out_png: Path) -> Path | None:
    """Training and validation bits-per-byte against step, as a PNG."""
    records = read_metrics(metrics_path)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in records], [r["bpb"] for r in records], label="train")
    val = [r for r in records if "val_bpb" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_bpb"] for r in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)
