"""BLT against the BPE and byte baselines at several training-FLOP budgets (`blt compare` per family).

    python scripts/scaling.py --data data_cache/default --entropy-model runs/scaling/entropy

Four phases, each a set of `blt compare` runs under ``--runs`` (default ``runs/scaling``):

1. ``sweep``: at the smallest budget, every family (BLT at patch sizes 6 and 8, BPE, bytes) at every
   learning rate of ``--lrs``. A family's learning rate is the one with the lowest mean validation bits per
   byte over its members; the BLT members share one.
2. ``seeds``: at the smallest budget, each family at its learning rate with ``train.seed`` 1, so the table
   can say which differences are larger than seed noise (seed 0 is the sweep's run). The seed sets the
   initialisation, the row order and the BPE tokenizer's sample.
3. ``ablations``: at the smallest budget, BLT at 8 bytes per patch (seed 0, BLT's learning rate) with one
   thing the paper ablated changed (`ABLATIONS`): no hash n-gram embeddings, and the three local layers
   split 2 encoder / 1 decoder instead of 1 / 2. Their baseline is the sweep's BLT-p8 run.
4. ``budgets``: the larger budgets, each family at its learning rate, seed 0.
5. ``lrcheck``: at the largest budget, BLT (at 8 bytes per patch, ``--check-patch-sizes``) and BPE
   (``--check-families``) again at their learning rate times each of ``--check-factors`` (default 0.5): a rate chosen on short runs may be too high for runs 10x
   longer, and the check says whether the largest budget's gap depends on it. Both families get the same
   factors; the report gives the gap with each family at its best rate there.

Every member warms up for the same share of its own steps (``--warmup-fraction``). All of it resumes:
run the same command again and finished runs are skipped, unfinished ones continue from their newest
checkpoint. After each comparison the results are rewritten (``--results``, default ``results/scaling``):
``scaling.json`` (every member of every run), ``scaling.md`` (tables and the reading's numbers) and
``scaling.png`` (validation bits per byte against training FLOPs, and the gap between the best BLT and BPE).
``--report`` only rewrites them from what has finished.

Each finished comparison is also kept under ``<results>/comparisons/`` (``budget-1e+13/blt-lr0.016-seed0.json``: its
settings, bytes per step and members). Those small files are committed, so a fresh checkout without ``--runs``
still knows what has finished: a comparison found there is not run again, and the report is built from them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from blt.cli import STOPPED, run_reporting_errors
from blt.fileio import atomic_path, atomic_write_text
from blt.pipelines.compare import CompareOptions, compare

FAMILIES = {"blt": {"patch_sizes": (6.0, 8.0), "baselines": ()},
            "bpe": {"patch_sizes": (), "baselines": ("bpe",)},
            "byte": {"patch_sizes": (), "baselines": ("byte",)}}
SEEDS = (0, 1)
ABLATION_PATCH_SIZE = 8.0
ABLATIONS = {  # name -> `--set blt.KEY=V` overrides of the BLT members, and what the paper found
    "no-hash": (["hash.num_functions=0"], "hash n-gram embeddings help"),
    "encoder-2-decoder-1": (["encoder.n_layers=2", "decoder.n_layers=1"], "a light encoder and a deeper decoder win"),
}


def run_dir(runs: Path, budget: float, family: str, lr: float, seed: int) -> Path:
    return runs / f"budget-{budget:.0e}" / f"{family}-lr{lr:g}-seed{seed}"


def options(args, budget: float, family: str, lr: float, seed: int,
            patch_sizes: tuple[float, ...] | None = None) -> CompareOptions:
    if family.startswith("ablation-"):
        shape = {"patch_sizes": (ABLATION_PATCH_SIZE,), "baselines": (),
                 "blt_overrides": list(ABLATIONS[family.removeprefix("ablation-")][0])}
    else:
        shape = dict(FAMILIES[family])
        if patch_sizes is not None and family == "blt":
            shape["patch_sizes"] = patch_sizes
    return CompareOptions(
        data=args.data, out=run_dir(args.runs, budget, family, lr, seed), entropy_model=args.entropy_model,
        budget=budget, preset=args.preset, precision=args.precision, evals=args.evals,
        warmup_fraction=args.warmup_fraction, train_overrides=[f"lr={lr:g}", f"seed={seed}"],
        progress=not args.quiet, **shape)


def kept_path(results: Path, budget: float, family: str, lr: float, seed: int) -> Path:
    """Where a finished comparison is kept with the results: the part of ``compare.json`` the report reads."""
    return results / "comparisons" / f"budget-{budget:.0e}" / f"{family}-lr{lr:g}-seed{seed}.json"


def keep(results: Path, budget: float, family: str, lr: float, seed: int, result: dict) -> dict:
    kept = {"settings": {k: result["settings"][k] for k in ("budget", "preset", "precision")},
            "bytes_per_step": result["bytes_per_step"], "members": result["members"]}
    path = kept_path(results, budget, family, lr, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(kept, indent=1) + "\n")
    return kept


def finished(args, budget: float, family: str, lr: float, seed: int) -> dict | None:
    """A finished comparison: from the results it was kept in, else from its run directory (and then kept)."""
    path = kept_path(args.results, budget, family, lr, seed)
    if path.is_file():
        return json.loads(path.read_text())
    path = run_dir(args.runs, budget, family, lr, seed) / "compare.json"
    if path.is_file():
        return keep(args.results, budget, family, lr, seed, json.loads(path.read_text()))
    return None


def run_compare(args, budget: float, family: str, lr: float, seed: int,
                patch_sizes: tuple[float, ...] | None = None) -> dict:
    out = run_dir(args.runs, budget, family, lr, seed)
    done = finished(args, budget, family, lr, seed)
    if done is not None:
        return done
    print(f"scaling: {family} at lr {lr:g}, seed {seed}, budget {budget:.0e} -> {out}", flush=True)
    start = time.perf_counter()
    result = compare(options(args, budget, family, lr, seed, patch_sizes), log=lambda m: print(m, flush=True))
    print(f"scaling: {out} done in {time.perf_counter() - start:,.0f} s", flush=True)
    return keep(args.results, budget, family, lr, seed, result)


def family_score(result: dict) -> float:
    return statistics.fmean(m["val_bpb"] for m in result["members"])


def sweep_lrs(args, family: str) -> list[float]:
    """The learning rates a family is swept over: ``--lrs``, and its ``--extend`` ones."""
    return sorted(set(args.lrs) | {lr for f, lr in args.extend if f == family})


def chosen_lrs(args) -> dict[str, float] | None:
    """Each family's learning rate from the sweep, or None while the sweep is unfinished."""
    smallest = min(args.budgets)
    chosen = {}
    for family in FAMILIES:
        scores = {}
        for lr in sweep_lrs(args, family):
            done = finished(args, smallest, family, lr, 0)
            if done is None:
                return None
            scores[lr] = family_score(done)
        chosen[family] = min(scores, key=scores.get)
    return chosen


