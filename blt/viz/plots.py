"""Plots of runs and reports: a training curve, a comparison's bits per byte against FLOPs, and the
character-task and noise accuracies of `blt eval-char`. Patch views and their plots are in `patches`.

matplotlib is imported only when a plot is drawn (it takes a second)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from blt.fileio import atomic_path, atomic_write_bytes


def _save_png(plt, fig, out_png: Path) -> Path:
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curve(records: list[dict[str, Any]], out_png: Path) -> Path | None:
    """Training and validation bits-per-byte against step (records of ``metrics.jsonl``), as a PNG."""
    if not records:
        return None
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in records], [r["bpb"] for r in records], label="train")
    val = [r for r in records if "val_bpb" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_bpb"] for r in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_png(plt, fig, out_png)


def plot_bpb_vs_flops(result: dict, out_png: Path) -> Path:
    """Validation bits per byte against cumulative training FLOPs, one line per member."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in result["members"]:
        curve = r["curve"]
        if curve:
            ax.plot([c["flops"] for c in curve], [c["val_bpb"] for c in curve], "o-", ms=3, label=r["name"])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"budget {result['settings']['budget']:.3g} FLOPs per model, preset {result['settings']['preset']}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save_png(plt, fig, out_png)


def plot_char_report(report: dict, path: Path, choices: int) -> Path:
    """Grouped bars of a `blt eval-char` report: ranking accuracy and exact match per task and model, and
    accuracy per noise type (``choices`` endings per passage, so chance is 1 / choices)."""
    from matplotlib.figure import Figure

    names = list(report["models"])
    panels = (["tasks"] if report["settings"]["tasks"] else []) + (["noise"] if report["settings"]["noise"] else [])
    fig = Figure(figsize=(12, 4 * len(panels)), dpi=110, layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        if panel == "tasks":
            groups = report["settings"]["tasks"] + ["average"]
            series = [(f"{n} rank", [report["models"][n]["tasks"][t]["ranking_accuracy"] for t in groups]) for n in names]
            if not report["settings"]["no_greedy"]:
                series += [(f"{n} exact", [report["models"][n]["tasks"][t]["exact_match"] for t in groups]) for n in names]
            ax.set_title("Character-level tasks (held-out words)")
        else:
            groups = [r["noise"] for r in report["models"][names[0]]["noise"]]
            series = [(n, [r["ranking_accuracy"] for r in report["models"][n]["noise"]]) for n in names]
            ax.set_title("Choosing a passage's ending under noisy input")
        x = np.arange(len(groups))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [100 * v for v in values], width, label=label)
        chance = [report["chance"][t] for t in groups] if panel == "tasks" else [1 / choices] * len(groups)
        ax.hlines([100 * c for c in chance], x - 0.45, x + 0.45, colors="black", linestyles="dashed", linewidths=1,
                  label="chance")
        ax.set_xticks(x, groups, rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_entropy_traces(panels: list[dict[str, Any]], threshold: float, out_png: Path) -> Path:
    """One row per excerpt: each byte's entropy (bits) with the patch starts and the threshold, for showing
    how patching follows different kinds of bytes. A panel is ``{"title", "entropies" (nats, one per byte),
    "starts" (bool, one per byte)}``."""
    if not panels:
        raise ValueError("no excerpts to plot")
    for panel in panels:
        if len(panel["entropies"]) != len(panel["starts"]) or not len(panel["entropies"]):
            raise ValueError(f"{panel['title']}: {len(panel['entropies'])} entropies and {len(panel['starts'])} "
                             "starts; expected one of each per byte")
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.55 * len(panels) + 0.6), sharex=True, squeeze=False)
    bits = 1 / np.log(2)
    for ax, panel in zip(axes[:, 0], panels):
        h = np.asarray(panel["entropies"], dtype=np.float64) * bits
        starts = np.flatnonzero(np.asarray(panel["starts"], dtype=bool))
        ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), colors="0.75", linewidths=0.7)
        ax.plot(np.arange(len(h)), h, lw=0.9, color="tab:blue")
        ax.axhline(threshold * bits, color="tab:red", lw=0.9, ls="--")
        ax.set_ylim(0, 8.2)
        ax.set_yticks([0, 4, 8])
        ax.set_ylabel("bits", fontsize=8)
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.grid(alpha=0.25, axis="y")
    axes[-1, 0].set_xlabel("byte in the excerpt (grey: a patch starts; dashed red: the threshold)")
    return _save_png(plt, fig, out_png)


def plot_task_curves(curves: dict[str, dict[str, list[dict[str, Any]]]], out_png: Path,
                     metric: str = "exact_match", interval: str = "exact_match_interval") -> Path:
    """Held-out accuracy against finetuning steps, one panel per task and one line per model, with the 95%
    interval as a band. ``curves[model][task]`` is a list of ``{"step", metric, interval}`` (a
    `TaskScore.to_dict` with its step), in step order."""
    plt = _pyplot()
    tasks = list(next(iter(curves.values())))
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for model, per_task in curves.items():
            points = per_task[task]
            steps = [p["step"] for p in points]
            ax.plot(steps, [100 * p[metric] for p in points], "o-", ms=3, label=model)
            ax.fill_between(steps, [100 * p[interval][0] for p in points],
                            [100 * p[interval][1] for p in points], alpha=0.2)
        ax.set_title(task)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("finetuning steps")
        ax.set_ylabel("held-out " + metric.replace("_", " ") + " (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    axes.flat[0].legend()
    return _save_png(plt, fig, out_png)


def plot_length_scaling(results: list[dict[str, Any]], out_png: Path) -> Path:
    """The ``length`` benchmark case (`blt.bench.length`): training microseconds per byte and peak memory
    against the row length, and generation bytes/s against the context, for the BLT and the byte baseline."""
    plt = _pyplot()
    training = [r for r in results if "seq_len" in r]
    generation = [r for r in results if "context_bytes" in r]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for model, style in (("blt", "o-"), ("byte", "s--")):
        for precision in dict.fromkeys(r["precision"] for r in training):
            rows = [r for r in training if r["precision"] == precision]
            lengths = [r["seq_len"] for r in rows]
            axes[0].plot(lengths, [r[model]["us_per_byte"] for r in rows], style, label=f"{model} {precision}")
            axes[1].plot(lengths, [r[model]["peak_step_memory_bytes"] / 2**20 for r in rows], style,
                         label=f"{model} {precision}")
        if generation:
            axes[2].plot([r["context_bytes"] for r in generation], [r[model]["bytes_per_s"] for r in generation],
                         style, label=model)
    titles = ("training step: time per byte", "training step: peak tensor memory", "cached greedy generation")
    ylabels = ("microseconds per byte", "MiB", "bytes per second")
    xlabels = ("bytes per row", "bytes per row", "bytes of context")
    for ax, title, ylabel, xlabel in zip(axes, titles, ylabels, xlabels):
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[1].set_yscale("log")
    preset = (training or generation)[0]["preset"] if results else "?"
    fig.suptitle(f"cost against length, preset {preset}: BLT against the byte baseline "
                 "(the same global blocks per byte)")
    return _save_png(plt, fig, out_png)
