"""Where a BLT spends its compute across kinds of bytes: prose, code, speech, images, PDF, compressed,
random and degenerate files (`blt data mixed`).

    python scripts/anybytes.py          # resumable: run it again to continue, finished steps are skipped

1. ``blt data mixed --out data_cache/mixed-files --prepare data_cache/mixed`` (nothing downloaded);
2. ``blt train-entropy`` (preset ``tiny``) on it, and its entropies precomputed beside the data;
3. ``blt train`` a ``tiny`` BLT with entropy patching calibrated to ``--patch-size`` bytes per patch;
4. the report, per kind of file over the validation split: the BLT's bits per byte, the entropy model's,
   gzip -9 and xz -9 of the same files, bytes per patch, global steps per KB and each kind's share of the
   global model's steps against its share of the bytes; the entropy traces of an excerpt of each kind
   (``traces.png``); and three corner cases (10,000 spaces, a WAV's silence, a gzip member).

The report goes to ``--results`` (default ``results/anybytes``): ``anybytes.json``, ``anybytes.md``,
``traces.png``. ``--report`` only rewrites it from the finished runs.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from blt.cli import STOPPED, run_reporting_errors
from blt.data import PreparedData
from blt.data.mixed import KINDS, kind_of
from blt.evaluate import evaluate_run
from blt.evaluate.bpb import recorded_train, stored_entropies
from blt.fileio import atomic_write_text
from blt.patching import Patcher
from blt.patching.file_stats import gzip_bits_per_byte, xz_bits_per_byte
from blt.run import load
from blt.tokenizer import encode
from blt.viz.plots import plot_entropy_traces

TRACE_KINDS = ("text", "code", "speech", "bmp", "png", "pdf", "gzip", "degenerate")
TRACE_BYTES = 400
CAP = 16  # the max_patch_length of the corner case
SILENCE_LEVEL = 16  # |sample| at most this counts as silence


def blt_cli(*argv: str) -> None:
    print("anybytes: blt " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "blt", *argv], check=True)


def finished(run: Path) -> bool:
    return (run / "model.safetensors").is_file()


def train(command: str, run: Path, *argv: str) -> None:
    if finished(run):
        return
    resume = ["--resume"] if (run / "config.json").is_file() else []
    blt_cli(command, "--out", str(run), *argv, *resume)


def build(args) -> None:
    if not (args.data / "manifest.json").is_file():
        blt_cli("data", "mixed", "--out", str(args.files), "--prepare", str(args.data), "--force")
    train("train-entropy", args.runs / "entropy", "--data", str(args.data), "--preset", "tiny",
          "--steps", str(args.entropy_steps), *(["--quiet"] if args.quiet else []))
    blt_cli("patch", "--data", str(args.data), "--entropy-model", str(args.runs / "entropy"))
    train("train", args.runs / "blt", "--data", str(args.data), "--preset", "tiny", "--steps", str(args.steps),
          "--entropy-model", str(args.runs / "entropy"), "--target-patch-size", f"{args.patch_size:g}",
          "--precision", "bf16", *(["--quiet"] if args.quiet else []))


# --- the report ------------------------------------------------------------------------------------------

def per_kind(args, data: PreparedData, blt_run, entropy_run) -> list[dict]:
    val = data.split("val")
    seq_len = recorded_train(blt_run.info, args.runs / "blt").get("seq_len") or 512
    kinds: dict[str, list[int]] = {}
    for i in range(len(val)):
        kind = kind_of(val.document_name(i))
        if kind is not None:
            kinds.setdefault(kind, []).append(i)
    rows = []
    for kind in KINDS:
        docs = kinds.get(kind)
        if not docs:
            rows.append({"kind": kind, "files": 0})
            continue
        quiet = lambda message: None  # noqa: E731
        blt_eval = evaluate_run(blt_run, data, seq_len, documents=docs, log=quiet)
        ent_eval = evaluate_run(entropy_run, data, seq_len, documents=docs, log=quiet)
        files = [bytes(val[i]) for i in docs]
        n = sum(len(f) for f in files)
        rows.append({"kind": kind, "files": len(docs), "bytes": n, "blt_bpb": blt_eval.bits_per_byte,
                     "entropy_model_bpb": ent_eval.bits_per_byte, "bytes_per_patch": blt_eval.mean_patch_size,
                     "global_steps_per_kb": 1024 / blt_eval.mean_patch_size,
                     "gzip_bpb": sum(gzip_bits_per_byte(f) * len(f) for f in files) / n,
                     "xz_bpb": sum(xz_bits_per_byte(f) * len(f) for f in files) / n})
    measured = [r for r in rows if r["files"]]
    total_bytes = sum(r["bytes"] for r in measured)
    total_patches = sum(r["bytes"] / r["bytes_per_patch"] for r in measured)
    for r in measured:
        r["bytes_share"] = r["bytes"] / total_bytes
        r["compute_share"] = r["bytes"] / r["bytes_per_patch"] / total_patches
    return rows


def traces(args, data: PreparedData, blt_run) -> tuple[list[dict], float]:
    """An excerpt of the first validation file of each traced kind, with stored (full-file) entropies."""
    val = data.split("val")
    stored = stored_entropies(blt_run, data, lambda m: None, "val")
    if stored is None:
        raise SystemExit(f"anybytes: no precomputed entropies beside {args.data}; run without --report first")
    panels = []
    for kind in TRACE_KINDS:
        docs = [i for i in range(len(val)) if kind_of(val.document_name(i)) == kind]
        if not docs:
            continue
        i = max(docs, key=lambda d: len(val[d]))  # the longest: room for an excerpt from its middle
        doc = bytes(val[i])
        entropies = torch.from_numpy(np.array(stored.split("val")[i][:-1], dtype=np.float32))  # [BOS] bytes
        starts = blt_run.patcher.start_mask(encode(doc)[None], entropies[None])[0]
        a = max(0, len(doc) // 2 - TRACE_BYTES // 2)
        b = min(len(doc), a + TRACE_BYTES)
        shown = starts[1:][a:b]
        name = val.document_name(i).decode("utf-8", "replace")
        starts_here = int(shown.sum())
        density = f"{(b - a) / starts_here:.1f} bytes per patch here" if starts_here else "no patch starts here"
        panels.append({"title": f"{kind}: bytes {a:,}-{b:,} of {name} ({len(doc):,} bytes); {density}",
                       "entropies": entropies[:-1][a:b].tolist(), "starts": shown.tolist(), "kind": kind, "file": name})
    return panels, float(blt_run.config.patching.threshold)


def _patches(run, data: bytes, cap: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropies, starts) of a file's bytes under the run's patching (optionally capped at ``cap`` bytes)."""
    ids = encode(data)
    entropies = run.entropy_model.entropies(ids)
    config = run.config.patching if cap is None else replace(run.config.patching, max_patch_length=cap)
    starts = Patcher(config, run.entropy_model).start_mask(ids[None], entropies[None])[0]
    return entropies[:-1], starts[1:]