def collect(args) -> list[dict]:
    """Every member of every finished comparison (kept or under ``--runs``), with its family, lr, seed, budget."""
    names = {(d.parent.name, d.name) for d in args.runs.glob("budget-*/*") if (d / "compare.json").is_file()}
    names |= {(f.parent.name, f.stem) for f in (args.results / "comparisons").glob("budget-*/*.json")}
    rows = []
    for budget_name, name in sorted(names):
        budget = float(budget_name.removeprefix("budget-"))
        family, lr, seed = name.split("-lr")[0], float(name.split("-lr")[1].split("-seed")[0]), int(name.split("-seed")[1])
        if family not in FAMILIES:  # an ablation: see `ablation_rows`
            continue
        done = finished(args, budget, family, lr, seed)
        if done is not None:
            for m in done["members"]:
                rows.append({"budget": done["settings"]["budget"], "family": family, "lr": lr, "seed": seed,
                             "preset": done["settings"]["preset"], "precision": done["settings"]["precision"],
                             "bytes_per_step": done["bytes_per_step"], **m})
    return rows


def ablation_rows(args, lrs: dict[str, float] | None) -> list[dict]:
    """The finished ablations, each with its baseline (the sweep's BLT member at the same patch size)."""
    if not lrs:
        return []
    smallest = min(args.budgets)
    base = finished(args, smallest, "blt", lrs["blt"], 0)
    if base is None:
        return []
    reference = next(m for m in base["members"] if m["target_patch_size"] == ABLATION_PATCH_SIZE)
    rows = [{"variant": "baseline (1 encoder / 2 decoder layers, hash n-grams)", "found": "", **reference}]
    for name, (overrides, found) in ABLATIONS.items():
        done = finished(args, smallest, f"ablation-{name}", lrs["blt"], 0)
        if done is not None:
            rows.append({"variant": name, "overrides": overrides, "found": found, **done["members"][0]})
    return rows if len(rows) > 1 else []


