"""Training with precomputed entropies: the same patches as on the fly where both see the same context,
`BLTObjective` patches by the entropies it is given, and `train_blt` uses precomputed entropies of its
entropy model when they exist (without running that model) and falls back to the model otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blt.cli import main
from blt.config import PatchingConfig
from blt.data import ByteBatchIterator, PreparedData
from blt.errors import DataError
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching import EntropyModel, Patcher
from blt.patching.precompute import (
    entropy_model_key,
    find_entropies,
    precompute_entropies,
    precomputed_precisions,
    weights_sha256,
)
from blt.pipelines.recipes import RunOptions, precomputed_entropies, train_blt
from blt.run import load, write_run_config
from blt.tokenizer import BOS_ID
from blt.train.objectives import BLTObjective
from tests.train.conftest import micro_blt_config, micro_entropy_config
from tests.train.test_cli import BLT_SET

TRAIN_SET = ["batch_size=4", "seq_len=64", "eval_batches=2", "eval_every=0", "checkpoint_every=0"]


@pytest.fixture(scope="module")
def entropy_model() -> EntropyModel:
    model = EntropyModel(micro_entropy_config()).init_weights(seed=0).eval()
    with torch.no_grad():
        model.output.weight.mul_(30)  # spread the entropies over [0, ln 260] instead of all near the top
    return model


@pytest.fixture
def data(text_data, tmp_path) -> PreparedData:
    """A copy of the training corpus: entropies are written inside it."""
    return PreparedData.open(shutil.copytree(text_data.path, tmp_path / "data"))


def no_entropy_model_calls(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the entropy model ran although precomputed entropies were given")

    monkeypatch.setattr(EntropyModel, "entropies", fail)


def separating_threshold(values: torch.Tensor, margin: float) -> float:
    """A threshold in the middle half of ``values`` with no value within ``margin`` of it."""
    values = values.flatten().sort().values
    lo, hi = len(values) // 4, 3 * len(values) // 4
    gaps = values[lo + 1:hi + 1] - values[lo:hi]
    i = lo + int(gaps.argmax())
    assert values[i + 1] - values[i] > 2 * margin, "no usable gap between the entropies"
    return float(values[i] + values[i + 1]) / 2


def test_patches_from_precomputed_entropies_equal_on_the_fly_ones_from_document_starts(data, entropy_model):
    """On the fly, bytes before a row's first document start lack the start of their document; from the
    first document start on (the row's start when it is one, else its first inner BOS) the entropy model
    sees what precomputing saw, so the entropies agree to float16 precision and the patches exactly."""
    precompute_entropies(data, entropy_model, source="ent", progress=False)
    it = ByteBatchIterator(data, "train", 64, 1, seed=0, entropies=find_entropies(data, entropy_model),
                           order="stream")  # a row starts at a document start when the state's offset is 0
    rows, stored_rows, firsts = [], [], []
    for _ in range(150):
        at_document_start = it.state().offset == 0
        ids, entropies = next(it)
        starts = (ids[0] == BOS_ID).nonzero().flatten().tolist()
        first = 0 if at_document_start else next((p for p in starts if p > 0), None)
        if first is not None and first < 60:
            rows.append(ids)
            stored_rows.append(entropies)
            firsts.append(first)
    ids, stored = torch.cat(rows), torch.cat(stored_rows)
    compared = torch.arange(ids.shape[1])[None] >= torch.tensor(firsts)[:, None]  # (B, T)
    on_the_fly = entropy_model.entropies(ids)
    assert len(ids) >= 20 and firsts.count(0) >= 1
    torch.testing.assert_close(stored[compared], on_the_fly[compared], rtol=0, atol=3e-3)
    threshold = separating_threshold(torch.cat([stored[compared], on_the_fly[compared]]), margin=3e-3)
    for config in (PatchingConfig(mode="entropy", threshold=threshold),
                   PatchingConfig(mode="entropy", threshold=threshold, max_patch_length=3)):
        patcher = Patcher(config, entropy_model)
        from_stored = patcher.start_mask(ids, stored)
        assert torch.equal(from_stored[compared], patcher.start_mask(ids)[compared])
        assert 0.1 < from_stored[compared].float().mean() < 0.9  # a test that could fail
        row_at_start = firsts.index(0)  # whole rows: the same patch lengths
        assert torch.equal(patcher(ids[row_at_start:row_at_start + 1], stored[row_at_start:row_at_start + 1]),
                           patcher(ids[row_at_start:row_at_start + 1]))


def test_blt_objective_patches_by_the_entropies_it_is_given(data, entropy_model, monkeypatch):
    ids = next(ByteBatchIterator(data, "train", 64, 4, seed=0))
    entropies = entropy_model.entropies(ids)
    cfg = micro_blt_config(PatchingConfig(mode="entropy", threshold=separating_threshold(entropies, 0)))
    model = ByteLatentTransformer(cfg).init_weights(seed=0)
    objective = BLTObjective(model, Patcher(cfg.patching, entropy_model))
    loss, stats = objective.loss_sum(model, ids)
    no_entropy_model_calls(monkeypatch)
    given_loss, given_stats = objective.loss_sum(model, ids, entropies)
    assert torch.equal(given_loss, loss) and given_stats == stats
    _, shifted = objective.loss_sum(model, ids, entropies + 10)  # every byte its own patch: entropies are used
    assert shifted["patches"] == ids[:, 1:].numel()


def test_shuffled_rows_carry_the_entropies_of_their_stream_rows(data, entropy_model):
    if find_entropies(data, entropy_model) is None:
        precompute_entropies(data, entropy_model, source="ent", progress=False)
    stored = find_entropies(data, entropy_model)
    stream = ByteBatchIterator(data, "train", 64, 1, seed=0, entropies=stored, order="stream")
    rows = []
    while stream.epoch == 0:
        ids, entropies = next(stream)
        rows.append((ids[0].tolist(), entropies[0].tolist()))
    shuffled = ByteBatchIterator(data, "train", 64, 1, seed=0, entropies=stored)
    shuffled_rows = [(ids[0].tolist(), entropies[0].tolist()) for ids, entropies in (next(shuffled) for _ in rows)]
    assert sorted(shuffled_rows) == sorted(rows) and shuffled_rows != rows


def train(data: PreparedData, out: Path, entropy_run: Path, logs: list[str], steps: int = 2, resume: bool = False):
    opts = RunOptions(data=data.path, out=out, model_overrides=BLT_SET, train_overrides=TRAIN_SET, steps=steps,
                      resume=resume, progress=False)
    return train_blt(opts, {"mode": "entropy", "target_patch_size": 3.0}, entropy_run, log=logs.append)


def test_train_blt_uses_precomputed_entropies_when_they_exist(data, entropy_model, tmp_path, monkeypatch):
    entropy_run = tmp_path / "ent"
    write_run_config(entropy_run, "entropy_model", entropy_model.cfg)
    save_file(entropy_model.state_dict(), entropy_run / "model.safetensors")

    logs: list[str] = []
    train(data, tmp_path / "on_the_fly", entropy_run, logs)
    assert any(line.startswith("entropies: computed during training (none precomputed") for line in logs)

    report = precompute_entropies(data, entropy_model, source=entropy_run, progress=False)
    with monkeypatch.context() as patch:
        no_entropy_model_calls(patch)  # calibration, training and validation all read the stored entropies
        logs.clear()
        result = train(data, tmp_path / "precomputed", entropy_run, logs)
        assert f"entropies: precomputed (fp32) in {report.path}" in logs and result.step == 2
        assert any(line.startswith("patching: entropy, threshold") for line in logs)
        logs.clear()
        resumed = train(data, tmp_path / "precomputed", entropy_run, logs, steps=3, resume=True)  # the run's copy
        assert f"entropies: precomputed in {report.path}, as since the run started" in logs and resumed.step == 3

    # the run started before the entropies were precomputed goes on computing them, so its patches stay the same
    logs.clear()
    resumed = train(data, tmp_path / "on_the_fly", entropy_run, logs, steps=3, resume=True)
    assert "entropies: computed during training, as since the run started" in logs and resumed.step == 3
    assert json.loads((tmp_path / "on_the_fly" / "config.json").read_text())["precomputed_entropies"] is None

    part = min(report.path.glob("train-*.f16"))
    part.write_bytes(bytes(part.stat().st_size))
    logs.clear()
    assert precomputed_entropies(data, entropy_model, log=logs.append) is None
    assert len(logs) == 1 and logs[0].startswith("entropies: computed during training, since precomputed entropies: ")
    assert "is corrupt" in logs[0]
    # a run that patches by them refuses to go on with entropies it would patch differently by
    with pytest.raises(DataError, match="this run patches by the entropies precomputed in .* can't be used now"):
        train(data, tmp_path / "precomputed", entropy_run, logs, steps=4, resume=True)


def test_entropies_precomputed_in_bf16_have_their_own_key_and_a_run_on_them_computes_in_bf16(data, entropy_model,
                                                                                             tmp_path, monkeypatch):
    """`blt patch --data --precision bf16` keeps bf16 entropies apart from fp32 ones (the fp32 key is the one
    of a config without a precision field); a BLT trained where only bf16 ones exist patches by them, and its
    copy of the entropy model computes in bf16, so evaluating the run later patches alike."""

    entropy_run = tmp_path / "ent"
    write_run_config(entropy_run, "entropy_model", entropy_model.cfg)
    save_file(entropy_model.state_dict(), entropy_run / "model.safetensors")
    fp32_key = entropy_model_key(entropy_model)
    config = {k: v for k, v in entropy_model.cfg.to_dict().items() if k != "precision"}
    assert fp32_key == hashlib.sha256(f"{json.dumps(config, sort_keys=True)}\n{weights_sha256(entropy_model)}"
                                      .encode()).hexdigest()[:16]

    assert main(["patch", "--data", str(data.path), "--entropy-model", str(entropy_run), "--precision", "bf16"]) == 0
    bf16_dirs = [d for d in (data.path / "entropies").iterdir()]
    assert len(bf16_dirs) == 1 and bf16_dirs[0].name != fp32_key
    manifest = json.loads((bf16_dirs[0] / "manifest.json").read_text())
    assert manifest["precision"] == "bf16" and manifest["entropy_model"]["config"]["precision"] == "bf16"
    assert find_entropies(data, entropy_model) is None and precomputed_precisions(data, entropy_model) == ["bf16"]
    assert entropy_model.cfg.precision == "fp32"  # looking did not change the model

    bf16 = EntropyModel(dataclasses.replace(entropy_model.cfg, precision="bf16")).eval()
    bf16.load_state_dict(entropy_model.state_dict())
    ids = torch.randint(4, 260, (2, 100), generator=torch.Generator().manual_seed(0))
    assert torch.equal(bf16.entropies(ids), entropy_model.entropies(ids, dtype=torch.bfloat16))
    assert not torch.equal(bf16.entropies(ids), entropy_model.entropies(ids))

    logs: list[str] = []
    with monkeypatch.context() as patch:
        no_entropy_model_calls(patch)
        train(data, tmp_path / "run", entropy_run, logs)
    assert "entropies: precomputed in bf16 for this entropy model; the run computes any others in bf16 too" in logs
    assert f"entropies: precomputed (bf16) in {bf16_dirs[0]}" in logs
    run = load(tmp_path / "run")
    assert run.entropy_model.cfg.precision == "bf16" and json.loads(
        (tmp_path / "run" / "config.json").read_text())["precomputed_entropies"] == bf16_dirs[0].name
    assert load(entropy_run).model.cfg.precision == "fp32"  # the entropy model's own run is left as it was
