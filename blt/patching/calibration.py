"""Calibrating the entropy threshold to a target mean patch size (docs/design.md §2: the scaling axis).

The mean patch size is measured over the patches after each sequence's BOS patch:

    mean_patch_size = Σ_b (T_b - 1) / Σ_b (P_b - 1)      (bytes after BOS / patches after BOS)

BOS is a one-byte patch in every sequence whatever the threshold, so leaving it out makes the measure a
property of the threshold and the data, not of how the sample is cut into sequences. A sequence of T bytes
takes ``1 + (T - 1) / mean_patch_size`` global steps, so for long sequences the mean patch size is the
number of bytes per global step, which sets the global model's compute per byte.

>>> from blt.patching.patchers import patch_lengths_from_entropies
>>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
>>> theta = calibrate_threshold_from_entropies(H, target_patch_size=4.5)
>>> patch_lengths_from_entropies(H, theta).tolist(), round(theta, 2)
([[1, 3, 6]], 2.75)

`patch_size_curve` measures the mean patch size over a sweep of thresholds (the curve that calibration
inverts), and `patch_size_curves` gathers the curves of the global and monotonic modes with the thresholds
calibrated to the usual targets, for a plot (`blt.viz.write_patch_size_curves`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blt.config import RELEASED_THRESHOLD, PatchingConfig
from blt.data import ByteBatchIterator, PrecomputedEntropies, PreparedData, epoch_order
from blt.errors import BLTError, ConfigError, DataError

if TYPE_CHECKING:
    from blt.patching.entropy_model import EntropyModel
from blt.patching.patchers import (
    _check_entropies,
    _comparison_dtype,
    _relative_scores,
    cap_start_mask,
    start_mask_combined,
    start_mask_global,
    start_mask_monotonic,
)

CALIBRATION_MODES = ("entropy", "monotonic", "combined")
CURVE_MODES = ("entropy", "monotonic")  # the modes `patch_size_curves` sweeps
CURVE_TARGETS = (4.5, 6.0, 8.0)  # mean patch sizes of the paper's scaling study


def mean_patch_size(patch_lengths: torch.Tensor) -> float:
    """Mean length of the patches after each row's first (BOS) patch: ``Σ (T - 1) / Σ (P - 1)`` over all
    rows of ``patch_lengths`` (B, P), zero padding ignored. See the module docstring for why BOS is left out.

    >>> mean_patch_size(torch.tensor([[1, 3, 4, 2], [1, 5, 0, 0]]))
    3.5
    """
    if not isinstance(patch_lengths, torch.Tensor) or patch_lengths.dim() != 2:
        raise ValueError("patch_lengths must be a (B, P) tensor; add a batch dimension with patch_lengths[None]")
    after_bos = patch_lengths[:, 1:]
    patches = int((after_bos > 0).sum())
    if patches == 0:
        raise ValueError("there are no patches after BOS to measure: every sequence has fewer than 2 bytes")
    return float(after_bos.sum()) / patches


def _stack(entropies: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) entropies, or 1-D sequences of any lengths -> (B, T_max) right-padded with 0, and the
    (B, T_max) mask of real positions. Padding after a sequence changes none of its patch starts."""
    if isinstance(entropies, torch.Tensor):
        _check_entropies(entropies)
        return entropies, torch.ones_like(entropies, dtype=torch.bool)
    rows = list(entropies)
    if not rows or any(not isinstance(r, torch.Tensor) or r.dim() != 1 for r in rows):
        raise ValueError("entropies must be a (B, T) tensor or a non-empty list of 1-D tensors, one per sequence")
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    _check_entropies(padded)
    lengths = torch.tensor([r.numel() for r in rows], device=padded.device)
    valid = torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]
    return padded, valid