def lr_check_rows(args, lrs: dict[str, float] | None, rows: list[dict]) -> list[dict]:
    """At the largest budget, seed 0, every member of the checked families at every rate finished there (its
    chosen one and the checked ones), each with ``factor`` = its rate over the chosen one."""
    if not lrs:
        return []
    largest = max(args.budgets)
    out = [dict(r, factor=r["lr"] / lrs[r["family"]]) for r in rows
           if r["budget"] == largest and r["seed"] == 0 and r["family"] in args.check_families]
    return out if any(r["factor"] != 1 for r in out) else []


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x -> (a, b)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main_rows(rows: list[dict], lrs: dict[str, float]) -> list[dict]:
    """The members at their family's learning rate, seed 0."""
    return [r for r in rows if r["seed"] == 0 and r["lr"] == lrs.get(r["family"])]


def gaps(rows: list[dict]) -> list[dict]:
    """Per budget: best BLT member minus BPE (negative: BLT is better)."""
    out = []
    for budget in sorted({r["budget"] for r in rows}):
        blt = [r for r in rows if r["budget"] == budget and r["kind"] == "blt"]
        bpe = [r for r in rows if r["budget"] == budget and r["kind"] == "bpe"]
        if blt and bpe:
            best = min(blt, key=lambda r: r["val_bpb"])
            out.append({"budget": budget, "best_blt": best["name"], "best_blt_bpb": best["val_bpb"],
                        "bpe_bpb": bpe[0]["val_bpb"], "gap": best["val_bpb"] - bpe[0]["val_bpb"]})
    return out


def trend(gap_rows: list[dict]) -> dict | None:
    """The gap fitted as a line in log10(FLOPs), and where that line reaches zero when it moves toward zero
    (a positive gap falling, or a negative one rising) and gets there beyond the largest budget measured."""
    if len(gap_rows) < 2:
        return None
    xs = [math.log10(g["budget"]) for g in gap_rows]
    a, b = fit_line(xs, [g["gap"] for g in gap_rows])
    zero = -a / b if b else None
    last = gap_rows[xs.index(max(xs))]["gap"]
    toward_zero = b != 0 and (b < 0) == (last > 0)
    crossing = 10 ** zero if toward_zero and zero is not None and zero > max(xs) else None
    return {"intercept": a, "slope_per_decade": b, "crossing_flops": crossing}