def silence(wav: bytes, level: int = SILENCE_LEVEL) -> tuple[int, int]:
    """The byte range of a 16-bit mono WAV's longest run of samples within ±``level`` (sox dithers, so
    inserted silence is near zero rather than exactly zero)."""
    offset = wav.find(b"data") + 8
    samples = np.frombuffer(wav[offset : offset + (len(wav) - offset) // 2 * 2], "<i2")
    quiet = np.abs(samples.astype(np.int32)) <= level
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))).reshape(-1, 2)
    first, last = edges[np.argmax(edges[:, 1] - edges[:, 0])]
    return offset + 2 * int(first), offset + 2 * int(last)


def corner_cases(args, blt_run) -> dict:
    out = {}
    spaces = b" " * 10_000
    _, starts = _patches(blt_run, spaces)
    _, capped = _patches(blt_run, spaces, CAP)
    out["spaces"] = {"bytes": len(spaces), "patches": int(starts.sum()), "cap": CAP, "patches_capped": int(capped.sum())}

    wav = args.files / "speech" / "silence-inside.wav"
    if wav.is_file():
        data = wav.read_bytes()
        a, b = silence(data)
        _, starts = _patches(blt_run, data)
        inside = int(starts[a:b].sum())
        out["wav_silence"] = {"file": str(wav), "bytes": len(data), "silence_bytes": int(b - a),
                              "silence_patches": inside, "other_bytes": len(data) - int(b - a),
                              "other_patches": int(starts.sum()) - inside}
    gz = sorted((args.files / "gzip").glob("*.gz"))
    if gz:
        data = max(gz, key=lambda p: p.stat().st_size).read_bytes()
        entropies, starts = _patches(blt_run, data)
        parts = {"header (10 bytes)": (0, 10), "deflate body": (10, len(data) - 8), "trailer (8 bytes)": (len(data) - 8, len(data))}
        out["gzip_member"] = {"bytes": len(data), "parts": {
            name: {"bytes": b - a, "patches": int(starts[a:b].sum()),
                   "mean_entropy_bits": float(entropies[a:b].mean()) / math.log(2)} for name, (a, b) in parts.items()}}
    return out


