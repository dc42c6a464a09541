"""`scripts/scaling.py` keeps each finished comparison with its results, so a checkout without the run
directories rebuilds the same report and does not run a kept comparison again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_report_is_rebuilt_from_the_kept_comparisons(tmp_path):
    scaling = load_script("scaling")
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "scaling" / "comparisons", results / "comparisons")
    assert scaling.main(["--report", "--results", str(results), "--runs", str(tmp_path / "no-runs")]) == 0
    committed = json.loads((ROOT / "results" / "scaling" / "scaling.json").read_text())
    rebuilt = json.loads((results / "scaling.json").read_text())
    assert rebuilt["members"] == committed["members"] and rebuilt["chosen_lrs"] == committed["chosen_lrs"]
    assert (results / "scaling.md").read_text() == (ROOT / "results" / "scaling" / "scaling.md").read_text()
    assert (results / "scaling.png").stat().st_size > 10_000


def test_a_finished_run_directory_is_kept_and_then_found_without_it(tmp_path):
    scaling = load_script("scaling")
    args = scaling.argparse.Namespace(results=tmp_path / "results", runs=tmp_path / "runs")
    out = scaling.run_dir(args.runs, 3e13, "bpe", 4e-3, 0)
    out.mkdir(parents=True)
    member = {"name": "bpe", "kind": "bpe", "val_bpb": 2.1}
    (out / "compare.json").write_text(json.dumps({"settings": {"budget": 3e13, "preset": "paper-xs", "precision": "bf16",
                                                              "data": "elsewhere"},
                                                 "bytes_per_step": 8192, "members": [member]}))
    assert scaling.finished(args, 3e13, "bpe", 4e-3, 0)["members"] == [member]
    shutil.rmtree(args.runs)
    kept = scaling.finished(args, 3e13, "bpe", 4e-3, 0)
    assert kept == {"settings": {"budget": 3e13, "preset": "paper-xs", "precision": "bf16"}, "bytes_per_step": 8192,
                    "members": [member]}
    assert scaling.kept_path(args.results, 3e13, "bpe", 4e-3, 0).name == "bpe-lr0.004-seed0.json"
    assert scaling.finished(args, 1e14, "bpe", 4e-3, 0) is None
    rows = scaling.collect(args)
    assert [(r["budget"], r["family"], r["lr"], r["seed"], r["val_bpb"]) for r in rows] == [(3e13, "bpe", 4e-3, 0, 2.1)]


def test_an_ablation_is_reported_against_the_sweeps_blt_member_and_kept_out_of_the_families(tmp_path):
    scaling = load_script("scaling")
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "scaling" / "comparisons", results / "comparisons")
    committed = json.loads((ROOT / "results" / "scaling" / "scaling.json").read_text())
    lr = committed["chosen_lrs"]["blt"]
    base = next(m for m in committed["members"] if m["family"] == "blt" and m["lr"] == lr and m["seed"] == 0
                and m["budget"] == 1e13 and m["target_patch_size"] == 8.0)
    member = {k: base[k] for k in ("name", "kind", "target_patch_size", "parameters", "train_flops_per_byte", "steps")}
    member["val_bpb"] = base["val_bpb"] + 0.1
    path = scaling.kept_path(results, 1e13, "ablation-no-hash", lr, 0)
    path.write_text(json.dumps({"settings": {"budget": 1e13, "preset": "paper-xs", "precision": "bf16"},
                                "bytes_per_step": 8192, "members": [member]}))
    assert scaling.main(["--report", "--results", str(results), "--runs", str(tmp_path / "no-runs")]) == 0
    rebuilt = json.loads((results / "scaling.json").read_text())
    assert rebuilt["members"] == committed["members"]  # the ablation is not one of the families' members
    assert "no-hash" in [r["variant"] for r in rebuilt["ablations"]][1:]
    table = (results / "scaling.md").read_text()
    assert f"| no-hash | {member['val_bpb']:.3f} | +0.100 |" in table and "hash n-gram embeddings help" in table


def test_the_gap_trend_crosses_zero_only_when_it_moves_toward_zero_beyond_the_budgets():
    scaling = load_script("scaling")
    rows = lambda gaps: [{"budget": b, "gap": g} for b, g in zip((1e13, 3e13, 1e14), gaps)]  # noqa: E731
    rising = scaling.trend(rows([-0.255, -0.253, -0.106]))  # BLT ahead, by less and less
    assert rising["slope_per_decade"] > 0 and 1e14 < rising["crossing_flops"] < 1e16
    falling = scaling.trend(rows([0.30, 0.20, 0.10]))  # BPE ahead, by less and less
    assert 1e14 < falling["crossing_flops"] < 1e15
    assert scaling.trend(rows([-0.1, -0.2, -0.3]))["crossing_flops"] is None  # moving away from zero
    assert scaling.trend(rows([0.3, 0.1, -0.1]))["crossing_flops"] is None  # already crossed inside the budgets
    assert scaling.trend(rows([0.1])[:1]) is None


def test_the_lr_check_reports_each_checked_member_by_factor_and_the_gap_at_the_best_rates(tmp_path):
    scaling = load_script("scaling")
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "scaling" / "comparisons", results / "comparisons")
    committed = json.loads((ROOT / "results" / "scaling" / "scaling.json").read_text())
    lrs = committed["chosen_lrs"]
    at_chosen = {m["name"]: m for m in committed["members"] if m["budget"] == 1e14 and m["seed"] == 0
                 and m["lr"] == lrs[m["family"]]}
    run_keys = ("budget", "family", "lr", "seed", "preset", "precision", "bytes_per_step")  # added by `collect`
    for family, better in (("blt", 0.02), ("bpe", 0.08)):  # half the rate: BPE gains more, so the gap narrows
        members = [{k: v for k, v in m.items() if k not in run_keys} | {"val_bpb": m["val_bpb"] - better}
                   for m in at_chosen.values() if m["family"] == family]
        scaling.kept_path(results, 1e14, family, lrs[family] * 0.5, 0).write_text(json.dumps(
            {"settings": {"budget": 1e14, "preset": "paper-xs", "precision": "bf16"}, "bytes_per_step": 8192,
             "members": members}))
    assert scaling.main(["--report", "--results", str(results), "--runs", str(tmp_path / "no-runs")]) == 0
    rebuilt = json.loads((results / "scaling.json").read_text())
    assert rebuilt["chosen_lrs"] == lrs and rebuilt["gaps"] == committed["gaps"]  # the check changes neither
    check = {(r["name"], r["factor"]): r["val_bpb"] for r in rebuilt["lr_check"]}
    assert set(check) == {(n, f) for n in ("blt-p6", "blt-p8", "bpe") for f in (0.5, 1.0)}
    assert check["bpe", 0.5] == pytest.approx(at_chosen["bpe"]["val_bpb"] - 0.08)
    table = (results / "scaling.md").read_text()
    gap = at_chosen["blt-p8"]["val_bpb"] - at_chosen["bpe"]["val_bpb"]
    assert "**Learning-rate check** at 1e+14" in table and f"| bpe | {check['bpe', 0.5]:.3f} (lr 0.002) |" in table
    assert f"{gap:+.3f} at the sweep's rates, {gap + 0.06:+.3f} with each family at its best" in table
