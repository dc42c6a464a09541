"""Threshold calibration to a target mean patch size (docs/design.md §2)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.patching import calibration
from blt.patching.calibration import calibrate_threshold_from_entropies, mean_patch_size
from blt.patching.patchers import patch_lengths_from_entropies

PROPERTY = settings(max_examples=40, deadline=None)


def gamma_entropies(batch_size: int = 8, seq_len: int = 1000, seed: int = 0) -> torch.Tensor:
    """Synthetic entropies in nats: gamma-distributed, most bytes easy, a heavy tail of hard ones."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.gamma(shape=1.5, scale=0.8, size=(batch_size, seq_len)).astype(np.float32))


def measured(entropies, theta, mode="entropy", relative_threshold=None, max_patch_length=None) -> float:
    """Mean patch size of the public patcher with ``theta``, over all sequences."""
    rows = [entropies] if isinstance(entropies, torch.Tensor) else [h[None] for h in entropies]
    patched = [patch_lengths_from_entropies(h, theta, monotonic=mode == "monotonic", max_patch_length=max_patch_length,
                                            relative_threshold=relative_threshold)
               for h in rows]
    after_bos = torch.cat([p[:, 1:].reshape(-1) for p in patched])
    return float(after_bos.sum()) / int((after_bos > 0).sum())


def test_docstring_examples():
    assert doctest.testmod(calibration).failed == 0


def test_mean_patch_size_leaves_out_the_bos_patch():
    assert mean_patch_size(torch.tensor([[1, 3, 4, 2]])) == 3.0
    assert mean_patch_size(torch.tensor([[1, 3, 4, 2], [1, 9, 0, 0]])) == 18 / 4
    with pytest.raises(ValueError, match="no patches after BOS"):
        mean_patch_size(torch.tensor([[1], [1]]))


@pytest.mark.parametrize("mode", ["entropy", "monotonic"])
@pytest.mark.parametrize("target", [4.5, 6.0, 8.0])
def test_hits_targets_within_two_percent(mode, target):
    h = gamma_entropies()
    theta = calibrate_threshold_from_entropies(h, target, mode)
    size = mean_patch_size(patch_lengths_from_entropies(h, theta, monotonic=mode == "monotonic"))
    assert abs(size - target) <= 0.02 * target
    assert size == measured(h, theta, mode)


def test_higher_targets_need_higher_thresholds():
    h = gamma_entropies()
    thresholds = [calibrate_threshold_from_entropies(h, target) for target in (2.0, 4.5, 6.0, 8.0)]
    assert thresholds == sorted(thresholds)


def test_combined_mode_calibrates_the_global_threshold():
    h = gamma_entropies()
    theta = calibrate_threshold_from_entropies(h, 6.0, "combined", relative_threshold=0.0)
    size = mean_patch_size(patch_lengths_from_entropies(h, theta, relative_threshold=0.0))
    assert abs(size - 6.0) <= 0.12


def test_max_patch_length_is_part_of_the_measurement():
    h = gamma_entropies()
    theta = calibrate_threshold_from_entropies(h, 6.0, max_patch_length=8)
    size = mean_patch_size(patch_lengths_from_entropies(h, theta, max_patch_length=8))
    assert abs(size - 6.0) <= 0.12
    assert size != pytest.approx(mean_patch_size(patch_lengths_from_entropies(h, theta)), abs=0.01)


def test_sequences_of_different_lengths():
    rows = [gamma_entropies(1, n, seed=n)[0] for n in (50, 700, 1, 3000, 1200)]
    theta = calibrate_threshold_from_entropies(rows, 6.0, "monotonic")
    assert abs(measured(rows, theta, "monotonic") - 6.0) <= 0.12


@given(seed=st.integers(0, 2**16), target=st.floats(1.5, 12.0), mode=st.sampled_from(["entropy", "monotonic"]),
       max_len=st.none() | st.integers(16, 64))
@PROPERTY
def test_result_is_within_tolerance_or_raises(seed, target, mode, max_len):
    h = gamma_entropies(2, 300, seed)
    try:
        theta = calibrate_threshold_from_entropies(h, target, mode, max_patch_length=max_len, tol=0.05)
    except ValueError as err:
        assert "out of reach" in str(err) or "closest" in str(err)
        return
    assert abs(measured(h, theta, mode, max_patch_length=max_len) - target) <= 0.05 * target


def test_threshold_between_adjacent_float32_entropies():
    a = 1.0
    b = float(torch.nextafter(torch.tensor(a), torch.tensor(2.0)))  # the next float32 after 1.0
    # Scores H_1 .. H_8 decide bytes 2 .. 9; only the two b's above θ in [a, b) start patches: 9 / 3 bytes.
    h = torch.tensor([[0.0, a, b, a, a, b, a, a, a, 0.0]])
    theta = calibrate_threshold_from_entropies(h, 3.0, tol=0.0)
    assert a <= theta < b
    assert mean_patch_size(patch_lengths_from_entropies(h, theta)) == 3.0


def test_half_precision_entropies():
    h = gamma_entropies().half()
    theta = calibrate_threshold_from_entropies(h, 6.0)
    assert abs(mean_patch_size(patch_lengths_from_entropies(h, theta)) - 6.0) <= 0.12


def test_unreachable_targets_raise():
    h = gamma_entropies(2, 500)
    with pytest.raises(ValueError, match="out of reach.*max_patch_length=8"):
        calibrate_threshold_from_entropies(h, 10.0, max_patch_length=8)
    with pytest.raises(ValueError, match="out of reach.*sequence lengths"):
        calibrate_threshold_from_entropies(h, 1000.0)
    with pytest.raises(ValueError, match="smallest mean patch size"):  # byte 2 never starts in monotonic mode
        calibrate_threshold_from_entropies(gamma_entropies(4, 5), 1.0, "monotonic")
    for bad in (0.5, math.nan, math.inf, None):
        with pytest.raises(ValueError, match="target_patch_size must be a number of bytes >= 1"):
            calibrate_threshold_from_entropies(h, bad)


def test_ties_raise_with_the_closest_achievable_sizes():
    h = torch.tensor([[0.0] + [1.0, 1.0, 1.0, 3.0] * 25])  # only three different scores
    with pytest.raises(ValueError, match=r"closest are .*same score"):
        calibrate_threshold_from_entropies(h, 2.0)


def test_bad_arguments():
    h = gamma_entropies(1, 100)
    with pytest.raises(ValueError, match="mode must be one of"):
        calibrate_threshold_from_entropies(h, 6.0, "static")
    with pytest.raises(ValueError, match="needed in combined mode"):
        calibrate_threshold_from_entropies(h, 6.0, "combined")
    with pytest.raises(ValueError, match="needed in combined mode"):
        calibrate_threshold_from_entropies(h, 6.0, "entropy", relative_threshold=0.5)
    with pytest.raises(ValueError, match="tol"):
        calibrate_threshold_from_entropies(h, 6.0, tol=-0.1)
    with pytest.raises(ValueError, match="too short"):
        calibrate_threshold_from_entropies(torch.zeros(4, 2), 6.0)
    with pytest.raises(ValueError, match="list of 1-D tensors"):
        calibrate_threshold_from_entropies([], 6.0)
    nan = h.clone()
    nan[0, 7] = math.nan
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold_from_entropies(nan, 6.0)
