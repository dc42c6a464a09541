"""``metrics.jsonl``, one JSON record per logged step, appended as training goes; reading it back, cutting it at
a resumed step, and its plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blt.errors import CheckpointError
from blt.fileio import atomic_write_text
from blt.viz.plots import plot_training_curve

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
    """Training and validation bits-per-byte of a run's ``metrics.jsonl`` against step, as a PNG."""
    return plot_training_curve(read_metrics(metrics_path), out_png)
