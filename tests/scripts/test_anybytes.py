"""`scripts/anybytes.py`: the pieces of its report that are not a training run."""

from __future__ import annotations

import io
import wave

import numpy as np

from tests.helpers import load_script


def test_silence_is_the_longest_run_of_near_zero_samples_even_when_dithered():
    anybytes = load_script("anybytes")
    rng = np.random.default_rng(0)
    loud = lambda n: rng.integers(-9000, 9000, n)  # noqa: E731
    samples = np.concatenate([loud(800), rng.integers(-3, 4, 2400), loud(500), np.zeros(300, int), loud(100)])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.astype("<i2").tobytes())
    data = buffer.getvalue()
    a, b = anybytes.silence(data)
    offset = data.find(b"data") + 8
    assert (a - offset) // 2 <= 800 + 2 and (b - offset) // 2 >= 800 + 2400 - 2 and b - a < 2 * 2500


def test_the_report_reads_its_numbers_from_the_record():
    anybytes = load_script("anybytes")
    kind = {"kind": "gzip", "files": 3, "bytes": 9000, "blt_bpb": 8.01, "entropy_model_bpb": 8.02, "gzip_bpb": 8.03,
            "xz_bpb": 8.05, "bytes_per_patch": 1.1, "global_steps_per_kb": 931.0, "bytes_share": 0.1, "compute_share": 0.3}
    record = {"settings": {"patch_size": 3.3, "entropy_steps": 10, "steps": 5}, "threshold": 5.5,
              "kinds": [kind, {"kind": "pdf", "files": 0}],
              "corner_cases": {"spaces": {"bytes": 10_000, "patches": 1, "cap": 16, "patches_capped": 625}}}
    text = anybytes.markdown(record)
    assert "| gzip | 3 | 9,000 | 8.010 | 8.020 | 8.030 | 8.050 | 1.10 | 931 | 10.0% | 30.0% | 3.00 |" in text
    assert "| pdf | 0 |" in text and "**10,000 spaces**: 1 patch; with `max_patch_length` 16, 625" in text
