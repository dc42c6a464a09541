"""BLT against the BPE and byte baselines beyond one language: one budget, a corpus in five languages, and
bits per byte, BPE's bytes per token and BLT's bytes per patch for each language.

    scripts/get_corpora.sh                      # fortunes in en, de, es, it, ru and two Bibles (Debian)
    python scripts/multilingual.py

1. **Corpus** (``--files``, default ``data_cache/multilingual-files``): per language, its texts from
   ``--corpora`` (default ``data_cache/corpora``): English = the English fortunes and the World English
   Bible, Spanish = the Spanish fortunes and the Reina-Valera Bible, German, Italian and Russian = their
   fortunes. Each text is cut into documents of at most 32 KB at line ends; the documents of a language are
   shuffled (seeded) and the first ``--bytes-per-language`` bytes kept, so every language has the same
   share of the corpus. Written as ``<files>/<lang>/<n>.txt`` and prepared into ``--data`` (10% of the
   documents for validation).
2. **Entropy model**: `blt train-entropy` (tiny, ``--entropy-steps`` steps) on that data.
3. **Comparison**: one `blt compare` per family at ``--budget`` training FLOPs (preset ``paper-xs``, bf16):
   BLT at 6 and 8 bytes per patch, BPE (its tokenizer learned on this corpus's train split, as `blt compare`
   does) and bytes. Each family at the learning rate the sweep on the default corpus chose for it
   (`scripts/scaling.py`: BLT 1.6e-2, BPE 4e-3, bytes 1e-3).
4. **Per language**: every member scored on the validation documents of each language
   (`blt.evaluate.evaluate_run(documents=)`).

Resumable: finished steps are skipped, and training continues from its newest checkpoint. Results in
``--results`` (default ``results/multilingual``): ``multilingual.json`` and ``multilingual.md``;
``--report`` only rewrites them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from blt.cli import STOPPED, run_reporting_errors
from blt.data import PreparedData
from blt.evaluate import evaluate_run
from blt.evaluate.bpb import recorded_train
from blt.fileio import atomic_write_text
from blt.pipelines.compare import CompareOptions, compare
from blt.run import load

LANGUAGES = {  # language -> its texts under the corpora directory (files or directories, recursive)
    "en": ["fortunes/*", "bibles/engWEB2015eb.txt"],
    "es": ["fortunes/es", "bibles/spaRV1909eb.txt"],
    "de": ["fortunes/de"],
    "it": ["fortunes/it"],
    "ru": ["fortunes/ru"],
}
FAMILIES = {"blt": ((6.0, 8.0), (), 1.6e-2), "bpe": ((), ("bpe",), 4e-3), "byte": ((), ("byte",), 1e-3)}
DOCUMENT_BYTES = 32 * 1024
FORTUNE_LANGUAGE_DIRS = {"de", "es", "it", "ru"}


def language_texts(corpora: Path, language: str) -> list[Path]:
    """The files of a language, sorted. ``fortunes/*`` means the English fortunes: the files directly in
    ``fortunes/``, not the other languages' directories."""
    files: list[Path] = []
    for pattern in LANGUAGES[language]:
        if pattern == "fortunes/*":
            files += [p for p in (corpora / "fortunes").iterdir() if p.is_file()]
        elif (corpora / pattern).is_dir():
            files += [p for p in (corpora / pattern).rglob("*") if p.is_file()]
        elif (corpora / pattern).is_file():
            files.append(corpora / pattern)
    return sorted(files)


def documents_of(data: bytes, limit: int = DOCUMENT_BYTES) -> list[bytes]:
    """``data`` cut into pieces of at most ``limit`` bytes, each ending at a line end when there is one."""
    out, start = [], 0
    while start < len(data):
        end = min(len(data), start + limit)
        if end < len(data):
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut > start else end
        out.append(data[start:end])
        start = end
    return out


def build_corpus(args) -> None:
    if (args.files / "done").is_file():
        return
    missing = [lang for lang in LANGUAGES if not language_texts(args.corpora, lang)]
    if missing:
        raise SystemExit(f"multilingual: no texts for {', '.join(missing)} under {args.corpora}; "
                         "run scripts/get_corpora.sh first")
    for i, language in enumerate(LANGUAGES):
        docs = [d for f in language_texts(args.corpora, language) for d in documents_of(f.read_bytes())]
        order = np.random.default_rng([args.seed, i]).permutation(len(docs))
        out, total, count = args.files / language, 0, 0
        out.mkdir(parents=True, exist_ok=True)
        for j in order:
            if total >= args.bytes_per_language:
                break
            (out / f"{count:05d}.txt").write_bytes(docs[j])
            total, count = total + len(docs[j]), count + 1
        print(f"multilingual: {language}: {count} documents, {total:,} bytes", flush=True)
    (args.files / "done").write_text("")


def blt_cli(*argv: str) -> None:
    print("multilingual: blt " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "blt", *argv], check=True)


def prepare_and_train_entropy(args) -> None:
    if not (args.data / "manifest.json").is_file():
        blt_cli("data", "prepare", str(args.files), "--out", str(args.data), "--val-fraction", "0.1", "--seed",
                str(args.seed), "--force")
    entropy = args.runs / "entropy"
    if not (entropy / "model.safetensors").is_file():
        resume = ["--resume"] if (entropy / "config.json").is_file() else []
        blt_cli("train-entropy", "--data", str(args.data), "--out", str(entropy), "--preset", "tiny",
                "--steps", str(args.entropy_steps), "--quiet", *resume)


def run_family(args, family: str) -> dict:
    out = args.runs / family
    if (out / "compare.json").is_file():
        return json.loads((out / "compare.json").read_text())
    patch_sizes, baselines, lr = FAMILIES[family]
    opts = CompareOptions(data=args.data, out=out, entropy_model=args.runs / "entropy", budget=args.budget,
                          preset=args.preset, patch_sizes=patch_sizes, baselines=baselines, precision="bf16",
                          evals=5, warmup_fraction=0.1, train_overrides=[f"lr={lr:g}", f"seed={args.seed}"],
                          progress=not args.quiet)
    print(f"multilingual: {family} at {args.budget:.0e} FLOPs -> {out}", flush=True)
    return compare(opts, log=lambda m: print(m, flush=True))


def language_documents(data: PreparedData) -> dict[str, list[int]]:
    """Language -> indices of its validation documents (named ``<files>/<lang>/<n>.txt``)."""
    val = data.split("val")
    out: dict[str, list[int]] = {lang: [] for lang in LANGUAGES}
    for i in range(len(val)):
        parts = os.fsdecode(val.document_name(i)).split("/")
        if len(parts) >= 3 and parts[1] in out:
            out[parts[1]].append(i)
    return out


def per_language(args, results: dict) -> list[dict]:
    data = PreparedData.open(args.data)
    docs = language_documents(data)
    val = data.split("val")
    rows = []
    for family, result in results.items():
        for member in result["members"]:
            path = args.results / "members" / f"{member['name']}.json"
            if path.is_file():
                rows.append(json.loads(path.read_text()))
                continue
            run = load(args.runs / family / member["name"])
            seq_len = recorded_train(run.info, run.path).get("seq_len") or 512
            row = {"member": member["name"], "kind": member["kind"], "val_bpb": member["val_bpb"],
                   "train_flops": member["train_flops"], "inference_flops_per_byte": member["inference_flops_per_byte"],
                   "languages": {}}
            for language, indices in docs.items():
                if not indices:
                    continue
                r = evaluate_run(run, data, seq_len, documents=indices, log=lambda m: None)
                row["languages"][language] = {
                    "documents": len(indices), "bytes": sum(len(val[i]) for i in indices), "bpb": r.bits_per_byte,
                    "bytes_per_patch": r.mean_patch_size, "bytes_per_token": r.bytes_per_token}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(row, indent=1) + "\n")
            print(f"multilingual: {member['name']} scored per language", flush=True)
            rows.append(row)
    return rows


def markdown(record: dict) -> str:
    s, rows = record["settings"], record["members"]
    languages = [lang for lang in LANGUAGES if lang in rows[0]["languages"]]
    first = rows[0]["languages"]
    lines = [f"Five languages, {s['bytes_per_language']:,} bytes each; {s['budget']:.0e} training FLOPs per "
             f"member, preset `{s['preset']}`, bf16; validation documents per language: "
             + ", ".join(f"{lang} {first[lang]['documents']} ({first[lang]['bytes']:,} bytes)" for lang in languages)
             + ".", "",
             "**Validation bits per byte** (lower is better):", "",
             "| member | all | " + " | ".join(languages) + " | inference FLOPs/byte |",
             "|---|---|" + "---|" * len(languages) + "---|"]
    for r in rows:
        lines.append(f"| {r['member']} | {r['val_bpb']:.3f} | "
                     + " | ".join(f"{r['languages'][lang]['bpb']:.3f}" for lang in languages)
                     + f" | {r['inference_flops_per_byte'] / 1e6:.2f}M |")
    blts = [r for r in rows if r["kind"] == "blt"]
    bpe = next((r for r in rows if r["member"] == "bpe"), None)
    if blts and bpe:
        best = {lang: min(blts, key=lambda r: r["languages"][lang]["bpb"]) for lang in languages}
        lines.append("| best BLT − BPE | | " + " | ".join(
            f"{best[lang]['languages'][lang]['bpb'] - bpe['languages'][lang]['bpb']:+.3f}" for lang in languages)
            + " | |")
    lines += ["", "**Bytes per global step**: BPE's bytes per token and BLT's bytes per patch, per language:", "",
              "| member | " + " | ".join(languages) + " |", "|---|" + "---|" * len(languages)]
    for r in rows:
        key = "bytes_per_patch" if r["kind"] == "blt" else "bytes_per_token"
        if r["member"] == "byte":
            continue
        lines.append(f"| {r['member']} | " + " | ".join(f"{r['languages'][lang][key]:.2f}" for lang in languages) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", type=Path, default=Path("data_cache/corpora"))
    p.add_argument("--files", type=Path, default=Path("data_cache/multilingual-files"))
    p.add_argument("--data", type=Path, default=Path("data_cache/multilingual"))
    p.add_argument("--runs", type=Path, default=Path("runs/multilingual"))
    p.add_argument("--results", type=Path, default=Path("results/multilingual"))
    p.add_argument("--bytes-per-language", type=int, default=1_500_000)
    p.add_argument("--budget", type=float, default=1e13)
    p.add_argument("--preset", default="paper-xs")
    p.add_argument("--entropy-steps", type=int, default=1000)
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only rewrite the results from the scored members")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.report:
        rows = [json.loads(f.read_text()) for f in sorted((args.results / "members").glob("*.json"))]
        rows.sort(key=lambda r: (["blt", "bpe", "byte"].index(r["kind"]), r["member"]))
    else:
        build_corpus(args)
        prepare_and_train_entropy(args)
        results = {family: run_family(args, family) for family in args.families}
        rows = per_language(args, results)
    settings = {"budget": args.budget, "preset": args.preset, "bytes_per_language": args.bytes_per_language,
                "entropy_steps": args.entropy_steps, "seed": args.seed,
                "learning_rates": {f: lr for f, (_, _, lr) in FAMILIES.items()}}
    record = {"settings": settings, "members": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results / "multilingual.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.results / "multilingual.md", markdown(record))
    print((args.results / "multilingual.md").read_text())
    return 0


if __name__ == "__main__":  # Ctrl-C: training saved a checkpoint first
    sys.exit(run_reporting_errors("multilingual", main, interrupted=STOPPED))