def markdown(record: dict) -> str:
    s = record["settings"]
    lines = [f"A `tiny` BLT (entropy patching calibrated to {s['patch_size']:g} bytes per patch on the training data; "
             f"threshold {record['threshold']:.3f} nats) and its `tiny` entropy model, trained on `blt data mixed` "
             f"({s['entropy_steps']} and {s['steps']} steps). Per kind of file, over the validation split:", "",
             "| kind | files | bytes | BLT bits/byte | entropy model | gzip -9 | xz -9 | bytes/patch | global steps/KB "
             "| share of bytes | share of global steps | steps share / bytes share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["kinds"]:
        if not r["files"]:
            lines.append(f"| {r['kind']} | 0 | - | - | - | - | - | - | - | - | - | - |")
            continue
        lines.append(f"| {r['kind']} | {r['files']} | {r['bytes']:,} | {r['blt_bpb']:.3f} | {r['entropy_model_bpb']:.3f} | "
                     f"{r['gzip_bpb']:.3f} | {r['xz_bpb']:.3f} | {r['bytes_per_patch']:.2f} | "
                     f"{r['global_steps_per_kb']:.0f} | {100 * r['bytes_share']:.1f}% | {100 * r['compute_share']:.1f}% | "
                     f"{r['compute_share'] / r['bytes_share']:.2f} |")
    c = record["corner_cases"]
    sp = c["spaces"]
    lines += ["", "Corner cases, under the same patching:", "",
              f"- **10,000 spaces**: {sp['patches']:,} patch{'es' if sp['patches'] != 1 else ''}; with `max_patch_length` {sp['cap']}, "
              f"{sp['patches_capped']:,} ({sp['bytes'] / max(sp['patches_capped'], 1):.1f} bytes each)."]
    if "wav_silence" in c:
        w = c["wav_silence"]
        lines.append(f"- **A WAV with {w['silence_bytes']:,} bytes of silence inside** (`{Path(w['file']).name}`, samples "
                     f"within ±{SILENCE_LEVEL}): {w['silence_patches']:,} patches start in the silence, "
                     f"{w['other_patches']:,} in its other {w['other_bytes']:,} bytes "
                     f"({w['other_bytes'] / max(w['other_patches'], 1):.1f} bytes each).")
    if "gzip_member" in c:
        g = c["gzip_member"]
        parts = "; ".join(f"{name}: {p['patches']:,} patch starts, {p['bytes'] / max(p['patches'], 1):.2f} bytes each, "
                          f"mean entropy {p['mean_entropy_bits']:.2f} bits" for name, p in g["parts"].items())
        lines.append(f"- **A gzip member** ({g['bytes']:,} bytes): {parts}.")
    return "\n".join(lines)


def report(args) -> None:
    data = PreparedData.open(args.data)
    blt_run, entropy_run = load(args.runs / "blt"), load(args.runs / "entropy")
    kinds = per_kind(args, data, blt_run, entropy_run)
    panels, threshold = traces(args, data, blt_run)
    record = {"settings": {"data": str(args.data), "files": str(args.files), "steps": args.steps,
                           "entropy_steps": args.entropy_steps, "patch_size": args.patch_size, "preset": "tiny",
                           "precision": "bf16"},
              "threshold": threshold, "kinds": kinds, "corner_cases": corner_cases(args, blt_run),
              "traces": [{k: v for k, v in p.items() if k in ("kind", "file", "title")} for p in panels]}
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results / "anybytes.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(args.results / "anybytes.md", markdown(record) + "\n")
    plot_entropy_traces(panels, threshold, args.results / "traces.png")
    print(markdown(record))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=Path, default=Path("data_cache/mixed-files"))
    p.add_argument("--data", type=Path, default=Path("data_cache/mixed"))
    p.add_argument("--runs", type=Path, default=Path("runs/anybytes"))
    p.add_argument("--results", type=Path, default=Path("results/anybytes"))
    p.add_argument("--entropy-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=800)
    # 4.5 bytes per patch cannot be had on this corpus: the entropies of its incompressible bytes (random,
    # gzip, xz, PNG) pile up just under ln 256 nats, so the mean patch size jumps from 3.3 to 4.9 bytes as
    # the threshold crosses that pile (`blt train` says so). 3.3 puts the threshold just under it.
    p.add_argument("--patch-size", type=float, default=3.3)
    p.add_argument("--report", action="store_true", help="only rewrite the report from the finished runs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not args.report:
        build(args)
    report(args)
    return 0


if __name__ == "__main__":  # Ctrl-C: training saved a checkpoint first
    sys.exit(run_reporting_errors("anybytes", main, interrupted=STOPPED))
