"""`scripts/char_lr_sweep.py` on scored points written here: the tables, each model's best rate (runs still
finetuning are not picked), the difference interval and the plot."""

from __future__ import annotations

import json

import pytest

from blt.evaluate.char_tasks import TaskScore
from tests.helpers import load_script


def write_points(results, model: str, rates: dict[int, float], examples: int = 200) -> None:
    """Points at the given steps whose every task (and the average) answers that fraction exactly."""
    (results / "points").mkdir(parents=True, exist_ok=True)
    for step, rate in rates.items():
        score = TaskScore("spell", examples, rate, rate).to_dict()
        point = {"step": step, "weights": f"w{step}", "tasks": {"spell": score, "average": score}}
        (results / "points" / f"{model}-step{step:05d}.json").write_text(json.dumps(point))


def test_the_sweep_picks_each_models_best_rate_at_the_last_step(tmp_path, capsys):
    script = load_script("char_lr_sweep")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_points(a, "blt", {0: 0.0, 10: 0.2, 20: 0.3})
    write_points(a, "bpe", {0: 0.0, 10: 0.4, 20: 0.5})
    write_points(b, "blt", {0: 0.0, 10: 0.5, 20: 0.45})  # the better rate at the last step
    write_points(c, "bpe", {0: 0.0, 10: 0.9})  # still finetuning: not picked, although higher
    out = tmp_path / "out"
    argv = ["--out", str(out), "--curve", f"blt:0.01={a}", "--curve", f"blt:0.02={b}",
            "--curve", f"bpe:0.01={a}", "--curve", f"bpe:0.04={c}"]
    assert script.main(argv) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["best"] == {"blt": {"lr": 0.02, "step": 20}, "bpe": {"lr": 0.01, "step": 20}}
    text = (out / "sweep.md").read_text()
    assert "| blt | **0.02** | 0.0 [0.0, 1.9] | 50.0 [43.1, 56.9] | 45.0 [38.3, 51.9] |" in text
    assert "| bpe | 0.04 | 0.0 [0.0, 1.9] | 90.0 [85.1, 93.4] | - |" in text
    d, low, high = script.difference_interval(*(TaskScore("t", 200, p, p).to_dict() for p in (0.45, 0.5)))
    assert d == pytest.approx(-0.05) and low < d < high and high - low < 0.2
    difference = f"{100 * d:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
    assert f"| average | 45.0 [38.3, 51.9] | 50.0 [43.1, 56.9] | {difference} |" in text
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()


def test_pretraining_runs_are_swept_apart_and_their_spread_is_reported(tmp_path, capsys):
    script = load_script("char_lr_sweep")
    dirs = {name: tmp_path / name for name in ("b1", "b2a", "b2b", "p1", "p2")}
    write_points(dirs["b1"], "blt", {0: 0.0, 20: 0.6})  # run 1's only rate, the best BLT of all
    write_points(dirs["b2a"], "blt", {0: 0.0, 20: 0.3})
    write_points(dirs["b2b"], "blt", {0: 0.0, 20: 0.4})
    write_points(dirs["p1"], "bpe", {0: 0.0, 20: 0.5})
    write_points(dirs["p2"], "bpe", {0: 0.0, 20: 0.35})
    out = tmp_path / "out"
    argv = ["--out", str(out), "--curve", f"blt@1:0.01={dirs['b1']}", "--curve", f"blt@2:0.01={dirs['b2a']}",
            "--curve", f"blt@2:0.02={dirs['b2b']}", "--curve", f"bpe@1:0.01={dirs['p1']}",
            "--curve", f"bpe@2:0.01={dirs['p2']}"]
    assert script.main(argv) == 0  # four picked, none of them the default pair: no head-to-head table
    assert json.loads((out / "sweep.json").read_text())["versus"] is None
    assert "Each at its best rate" not in (out / "sweep.md").read_text()
    assert script.main([*argv, "--versus", "blt@2", "bpe@2"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["best"] == {"blt@1": {"lr": 0.01, "step": 20}, "blt@2": {"lr": 0.02, "step": 20},
                              "bpe@1": {"lr": 0.01, "step": 20}, "bpe@2": {"lr": 0.01, "step": 20}}
    assert record["versus"] == ["blt@2", "bpe@2"]
    text = (out / "sweep.md").read_text()
    assert "| blt@2 | **0.02** |" in text and "| blt@2 | 0.01 |" in text
    assert "| average | 40.0 [33.5, 46.9] | 35.0 [28.7, 41.8] |" in text
    assert [(r["model"], r["lr"], r["highest"], r["lowest"]) for r in record["repeats"]] == [
        ("blt", 0.01, "1", "2"), ("bpe", 0.01, "1", "2")]
    assert "| blt | 0.01 | @1: 60.0 [53.1, 66.5]; @2: 30.0 [24.1, 36.7] | +30.0 [" in text
    assert script.main([*argv, "--versus", "blt@1", "bpe@1"]) == 0
    assert "| average | 60.0 [53.1, 66.5] | 50.0 [43.1, 56.9] |" in (out / "sweep.md").read_text()
    with pytest.raises(SystemExit, match="--versus blt@3 bpe@1: each must be"):
        script.main([*argv, "--versus", "blt@3", "bpe@1"])
    capsys.readouterr()


def test_a_curve_without_points_is_one_clear_error(tmp_path):
    script = load_script("char_lr_sweep")
    with pytest.raises(SystemExit, match="no scored points of blt"):
        script.main(["--out", str(tmp_path / "out"), "--curve", f"blt:0.01={tmp_path}"])
    with pytest.raises(SystemExit):
        script.main(["--curve", "blt=results"])  # argparse: expected MODEL:LR=RESULTS


def test_a_curve_named_with_another_rate_than_its_points_record_is_one_clear_error(tmp_path):
    script = load_script("char_lr_sweep")
    write_points(tmp_path, "bpe", {0: 0.0, 10: 0.4})
    for path in (tmp_path / "points").glob("bpe-step00010.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "lr": 0.002}))
    assert script.main(["--out", str(tmp_path / "ok"), "--curve", f"bpe:0.002={tmp_path}"]) == 0
    with pytest.raises(SystemExit, match=r"bpe:0.016=.*finetuned at 0.002"):
        script.main(["--out", str(tmp_path / "out"), "--curve", f"bpe:0.016={tmp_path}"])