def _scores(padded: torch.Tensor, valid: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores compared with the threshold in ``mode`` (entropies, or entropy differences in monotonic
    mode) and the mask of those that decide a real byte's start: (B, T - 2) or (B, T - 3) each."""
    if mode == "monotonic":
        return _relative_scores(padded), valid[:, 3:]  # the scores that decide bytes 3 .. T-1
    return padded[:, 1:-1].to(_comparison_dtype(padded)), valid[:, 2:]  # ... bytes 2 .. T-1


def _start_mask(padded: torch.Tensor, mode: str, theta: float, relative_threshold: float | None = None) -> torch.Tensor:
    if mode == "monotonic":
        return start_mask_monotonic(padded, theta)
    if mode == "combined":
        return start_mask_combined(padded, theta, relative_threshold)
    return start_mask_global(padded, theta)


def _threshold_between(low: float | None, high: float | None, dtype: torch.dtype) -> float:
    """A threshold θ with ``low <= θ < high`` both as a Python float and rounded to ``dtype`` (PyTorch
    rounds a Python threshold to the tensor's dtype before comparing), so ``score > θ`` selects exactly
    the scores ``>= high``. None stands for -inf / +inf. Prefers the midpoint, which leaves a margin for
    entropies recomputed with small rounding differences."""
    if low is None:
        guess = high - 1.0
    elif high is None:
        guess = low + 1.0
    else:
        guess = (low + high) / 2

    def inside(x: float) -> bool:
        return math.isfinite(x) and (low is None or x >= low) and (high is None or x < high)

    if inside(guess) and inside(float(torch.tensor(guess, dtype=dtype))):
        return guess
    if low is not None:
        return low
    return float(torch.nextafter(torch.tensor(high, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)))


def calibrate_threshold_from_entropies(
    entropies: torch.Tensor | Sequence[torch.Tensor],
    target_patch_size: float,
    mode: str = "entropy",
    *,
    relative_threshold: float | None = None,
    max_patch_length: int | None = None,
    tol: float = 0.02,
) -> float:
    """The threshold whose patching of a sample has `mean_patch_size` within ``tol`` (relative) of
    ``target_patch_size``, as used by `patch_lengths_from_entropies` with the same settings.

    entropies: (B, T) float, or a list of 1-D float tensors (sequences of different lengths); each
        sequence starts with BOS, as the entropy model sees it.
    mode: "entropy" calibrates θ_g, "monotonic" θ_r, "combined" θ_g with ``relative_threshold`` fixed.
    max_patch_length: applied while measuring, as it will be when patching.

    The mean patch size only changes when the threshold crosses a score of the sample (an entropy, or an
    entropy difference in monotonic mode), and it never decreases as the threshold grows. So this
    bisects over the sorted distinct scores (about log2 of their number measurements) and finds the
    achievable mean closest to the target, returning a threshold midway between the two scores that
    bound it. Raises ValueError when that mean is further than ``tol`` from the target: the target is
    above or below what the sample allows, or many equal scores make the mean jump over it.

    >>> H = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])  # ties: mean is 1.0 or 7.0
    >>> calibrate_threshold_from_entropies(H, target_patch_size=4.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    blt.errors.BLTError: no threshold gives a mean patch size within 2% of 4 bytes: ...
    """
    if isinstance(target_patch_size, bool) or not isinstance(target_patch_size, numbers.Real) \
            or not math.isfinite(target_patch_size) or target_patch_size < 1:
        raise ValueError("target_patch_size must be a number of bytes >= 1 (e.g. 4.5, 6 or 8), "
                         f"got {target_patch_size!r}")
    if not (isinstance(tol, numbers.Real) and 0 <= tol < 1):
        raise ValueError(f"tol is a relative tolerance in [0, 1) (e.g. 0.02), got {tol!r}")
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"mode must be one of {list(CALIBRATION_MODES)}, got {mode!r}")
    if (mode == "combined") != (relative_threshold is not None):
        raise ValueError("relative_threshold (θ_r) is needed in combined mode and only there")
    target = float(target_patch_size)
    padded, valid = _stack(entropies)
    scores, scored = _scores(padded, valid, mode)

    def start_mask(theta: float) -> torch.Tensor:
        return _start_mask(padded, mode, theta, relative_threshold)

    candidates = torch.unique(scores[scored]).tolist()  # sorted ascending
    if not candidates:
        raise ValueError("the sample is too short to calibrate on: no byte's start depends on the threshold "
                         "(sequences need at least 3 bytes, 4 in monotonic mode); use longer sequences")
    bytes_after_bos = int(valid[:, 1:].sum())

    def threshold(j: int) -> float:  # j = -1 .. n-1: θ in [candidates[j], candidates[j + 1])
        low = candidates[j] if j >= 0 else None
        high = candidates[j + 1] if j + 1 < len(candidates) else None
        return _threshold_between(low, high, scores.dtype)

    measured: dict[int, float] = {}

    def mean_at(j: int) -> float:
        if j not in measured:
            mask = start_mask(threshold(j))
            if max_patch_length is not None:
                mask = cap_start_mask(mask, max_patch_length)
            measured[j] = bytes_after_bos / int((mask & valid)[:, 1:].sum())
        return measured[j]

    low, high = -1, len(candidates) - 1
    if mean_at(high) < target:
        best = high
    elif mean_at(low) >= target:
        best = low
    else:
        while high - low > 1:  # invariant: mean_at(low) < target <= mean_at(high)
            mid = (low + high) // 2
            low, high = (low, mid) if mean_at(mid) >= target else (mid, high)
        best = low if target - mean_at(low) < mean_at(high) - target else high
    achieved = mean_at(best)
    if abs(achieved - target) <= tol * target:
        return threshold(best)
    if best == len(candidates) - 1 and achieved < target:
        limit = f"max_patch_length={max_patch_length}" if max_patch_length is not None else "the sequence lengths"
        raise BLTError(f"target_patch_size {target:g} is out of reach: the largest mean patch size on this sample "
                       f"is {achieved:.3g} bytes (bounded by {limit}); lower the target, raise max_patch_length "
                       "or calibrate on longer sequences")
    if best == -1 and achieved > target:
        raise BLTError(f"target_patch_size {target:g} is out of reach: the smallest mean patch size on this sample "
                       f"is {achieved:.3g} bytes; raise the target")
    below, above = (best, best + 1) if achieved < target else (best - 1, best)
    raise BLTError(f"no threshold gives a mean patch size within {tol:.0%} of {target:g} bytes: the closest are "
                   f"{mean_at(below):.4g} (threshold {threshold(below):.9g}) and {mean_at(above):.4g} "
                   f"(threshold {threshold(above):.9g}), because many bytes share the same score; calibrate on "
                   "a larger or more varied sample, or raise tol")


