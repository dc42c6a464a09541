"""An entropy-model run ends with the mean patch size against the threshold on validation rows."""

from __future__ import annotations

import json

from blt.patching.calibration import calibration_sample, patch_size_curves
from blt.pipelines.recipes import CALIBRATION_ROWS, RunOptions, train_entropy_model
from blt.run import load

ENTROPY_SET = ["dim=32", "n_layers=1", "n_heads=2", "window=32", "max_seq_len=64"]
TRAIN_SET = ["batch_size=4", "seq_len=64", "eval_batches=1", "eval_every=0", "checkpoint_every=0", "log_every=1"]


def test_entropy_run_plots_patch_size_against_threshold(text_data, tmp_path):
    out = tmp_path / "ent"
    train_entropy_model(RunOptions(data=text_data.path, out=out, model_overrides=ENTROPY_SET,
                                   train_overrides=TRAIN_SET, steps=2, progress=False))
    png, numbers = out / "patch_size_vs_threshold.png", out / "patch_size_vs_threshold.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads(numbers.read_text())
    assert curves["sample"] == f"{CALIBRATION_ROWS} random rows of 64 bytes of the val split of {text_data.path}"
    for mode in ("entropy", "monotonic"):
        sizes = [size for _, size in curves["modes"][mode]["curve"]]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
        assert [t["target"] for t in curves["modes"][mode]["targets"]] == [4.5, 6.0, 8.0]

    # The numbers are those of the saved model on validation rows drawn with the run's seed.
    seed = json.loads((out / "config.json").read_text())["train"]["seed"]
    sample, split = calibration_sample(text_data, 64, CALIBRATION_ROWS, seed=seed)
    expected = patch_size_curves(load(out, expect="entropy_model").model.entropies(sample))
    assert split == "val" and json.loads(json.dumps(expected)) == {k: v for k, v in curves.items() if k != "sample"}
