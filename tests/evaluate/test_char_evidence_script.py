"""`scripts/char_evidence.py` end to end on micro runs: the finetuning curve, the noise table, resuming and
the report rebuilt from the kept points."""

from __future__ import annotations

import json

from tests.helpers import load_script


def test_the_script_scores_a_curve_and_noise_and_resumes_without_rescoring(blt_run, token_run, tmp_path, capsys):
    script = load_script("char_evidence")
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--blt", str(blt_run), "--bpe", str(token_run), "--runs", str(runs), "--results", str(results),
            "--steps", "2", "--eval-every", "1", "--examples", "8", "--questions", "3", "--passages", "8", "--quiet"]
    assert script.main(argv) == 0
    points = results / "points"
    names = sorted(p.name for p in points.iterdir())
    assert names == [f"{m}-{p}.json" for m in ("blt", "bpe") for p in ("noise", "step00000", "step00001", "step00002")]
    record = json.loads((results / "char_tasks.json").read_text())
    for model in ("blt", "bpe"):
        curve = record["models"][model]["curve"]
        assert [p["step"] for p in curve] == [0, 1, 2]
        assert list(curve[-1]["tasks"]) == [*script.TASKS, "average"]
        assert all(p["tasks"]["spell"]["examples"] == 3 for p in curve)
    assert curve[0]["weights"] == str(token_run) and "step_00000002" in curve[-1]["weights"]
    rows = record["noise"]
    assert [r["noise"] for r in rows][0] == "clean" and rows[0]["passages"] == 8
    assert rows[0]["blt"]["added"] is None and len(rows[1]["blt"]["added"]) == 3 and len(rows[1]["difference"]) == 3
    text = (results / "char_tasks.md").read_text()
    assert "**Exact match**" in text and "| spell |" in text and "**Noisy input**" in text and "| antspeak |" in text
    assert (results / "curves.png").read_bytes()[:4] == b"\x89PNG"

    stamps = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
    assert script.main(argv) == 0  # finished: nothing is trained or scored again
    assert {p.name: p.stat().st_mtime_ns for p in points.iterdir()} == stamps
    before = text
    assert script.main([*argv, "--report"]) == 0
    assert (results / "char_tasks.md").read_text() == before
    capsys.readouterr()


def test_two_processes_can_share_the_models_and_the_report_covers_both(blt_run, token_run, tmp_path, capsys):
    script = load_script("char_evidence")
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["--blt", str(blt_run), "--bpe", str(token_run), "--runs", str(runs), "--results", str(results),
            "--steps", "1", "--eval-every", "1", "--examples", "8", "--questions", "2", "--phases", "curve", "--quiet",
            "--lr", "0.003"]
    assert script.main([*argv, "--models", "bpe"]) == 0
    points = results / "points"
    assert sorted(p.name for p in points.iterdir()) == ["bpe-step00000.json", "bpe-step00001.json"]
    alone = (results / "char_tasks.md").read_text()  # one side has no curve yet: the table is the other's
    assert alone.startswith(f"bpe (`{token_run}`) alone.\n") and "| task | bpe exact | bpe before | bpe rank |" in alone
    assert "(learning rate: peak 0.003)" in alone
    assert json.loads((results / "char_tasks.json").read_text())["settings"]["runs"] == {"bpe": str(token_run)}
    assert script.main([*argv, "--models", "blt"]) == 0
    assert sorted(p.name for p in points.iterdir()) == [f"{m}-step0000{s}.json" for m in ("blt", "bpe") for s in (0, 1)]
    record = json.loads((results / "char_tasks.json").read_text())
    steps = {m: [p["step"] for p in record["models"][m]["curve"]] for m in ("blt", "bpe")}
    assert steps["blt"] == steps["bpe"] == [0, 1]
    text = (results / "char_tasks.md").read_text()
    assert "**Exact match**" in text and "(learning rate: peak 0.003 for every model)" in text
    assert [p.get("lr") for p in record["models"]["blt"]["curve"]] == [None, 0.003]  # step 0 is not finetuned
    for model in ("blt", "bpe"):  # one finetuning peak for both, whatever each was pretrained with
        assert json.loads((runs / model / "config.json").read_text())["train"]["lr"] == 0.003
    capsys.readouterr()


def test_the_report_names_the_rates_the_points_were_finetuned_at():
    """Points copied in from a run at another rate are reported at their own rate, not at ``--lr``'s."""
    script = load_script("char_evidence")
    curves = {m: [{"step": 0, "weights": "w"}, {"step": 5, "weights": "w", "lr": lr}]
              for m, lr in (("blt", 0.016), ("bpe", 0.002))}
    assert script.finetuning_rates(curves) == {"blt": 0.016, "bpe": 0.002}
    assert script.rates_text(script.finetuning_rates(curves), 0.016, 2) == "blt peak 0.016, bpe peak 0.002"
    curves["bpe"][1]["lr"] = 0.016
    assert script.rates_text(script.finetuning_rates(curves), None, 2) == "peak 0.016 for every model"
    del curves["bpe"][1]["lr"]  # a point that does not record its rate: the settings' rule
    assert script.finetuning_rates(curves) is None
    assert script.rates_text(None, None, 2) == "half of each model's pretraining peak"
