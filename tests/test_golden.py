"""Seeded models give the outputs recorded in `tests/fixtures/` (see `tests.golden`): a refactor of the model,
the patchers or generation must not change a bit of them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from blt.bench import torch_threads
from tests.golden import RECORD, SUMMARIES, compute, digest, machine, summary


@pytest.fixture(scope="module")
def recorded() -> tuple[dict, dict[str, torch.Tensor]]:
    return json.loads(RECORD.read_text()), load_file(str(SUMMARIES))


@pytest.fixture(scope="module")
def computed() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with torch_threads(1):
        return compute()


def test_every_case_is_still_computed(recorded, computed):
    record, _ = recorded
    tensors, texts = computed
    assert sorted(tensors) == sorted(record["digests"]) and sorted(texts) == sorted(record["generations"])
    assert sum(1 for t in texts.values() if t) >= 0.9 * len(texts)  # the cases generate something


def test_generations_are_unchanged(recorded, computed):
    record, _ = recorded
    _, texts = computed
    changed = sorted(k for k, v in texts.items() if v != record["generations"][k])
    assert not changed, f"generations changed: {changed}"


def test_tensors_are_unchanged(recorded, computed):
    record, summaries = recorded
    tensors, _ = computed
    for name, t in tensors.items():
        if not t.is_floating_point():
            assert torch.equal(t, summaries[name]), name
    if record["machine"] == machine():  # the same kernels: nothing may move by a bit
        changed = sorted(k for k, t in tensors.items() if digest(t) != record["digests"][k])
        assert not changed, f"changed bits: {changed}"
    else:  # another CPU or torch: other kernels, the same numbers up to rounding
        for name, t in tensors.items():
            if t.is_floating_point():
                torch.testing.assert_close(summary(t), summaries[name], atol=1e-3, rtol=1e-4, msg=name)