# --- the patch size against the threshold --------------------------------------------------------

def patch_size_curve(
    entropies: torch.Tensor | Sequence[torch.Tensor],
    mode: str = "entropy",
    thresholds: Sequence[float] | None = None,
    *,
    points: int = 48,
    largest: float = 64.0,
    max_patch_length: int | None = None,
) -> list[tuple[float, float]]:
    """The `mean_patch_size` of a sample at each threshold: ``[(threshold, mean patch size), ...]``,
    thresholds ascending.

    entropies: (B, T) float, or a list of 1-D float tensors; each sequence starts with BOS.
    mode: "entropy" sweeps θ_g (global threshold), "monotonic" θ_r.
    thresholds: where to measure; by default ``points`` quantiles (repeats removed) of the scores that
        decide starts (the entropies, or their differences in monotonic mode), at levels that aim at mean
        patch sizes log-spaced from 1 to about ``largest`` bytes.
    max_patch_length: applied while measuring, as it will be when patching.

    A byte starts a patch when its score exceeds the threshold, so a higher threshold never gives more
    patches: the mean patch size never decreases along the curve.

    >>> H = torch.tensor([[2.0, 0.5, 0.4, 3.0, 0.2, 0.1, 0.1, 2.5, 0.3, 0.2]])
    >>> patch_size_curve(H, thresholds=[0.0, 1.0, 2.75, 3.5])
    [(0.0, 1.0), (1.0, 3.0), (2.75, 4.5), (3.5, 9.0)]
    """
    if mode not in CURVE_MODES:
        raise ValueError(f"mode must be one of {list(CURVE_MODES)}, got {mode!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    if not (isinstance(largest, numbers.Real) and largest > 1):
        raise ValueError(f"largest is a patch size in bytes > 1 (e.g. 64), got {largest!r}")
    padded, valid = _stack(entropies)
    bytes_after_bos = int(valid[:, 1:].sum())
    if bytes_after_bos == 0:
        raise ValueError("the sample has no bytes after BOS to measure; use sequences of at least 2 ids")
    if thresholds is None:
        scores, scored = _scores(padded, valid, mode)
        values = scores[scored].double().cpu().numpy()
        if values.size == 0:
            raise ValueError("the sample is too short for a curve: no byte's start depends on the threshold "
                             "(sequences need at least 3 bytes, 4 in monotonic mode)")
        # About one score in s exceeds the quantile at level 1 - 1/s, giving patches of about s bytes:
        # s log-spaced spreads the points evenly over a log patch-size axis.
        levels = 1.0 - 1.0 / np.geomspace(1.0, min(largest, values.size), points)
        thresholds = np.unique(np.quantile(values, levels)).tolist()
    else:
        thresholds = sorted(float(t) for t in thresholds)
        if not all(math.isfinite(t) for t in thresholds):
            raise ValueError(f"thresholds must be finite numbers, got {thresholds}")
    curve = []
    for theta in thresholds:
        mask = _start_mask(padded, mode, theta)
        if max_patch_length is not None:
            mask = cap_start_mask(mask, max_patch_length)
        curve.append((theta, bytes_after_bos / int((mask & valid)[:, 1:].sum())))
    return curve


def patch_size_curves(
    entropies: torch.Tensor | Sequence[torch.Tensor],
    targets: Sequence[float] = CURVE_TARGETS,
    *,
    points: int = 48,
    max_patch_length: int | None = None,
) -> dict[str, Any]:
    """`patch_size_curve` of the global and monotonic modes, and the threshold of each mode calibrated to
    each target (`calibrate_threshold_from_entropies`), as a dict ready for JSON and for
    `blt.viz.plot_patch_size_curves`::

        {"sequences": B, "bytes": bytes after BOS, "max_patch_length": ..., "modes": {"entropy": {
            "curve": [[threshold, mean patch size], ...],
            "targets": [{"target": 4.5, "threshold": θ or None, "mean_patch_size": m or None,
                         "note": why there is no threshold, or None}, ...]}, "monotonic": {...}}}
    """
    padded, valid = _stack(entropies)
    modes = {}
    for mode in CURVE_MODES:
        curve = patch_size_curve(entropies, mode, points=points, max_patch_length=max_patch_length)
        calibrated = []
        for target in targets:
            try:
                theta = calibrate_threshold_from_entropies(entropies, target, mode, max_patch_length=max_patch_length)
            except ValueError as err:  # out of reach on this sample (BLTError is a ValueError)
                calibrated.append({"target": float(target), "threshold": None, "mean_patch_size": None, "note": str(err)})
                continue
            size = patch_size_curve(entropies, mode, [theta], max_patch_length=max_patch_length)[0][1]
            calibrated.append({"target": float(target), "threshold": theta, "mean_patch_size": size, "note": None})
        modes[mode] = {"curve": [[theta, size] for theta, size in curve], "targets": calibrated}
    return {"sequences": int(padded.shape[0]), "bytes": int(valid[:, 1:].sum()), "max_patch_length": max_patch_length,
            "modes": modes}


def spread_sample(
    data: PreparedData,
    split: str,
    seq_len: int,
    rows: int,
    seed: int = 0,
    *,
    entropies: PrecomputedEntropies | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``rows`` rows of ``seq_len`` ids of ``split``, cut exactly as training rows are but starting at byte
    positions spread over the whole split: (rows, seq_len) long, or with precomputed ``entropies`` the pair
    ``(ids, entropies)`` that `ByteBatchIterator` yields.

    The split's documents, in the order of epoch 0 for ``seed``, form a stream of bytes; row r starts at a
    byte drawn uniformly from the r-th of ``rows`` equal slices of it (a ``BOS`` first, then on from there,
    packed across documents like every row of `ByteBatchIterator`).

    Why not the first batch of a `ByteBatchIterator`: its rows are consecutive in the stream, so 64 rows of
    512 bytes come from one or two documents, and documents differ a lot in how predictable they are. On
    the stdlib corpus a threshold calibrated to 4.5 bytes there gave 3.4 to 4.8 bytes (3.98 on average over
    12 seeds) on the rest of the training split; one calibrated on 64 spread rows gave 4.47 ± 0.26.
    """
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 1:
        raise ValueError(f"rows must be a positive number of sequences, got {rows!r}")
    iterator = ByteBatchIterator(data, split, seq_len=seq_len, batch_size=1, seed=seed, entropies=entropies,
                                 order="stream")
    documents = data.split(split)
    ends = np.cumsum(documents.lengths[epoch_order(len(documents), seed, 0)])  # stream bytes up to each document's end
    total = int(ends[-1])
    starts = (np.arange(rows) + np.random.default_rng(seed).random(rows)) * (total / rows)
    at = iterator.state()
    batches = []
    for start in np.minimum(starts.astype(np.int64), total - 1):
        document = int(np.searchsorted(ends, start, side="right"))
        byte = int(start) - (int(ends[document - 1]) if document else 0)
        # offset = ids of the document already emitted, its BOS included: the row is BOS + bytes from `byte` on
        iterator.load_state(dataclasses.replace(at, epoch=0, position=document, offset=byte + 1))
        batches.append(next(iterator))
    if entropies is None:
        return torch.cat(batches)
    return torch.cat([ids for ids, _ in batches]), torch.cat([h for _, h in batches])


def calibration_sample(data: PreparedData, seq_len: int, rows: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``rows`` rows of ``seq_len`` ids spread over the validation split of ``data`` (`spread_sample`; the
    training split when validation holds less than one row), and the split's name. (rows, seq_len) long."""
    try:
        return spread_sample(data, "val", seq_len, rows, seed), "val"
    except DataError:  # no validation split, or one shorter than a row
        return spread_sample(data, "train", seq_len, rows, seed), "train"


def calibrate_patching(
    config: PatchingConfig,
    entropy_model: EntropyModel | None,
    sample: torch.Tensor,
    target_patch_size: float | None = None,
    entropies: torch.Tensor | None = None,
) -> PatchingConfig:
    """Fill in ``config.threshold`` from its target patch size (entropy modes); other modes pass through.

    ``entropies`` (B, T) of ``sample``, when already known (e.g. precomputed), spare running the entropy model.
    """
    target = target_patch_size or config.target_patch_size
    if not config.uses_entropy_model or target is None:
        return config
    if entropies is None:
        if entropy_model is None:
            raise ConfigError(f"calibrating patching mode {config.mode!r} needs an entropy model")
        entropies = entropy_model.entropies(sample)
    threshold = calibrate_threshold_from_entropies(
        entropies, target, config.mode, relative_threshold=config.relative_threshold,
        max_patch_length=config.max_patch_length,
    )
    return config.replace(threshold=threshold, target_patch_size=target)


# --- the threshold for one input (`blt patch`) ---------------------------------------------------

MIN_CALIBRATION_BYTES = 2048  # shorter inputs give too few patches to calibrate a threshold on


def _calibrate(entropies: torch.Tensor, target: float, mode: str, relative: float | None,
               max_patch_length: int | None) -> float:
    try:
        return calibrate_threshold_from_entropies(entropies[None], target, mode, relative_threshold=relative,
                                                  max_patch_length=max_patch_length)
    except ValueError as err:  # BLTError is one; the rest (sample too short) are about this input too
        raise BLTError(str(err)) from None


def threshold_for_input(entropies: torch.Tensor, mode: str, *, given: float | None, target_patch_size: float | None,
                        inherited: float | None, default_target: float, relative: float | None,
                        max_patch_length: int | None) -> tuple[float, str]:
    """θ (θ_r in monotonic mode) to show one input's patches with (`blt patch`), and how it was chosen, in
    this order: ``given``; calibrated on the input to ``target_patch_size``; ``inherited`` from a BLT run;
    calibrated to ``default_target`` on an input of at least `MIN_CALIBRATION_BYTES`; the released default.
    ``entropies``: (T,) of the input with BOS. A `BLTError` says when none of them applies."""
    n_bytes = entropies.numel() - 1
    target = default_target
    if given is not None:
        return given, "given"
    if target_patch_size is not None:
        threshold = _calibrate(entropies, target_patch_size, mode, relative, max_patch_length)
        return threshold, f"calibrated on this input to a mean patch size of {target_patch_size:g} bytes"
    if inherited is not None:
        return inherited, "from the BLT run's config"
    if n_bytes >= MIN_CALIBRATION_BYTES:
        try:
            threshold = _calibrate(entropies, target, mode, relative, max_patch_length)
            return threshold, f"calibrated on this input to a mean patch size of {target:g} bytes"
        except BLTError as err:
            if mode == "monotonic":
                raise BLTError(f"cannot calibrate θ_r on this input ({err}); pass --threshold") from None
            return RELEASED_THRESHOLD, f"the released default; calibrating to {target:g} bytes failed: {err}"
    if mode == "monotonic":
        raise BLTError(f"--mode monotonic needs --threshold θ_r: the input ({n_bytes:,} bytes) is shorter than "
                       f"{MIN_CALIBRATION_BYTES:,} bytes, too short to calibrate on, and θ_r has no released default")
    return RELEASED_THRESHOLD, (f"the released default; the input ({n_bytes:,} bytes) is shorter than "
                                f"{MIN_CALIBRATION_BYTES:,} bytes, too short to calibrate on")