def report(args, lrs: dict[str, float] | None) -> None:
    rows = collect(args)
    args.results.mkdir(parents=True, exist_ok=True)
    lrs = lrs or {}
    main = main_rows(rows, lrs)
    gap_rows = gaps(main)
    record = {"settings": {"preset": args.preset, "precision": args.precision, "budgets": args.budgets,
                           "lrs": args.lrs, "extend": [list(e) for e in args.extend], "warmup_fraction": args.warmup_fraction, "data": str(args.data),
                           "entropy_model": str(args.entropy_model)},
              "chosen_lrs": lrs, "gaps": gap_rows, "gap_trend": trend(gap_rows),
              "members": [{k: v for k, v in r.items()} for r in rows],
              "ablations": ablation_rows(args, lrs), "lr_check": lr_check_rows(args, lrs, rows)}
    atomic_write_text(args.results / "scaling.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(args.results / "scaling.md", markdown(record) + "\n")
    if main:
        plot(record, main, args.results / "scaling.png")


def _unit(kind: str) -> str:
    return {"blt": "patch", "bpe": "token", "byte": "byte"}[kind]


def markdown(record: dict) -> str:
    s, rows, lrs = record["settings"], record["members"], record["chosen_lrs"]
    smallest = min(s["budgets"])
    lines = [f"Preset `{s['preset']}`, precision {s['precision'] or 'fp32'}, warmup {s['warmup_fraction']:g} of each "
             f"member's steps; validation bits per byte over the whole validation split.", ""]
    sweep = [r for r in rows if r["budget"] == smallest and r["seed"] == 0]
    if sweep:
        swept = sorted({r["lr"] for r in sweep})
        lines += [f"**Learning-rate sweep** at {smallest:.0e} training FLOPs, seed 0 (chosen, in bold: lowest mean "
                  "over a family's members)", "", "| member | " + " | ".join(f"lr {lr:g}" for lr in swept) + " |",
                  "|---|" + "---|" * len(swept)]

        def swept_cell(r: dict) -> str:
            mark = "**" if lrs.get(r["family"]) == r["lr"] else ""
            return f"{mark}{r['val_bpb']:.3f}{mark}"

        lines += member_grid(sweep, swept, "lr", swept_cell)
        lines.append("")
    seeded = [r for r in rows if r["budget"] == smallest and lrs.get(r["family"]) == r["lr"]]
    names = sorted({r["name"] for r in seeded if r["seed"] != 0}, key=_order)
    if names:
        lines += [f"**Seeds** at {smallest:.0e} FLOPs, each family at its learning rate", "",
                  "| member | " + " | ".join(f"seed {k}" for k in SEEDS) + " | mean | spread |", "|---|" + "---|" * (len(SEEDS) + 2)]
        for name in names:
            vals = [next((r["val_bpb"] for r in seeded if r["name"] == name and r["seed"] == k), None) for k in SEEDS]
            got = [v for v in vals if v is not None]
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" if v is not None else "-" for v in vals)
                         + f" | {statistics.fmean(got):.3f} | {max(got) - min(got):.3f} |")
        lines.append("")
    main = [r for r in rows if r["seed"] == 0 and lrs.get(r["family"]) == r["lr"]]
    if main:
        lines += ["**Budgets**, each family at its learning rate, seed 0", "",
                  "| budget | member | lr | val BPB | train FLOPs/byte | inference FLOPs/byte | bytes per step of the model | steps |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(main, key=lambda r: (r["budget"], _order(r["name"]))):
            lines.append(f"| {r['budget']:.0e} | {r['name']} | {r['lr']:g} | {r['val_bpb']:.3f} | "
                         f"{r['train_flops_per_byte'] / 1e6:.2f}M | {r['inference_flops_per_byte'] / 1e6:.2f}M | "
                         f"{r['bytes_per_step_of_model']:.2f} per {_unit(r['kind'])} | {r['steps']:,} |")
        lines.append("")
    if record["gaps"]:
        lines += ["**Gap**: best BLT minus BPE (negative: BLT better)", "", "| budget | best BLT | BLT BPB | BPE BPB | gap |",
                  "|---|---|---|---|---|"]
        for g in record["gaps"]:
            lines.append(f"| {g['budget']:.0e} | {g['best_blt']} | {g['best_blt_bpb']:.3f} | {g['bpe_bpb']:.3f} | {g['gap']:+.3f} |")
        t = record["gap_trend"]
        if t:
            cross = (f"would reach zero at {t['crossing_flops']:.1e} FLOPs" if t["crossing_flops"]
                     else "does not move toward zero beyond the budgets measured")
            lines += ["", f"Gap fitted as a line in log10(FLOPs): {t['slope_per_decade']:+.3f} bits/byte per decade; "
                          f"the line {cross} (a line through {len(record['gaps'])} budgets: a reading of the trend, "
                          "not a forecast)."]
    ablations = record.get("ablations") or []
    if ablations:
        base = ablations[0]
        lines += ["", f"**Ablations** at {smallest:.0e} FLOPs: BLT at {ABLATION_PATCH_SIZE:g} bytes per patch, "
                      f"lr {lrs['blt']:g}, seed 0, one change each", "",
                  "| variant | val BPB | vs baseline | params (non-emb / hash) | train FLOPs/byte | steps | paper |",
                  "|---|---|---|---|---|---|---|"]
        for r in ablations:
            delta = "" if r is base else f"{r['val_bpb'] - base['val_bpb']:+.3f}"
            lines.append(f"| {r['variant']} | {r['val_bpb']:.3f} | {delta} | {r['parameters']['non_embedding'] / 1e6:.2f}M / "
                         f"{r['parameters']['hash_embedding'] / 1e6:.2f}M | {r['train_flops_per_byte'] / 1e6:.2f}M | "
                         f"{r['steps']:,} | {r['found']} |")
    lines += lr_check_markdown(record.get("lr_check") or [])
    return "\n".join(lines)


def member_grid(rows: list[dict], columns: list, key: str, cell) -> list[str]:
    """Table rows: one per member name, one cell per value of ``key`` in ``columns`` (``cell(row)``, or - for
    none)."""
    lines = []
    for name in sorted({r["name"] for r in rows}, key=_order):
        hits = [next((r for r in rows if r["name"] == name and r[key] == c), None) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cell(h) if h is not None else "-" for h in hits) + " |")
    return lines


