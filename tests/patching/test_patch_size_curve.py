"""The mean patch size against the threshold: the sweep, the calibrated targets, the sample, `blt patch --curve`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from blt.cli import main
from blt.config import EntropyModelConfig
from blt.data import PreparedData, prepare
from blt.patching import EntropyModel, mean_patch_size, patch_lengths_from_entropies
from blt.patching.calibration import (
    calibrate_threshold_from_entropies,
    calibration_sample,
    patch_size_curve,
    patch_size_curves,
)
from blt.run import write_run_config
from blt.tokenizer import BOS_ID

WORKED = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])  # docs/design.md §2
PNG = b"\x89PNG\r\n\x1a\n"


def gamma_entropies(batch_size: int = 4, seq_len: int = 500, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.gamma(shape=1.5, scale=0.8, size=(batch_size, seq_len)).astype(np.float32))


def test_known_values_on_the_worked_example():
    # Global: θ = 1 gives [1, 3, 4, 2] (3 patches after BOS for 9 bytes); θ = 2.75 leaves H_3 = 3.0 alone.
    assert patch_size_curve(WORKED, "entropy", [3.5, 0.0, 1.0, 2.75]) == [(0.0, 1.0), (1.0, 3.0), (2.75, 4.5), (3.5, 9.0)]
    # Monotonic: differences H_i - H_{i-1} for i >= 2 are -0.1, 2.6, -2.8, -0.1, 0.0, 2.4, -2.2; they decide
    # bytes 3 .. 9, and byte 2 never starts a patch, so the smallest mean is 9 bytes / 8 patches.
    assert patch_size_curve(WORKED, "monotonic", [-5.0, 1.0, 2.5, 3.0]) == [(-5.0, 9 / 8), (1.0, 3.0), (2.5, 4.5), (3.0, 9.0)]
    assert patch_size_curve(WORKED, "entropy", [1.0], max_patch_length=2) == [(1.0, 9 / 5)]  # [1, 2, 1, 2, 2, 2]


@pytest.mark.parametrize("mode", ["entropy", "monotonic"])
def test_default_sweep_is_ascending_non_decreasing_and_spans_1_to_largest(mode):
    curve = patch_size_curve(gamma_entropies(), mode, points=40)
    thresholds, sizes = zip(*curve)
    assert list(thresholds) == sorted(set(thresholds)) and len(curve) >= 30
    assert list(sizes) == sorted(sizes)
    assert sizes[0] < 1.05 and 40 < sizes[-1] < 90  # aims at 1 .. 64 bytes, spread on a log scale
    ratios = np.diff(np.log(sizes))
    assert ratios.max() < 5 * ratios.mean()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), mode=st.sampled_from(["entropy", "monotonic"]),
       max_len=st.sampled_from([None, 3, 16]))
def test_curve_is_the_patchers_mean_and_never_decreases(seed, mode, max_len):
    H = gamma_entropies(batch_size=3, seq_len=60, seed=seed)
    thresholds = torch.linspace(-3, 6, 25).tolist()
    curve = patch_size_curve(H, mode, thresholds, max_patch_length=max_len)
    sizes = [size for _, size in curve]
    assert sizes == sorted(sizes)
    for theta, size in curve[::6]:
        lengths = patch_lengths_from_entropies(H, theta, monotonic=mode == "monotonic", max_patch_length=max_len)
        assert size == pytest.approx(mean_patch_size(lengths))


def test_sequences_of_different_lengths_count_only_their_bytes():
    rows = [WORKED[0], WORKED[0, :4]]  # the second: BOS + 3 bytes, one patch after BOS at θ = 1
    assert patch_size_curve(rows, "entropy", [1.0]) == [(1.0, (9 + 3) / (3 + 1))]


def test_curves_hold_both_modes_and_the_calibrated_targets():
    H = gamma_entropies()
    curves = patch_size_curves(H, targets=(4.5, 6, 8, 1000), points=20)
    assert curves["sequences"] == 4 and curves["bytes"] == 4 * 499 and curves["max_patch_length"] is None
    assert list(curves["modes"]) == ["entropy", "monotonic"]
    for mode, data in curves["modes"].items():
        assert data["curve"] == [list(point) for point in patch_size_curve(H, mode, points=20)]
        reached = data["targets"][:3]
        for target in reached:
            theta = calibrate_threshold_from_entropies(H, target["target"], mode)
            assert target["threshold"] == theta and target["note"] is None
            assert target["mean_patch_size"] == pytest.approx(target["target"], rel=0.02)
        assert [t["threshold"] for t in reached] == sorted(t["threshold"] for t in reached)
        unreachable = data["targets"][3]
        assert unreachable["target"] == 1000 and unreachable["threshold"] is None and "out of reach" in unreachable["note"]
    assert json.loads(json.dumps(curves)) == curves


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        patch_size_curve(WORKED, "combined")
    with pytest.raises(ValueError, match="points must be an integer >= 2"):
        patch_size_curve(WORKED, points=1)
    with pytest.raises(ValueError, match="largest is a patch size"):
        patch_size_curve(WORKED, largest=1)
    with pytest.raises(ValueError, match="finite"):
        patch_size_curve(WORKED, thresholds=[float("nan")])
    with pytest.raises(ValueError, match="too short for a curve"):
        patch_size_curve(torch.tensor([[1.0, 2.0]]))


# --- the sample and the command ------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curve_data")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    words = ["bytes", "patch", "entropy", "model", "the", "of", "a", "latent", "transformer"]
    for i in range(30):
        (corpus / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(words, size=int(rng.integers(20, 80)))) + "\n")
    prepare([str(corpus)], root / "prepared", val_fraction=0.3, seed=0, progress=False)
    return root / "prepared"


@pytest.fixture(scope="module")
def entropy_run(tmp_path_factory) -> Path:
    cfg = EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=16, max_seq_len=48)
    model = EntropyModel(cfg).init_weights(seed=0)
    with torch.no_grad():
        model.output.weight.mul_(30)  # entropies spread over [0, ln 260] rather than all near the top
    run = tmp_path_factory.mktemp("entropy_run")
    save_file(model.state_dict(), run / "model.safetensors")
    write_run_config(run, "entropy_model", cfg)
    return run


def test_calibration_sample_prefers_validation_rows(prepared, tmp_path):
    data = PreparedData.open(prepared)
    sample, split = calibration_sample(data, seq_len=48, rows=5, seed=1)
    assert split == "val" and sample.shape == (5, 48) and (sample[:, 0] == BOS_ID).all()
    assert calibration_sample(data, seq_len=48, rows=5, seed=1)[0].equal(sample)  # deterministic
    long_rows = data.split("val").total_bytes + 100  # longer than the whole validation split
    assert calibration_sample(data, seq_len=long_rows, rows=2)[1] == "train"


def test_curve_command_on_data_writes_png_and_json(capsys, prepared, entropy_run, tmp_path):
    out = tmp_path / "curve" / "patch_sizes.png"
    assert main(["patch", "--entropy-model", str(entropy_run), "--data", str(prepared), "--curve", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "64 random rows of 48 bytes of the val split" in printed and "global θ_g" in printed
    assert f"wrote {out} and {out.with_suffix('.json')}" in printed
    assert out.read_bytes()[:8] == PNG
    curves = json.loads(out.with_suffix(".json").read_text())
    assert curves["sequences"] == 64 and curves["bytes"] == 64 * 47
    assert not (prepared / "entropies").exists()  # --curve measures; it precomputes nothing


def test_curve_command_on_text(capsys, entropy_run, tmp_path):
    text = "Patches follow the entropy of the next byte. " * 20
    out = tmp_path / "text.png"
    assert main(["patch", "--entropy-model", str(entropy_run), "--text", text, "--curve", str(out),
                 "--max-patch-length", "8"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"--text: mean patch size against the threshold ({len(text):,} bytes, patches split at 8")
    curves = json.loads(out.with_suffix(".json").read_text())
    assert curves["sequences"] == 1 and curves["max_patch_length"] == 8 and curves["sample"] == "--text"
    assert max(size for _, size in curves["modes"]["entropy"]["curve"]) <= 8


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "1.0"], "--threshold does not go with --curve"),
    (["--png", "x.png"], "--png does not go with --curve"),
    (["--data", "somewhere"], "give one sample for --curve"),
    (["--curve", "out.svg"], "must name a .png file"),
])
def test_curve_command_errors_are_one_line(capsys, entropy_run, tmp_path, extra, message):
    argv = ["patch", "--entropy-model", str(entropy_run), "--text", "some text", "--curve", str(tmp_path / "c.png"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