def lr_check_markdown(check: list[dict]) -> list[str]:
    """The ``lrcheck`` table: each checked member's validation bits per byte at each rate factor, and the gap
    (best BLT minus BPE) at the chosen rates against that with each family at its best rate of the check."""
    if not check:
        return []
    budget, factors = check[0]["budget"], sorted({r["factor"] for r in check})
    lines = ["", f"**Learning-rate check** at {budget:.0e} FLOPs, seed 0: each family's rate from the sweep (x1) and "
                 "times the factors below", "", "| member | " + " | ".join(f"lr x{f:g}" for f in factors) + " |",
             "|---|" + "---|" * len(factors)]
    lines += member_grid(check, factors, "factor", lambda r: f"{r['val_bpb']:.3f} (lr {r['lr']:g})")

    def gap(rows: list[dict]) -> float | None:
        blt = [r["val_bpb"] for r in rows if r["kind"] == "blt"]
        bpe = [r["val_bpb"] for r in rows if r["kind"] == "bpe"]
        return min(blt) - min(bpe) if blt and bpe else None

    at_chosen, at_best = gap([r for r in check if r["factor"] == 1]), gap(check)
    if at_chosen is not None and at_best is not None:
        lines += ["", f"Gap, best BLT minus BPE: {at_chosen:+.3f} at the sweep's rates, {at_best:+.3f} with each "
                      "family at its best rate of this check."]
    return lines


def _order(name: str) -> tuple:
    return ({"bpe": 1, "byte": 2}.get(name, 0), name)


def plot(record: dict, main: list[dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, gx) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for name in sorted({r["name"] for r in main}, key=_order):
        pts = sorted((r for r in main if r["name"] == name), key=lambda r: r["budget"])
        line, = ax.plot([r["train_flops"] for r in pts], [r["val_bpb"] for r in pts], "o-", label=name)
        for r in pts:  # each run's validation curve, thin, in the member's colour
            ax.plot([c["flops"] for c in r["curve"]], [c["val_bpb"] for c in r["curve"]], "-", lw=0.6, alpha=0.4,
                    color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"preset {record['settings']['preset']}: end of each budget's run (dots), curves (thin)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if record["gaps"]:
        g = record["gaps"]
        gx.plot([x["budget"] for x in g], [x["gap"] for x in g], "o-", color="k")
        gx.axhline(0, color="grey", lw=0.8)
        gx.set_xscale("log")
        gx.set_xlabel("training FLOPs per model")
        gx.set_ylabel("best BLT minus BPE (bits/byte)")
        gx.set_title("gap (below 0: BLT better)")
        gx.grid(alpha=0.3, which="both")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _family_lr(text: str) -> tuple[str, float]:
    family, _, lr = text.partition(":")
    if family not in FAMILIES:
        raise argparse.ArgumentTypeError(f"{text}: the family must be one of {', '.join(FAMILIES)}")
    try:
        return family, float(lr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected FAMILY:LR, e.g. blt:0.016") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data_cache/default"))
    p.add_argument("--entropy-model", type=Path, default=Path("runs/scaling/entropy"))
    p.add_argument("--runs", type=Path, default=Path("runs/scaling"))
    p.add_argument("--results", type=Path, default=Path("results/scaling"))
    p.add_argument("--preset", default="paper-xs")
    p.add_argument("--budgets", type=float, nargs="+", default=[1e13, 3e13, 1e14])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3, 8e-3])
    p.add_argument("--extend", type=_family_lr, nargs="*", default=[("blt", 1.6e-2), ("blt", 3.2e-2), ("byte", 5e-4)],
                   metavar="FAMILY:LR", help="extra rates for one family, where its best sat at an edge of --lrs")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--evals", type=int, default=5)
    p.add_argument("--phases", nargs="+", choices=["sweep", "seeds", "budgets", "ablations", "lrcheck"],
                   default=["sweep", "seeds", "budgets", "ablations", "lrcheck"])
    p.add_argument("--check-factors", type=float, nargs="+", default=[0.5],
                   help="with the lrcheck phase: the rates tried at the largest budget, as factors of each family's")
    p.add_argument("--check-patch-sizes", type=float, nargs="+", default=[ABLATION_PATCH_SIZE],
                   help="with the lrcheck phase: the BLT members checked (default: 8 bytes per patch, the best BLT "
                        "at every budget)")
    p.add_argument("--check-families", nargs="+", choices=list(FAMILIES), default=["blt", "bpe"],
                   help="with the lrcheck phase: the families checked")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                   help="with the budgets phase: only these families' runs (default: all)")
    p.add_argument("--report", action="store_true", help="only rewrite the results from the finished runs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    smallest = min(args.budgets)
    if not args.report:
        if "sweep" in args.phases:
            for lr in args.lrs:
                for family in FAMILIES:
                    run_compare(args, smallest, family, lr, 0)
                    report(args, chosen_lrs(args))
            for family, lr in args.extend:  # a family whose best rate sat at an edge of the sweep
                run_compare(args, smallest, family, lr, 0)
                report(args, chosen_lrs(args))
        lrs = chosen_lrs(args)
        if lrs is None:
            print("scaling: the sweep is unfinished; run the sweep phase first", file=sys.stderr)
            return 2
        print(f"scaling: learning rates {lrs}", flush=True)
        work = []
        if "seeds" in args.phases:
            work += [(smallest, family, seed) for seed in SEEDS[1:] for family in FAMILIES]
        if "ablations" in args.phases:
            work += [(smallest, f"ablation-{name}", 0) for name in ABLATIONS]
        if "budgets" in args.phases:
            work += [(budget, family, 0) for budget in sorted(args.budgets) if budget != smallest for family in FAMILIES
                     if family in args.families]
        for budget, family, seed in work:
            run_compare(args, budget, family, lrs["blt" if family.startswith("ablation-") else family], seed)
            report(args, lrs)
        if "lrcheck" in args.phases:
            for factor in args.check_factors:
                for family in args.check_families:
                    run_compare(args, max(args.budgets), family, lrs[family] * factor, 0, tuple(args.check_patch_sizes))
                    report(args, lrs)
    report(args, chosen_lrs(args))
    return 0


if __name__ == "__main__":  # Ctrl-C: training saved a checkpoint first
    sys.exit(run_reporting_errors("scaling", main, interrupted=STOPPED))
