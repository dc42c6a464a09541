"""Precomputed entropies (`blt patch --data`): layout and manifest, values = the entropy model's on each
document alone, resume after a crash = one uninterrupted run, reuse, clear errors, and batches whose
entropies line up with their ids exactly (same packing, same state) in training and validation."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from blt.cli import main
from blt.config import BLTConfig, EntropyModelConfig
from blt.data import (
    ByteBatchIterator,
    PrecomputedEntropies,
    PreparedData,
    prepare,
    validation_batches,
)
from blt.data.entropies import content_fingerprint
from blt.errors import DataError
from blt.patching import EntropyModel
from blt.patching.precompute import entropy_model_key, find_entropies, precompute_entropies, weights_sha256
from blt.run import write_run_config
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, PAD_ID, encode
from tests.data.corpora import random_corpus, write_tree

PART_VALUES = 700  # small parts, so that the corpus below spans several
ENTROPIES = EntropyModel.entropies


class Interrupted(Exception):
    pass


def micro_model(seed: int) -> EntropyModel:
    """A one-layer model whose window (16) is far below the chunk length (256) precomputing uses."""
    return EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, window=16)).init_weights(seed=seed).eval()


@pytest.fixture(scope="module")
def model() -> EntropyModel:
    return micro_model(seed=0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared corpus in both splits with a 1-byte document and one of 1500 bytes (several chunks, a
    part of its own); tests copy it, since entropies are written inside it."""
    root = tmp_path_factory.mktemp("entropies")
    files = dict(random_corpus(24, seed=3))
    files["tiny.bin"], files["long.txt"] = b"x", (b"the quick brown fox " * 75)
    prepare([str(write_tree(root / "corpus", files))], root / "prepared", val_fraction=0.3, seed=0, progress=False)
    return root / "prepared"


@pytest.fixture
def data(prepared, tmp_path) -> PreparedData:
    shutil.copytree(prepared, tmp_path / "data")
    return PreparedData.open(tmp_path / "data")


def precompute(data: PreparedData, model: EntropyModel, **kwargs):
    return precompute_entropies(data, model, source="runs/ent", part_values=PART_VALUES, progress=False, **kwargs)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "manifest.json"}


def count_calls(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Count (and optionally fail at call ``fail_at``) `EntropyModel.entropies`; returns the counter."""
    calls = [0]

    def entropies(self, ids, *args, **kwargs):
        calls[0] += 1
        if calls[0] == fail_at:
            raise Interrupted
        return ENTROPIES(self, ids, *args, **kwargs)

    monkeypatch.setattr(EntropyModel, "entropies", entropies)
    return calls


def test_layout_and_manifest(data, model):
    report = precompute(data, model)
    key = entropy_model_key(model)
    root = data.path / "entropies" / key
    assert report.path == root and report.key == key and len(key) == 16
    assert report.bytes == report.computed_bytes == data.manifest.total_bytes
    assert report.documents == data.manifest.total_documents
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["dtype"] == "float16" and manifest["key"] == key
    assert manifest["entropy_model"]["run"] == str(Path("runs/ent").resolve())
    assert manifest["entropy_model"]["weights_sha256"] == weights_sha256(model)
    assert manifest["entropy_model"]["config"] == model.cfg.to_dict()
    assert manifest["data_fingerprint"] == content_fingerprint(data)
    listed = []
    for split in ("train", "val"):
        documents, parts = data.split(split), manifest["splits"][split]
        assert len(parts) > 1
        assert [p["first_document"] for p in parts] == np.cumsum([0] + [p["documents"] for p in parts[:-1]]).tolist()
        assert sum(p["documents"] for p in parts) == len(documents)
        assert sum(p["size"] for p in parts) == 2 * (documents.total_bytes + 2 * len(documents))  # float16, L + 2 each
        for part in parts:
            payload = (root / part["file"]).read_bytes()
            assert len(payload) == part["size"] and hashlib.sha256(payload).hexdigest() == part["sha256"]
            listed.append(part["file"])
    assert sorted(os.listdir(root)) == sorted(listed + ["manifest.json"])  # nothing else, no temporaries

    other = micro_model(seed=1)
    assert entropy_model_key(other) != key
    precompute(data, other)
    assert sorted(os.listdir(data.path / "entropies")) == sorted([key, entropy_model_key(other)])
    assert PrecomputedEntropies.open(data, key).key == key
    assert find_entropies(data, other).key == entropy_model_key(other)


def test_values_are_the_entropies_of_each_document_alone_with_bos(data, model):
    precompute(data, model)
    stored = find_entropies(data, model)
    for split in ("train", "val"):
        documents, values = data.split(split), stored.split(split)
        for i in range(len(documents)):
            doc = bytes(documents[i])
            got = values[i].astype(np.float32)
            assert values[i].dtype == np.float16 and got.shape == (len(doc) + 2,)
            np.testing.assert_allclose(got[:-1], model.entropies(encode(doc)).numpy(), rtol=0, atol=3e-3)
            np.testing.assert_allclose(got[-1], model.entropies(encode(doc, eos=True))[-1].item(), rtol=0, atol=3e-3)
    assert max(data.split(split).lengths.max() for split in ("train", "val")) == 1500  # chunked: 256 ids a chunk


def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(prepared, tmp_path, model, monkeypatch):
    uninterrupted = PreparedData.open(shutil.copytree(prepared, tmp_path / "a"))
    expected = files_of(precompute(uninterrupted, model).path)

    data = PreparedData.open(shutil.copytree(prepared, tmp_path / "b"))
    count_calls(monkeypatch, fail_at=6)
    with pytest.raises(Interrupted):
        precompute(data, model)
    root = data.path / "entropies" / entropy_model_key(model)
    manifest = json.loads((root / "manifest.json").read_text())
    finished = [p["file"] for parts in manifest["splits"].values() for p in parts]
    assert manifest["status"] == "incomplete" and finished
    with pytest.raises(DataError, match="are unfinished; run `blt patch --data"):
        PrecomputedEntropies.open(data, entropy_model_key(model))
    # What a crash can leave besides finished parts: a temporary file, and a part renamed into place but
    # not yet recorded (here with wrong contents). Neither may be trusted.
    unrecorded = next(name for name in expected if name not in finished)
    (root / unrecorded).write_bytes(b"\0" * len(expected[unrecorded]))
    (root / f".{unrecorded}.0123456789ab.tmp").write_bytes(b"partial")

    calls = count_calls(monkeypatch)
    report = precompute(data, model)
    assert 0 < report.reused_bytes and report.computed_bytes < report.bytes and calls[0] > 0
    assert files_of(root) == expected
    assert json.loads((root / "manifest.json").read_text())["status"] == "complete"


def test_a_rerun_reuses_finished_work_and_redoes_a_corrupt_part(data, model, monkeypatch):
    first = precompute(data, model)
    expected = files_of(first.path)
    count_calls(monkeypatch, fail_at=1)  # any entropy-model call now fails
    again = precompute(data, model, batch_size=3)
    assert again.computed_bytes == 0 and files_of(again.path) == expected

    name = sorted(expected)[1]
    (first.path / name).write_bytes(b"\xff" + expected[name][1:])
    with pytest.raises(DataError, match=f"{name} is corrupt"):
        PrecomputedEntropies.open(data, first.key)
    calls = count_calls(monkeypatch)
    redone = precompute(data, model)
    assert 0 < redone.computed_bytes < redone.bytes and calls[0] > 0 and files_of(first.path) == expected


def test_missing_stale_or_foreign_entropies_are_clear_errors(data, model, tmp_path):
    assert find_entropies(data, model) is None
    with pytest.raises(DataError, match="no precomputed entropies 0123456789abcdef in .*; run `blt patch --data"):
        PrecomputedEntropies.open(data, "0123456789abcdef")
    key = precompute(data, model).key
    prepare([str(write_tree(tmp_path / "edited", random_corpus(24, seed=4)))], tmp_path / "other", val_fraction=0.3,
            progress=False)
    other = PreparedData.open(tmp_path / "other")
    with pytest.raises(DataError, match="belong to other data"):
        ByteBatchIterator(other, "train", 16, 2, entropies=PrecomputedEntropies.open(data, key))
    # The same entropies beside other contents (e.g. data prepared again from edited files) are stale.
    shutil.copytree(data.path / "entropies", other.path / "entropies")
    with pytest.raises(DataError, match="were computed on other data"):
        find_entropies(other, model)


# --- batches ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def positions(packed) -> PrecomputedEntropies:
    """Entropies of the `packed` corpus from a stand-in model whose "entropy" at each position is the
    position itself: value j of a document is j, so a batch's values say where each id came from."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EntropyModel, "entropies",
                      lambda self, ids, **_: torch.arange(ids.shape[-1], dtype=torch.float32).expand(ids.shape))
        precompute_entropies(packed, micro_model(seed=0), source="positions", progress=False)
    return find_entropies(packed, micro_model(seed=0))


def assert_aligned(ids: torch.Tensor, entropies: torch.Tensor, lengths: np.ndarray) -> None:
    """Every row's entropies are the stored values of its ids: 0 at each document's BOS, then +1 per id,
    reaching length + 1 at its EOS; a row's first BOS carries the value before its first id; PAD has 0.
    In `packed`, document k's bytes are all 10 + k, so the byte before an EOS names the document."""
    assert entropies.dtype == torch.float32 and entropies.shape == ids.shape
    for row, values in zip(ids.tolist(), entropies.tolist()):
        if row[1] != PAD_ID:
            assert values[0] == values[1] - 1
        for j in range(1, len(row)):
            if row[j] in (BOS_ID, PAD_ID):
                assert values[j] == 0
            else:
                assert values[j] == values[j - 1] + 1
            if row[j] == EOS_ID:
                assert values[j] == lengths[row[j - 1] - OFFSET - 10] + 1


def test_training_batches_carry_aligned_entropies_and_resume_as_before(packed, positions):
    lengths = np.zeros(30, dtype=np.int64)  # of document k (named ...docKK)
    for split in (packed.split("train"), packed.split("val")):
        for i in range(len(split)):
            lengths[int(split.document_name(i)[-2:])] = split.lengths[i]
    plain = ByteBatchIterator(packed, "train", 50, 3, seed=1)
    paired = ByteBatchIterator(packed, "train", 50, 3, seed=1, entropies=positions)
    for _ in range(40):  # more than an epoch
        ids, entropies = next(paired)
        assert torch.equal(ids, next(plain)) and paired.state() == plain.state()
        assert_aligned(ids, entropies, lengths)

    saved = paired.state().to_dict()
    expected = [next(paired) for _ in range(4)]
    fresh = ByteBatchIterator(packed, "train", 50, 3, seed=1, entropies=positions)
    fresh.load_state(saved)
    for ids, entropies in expected:
        got_ids, got_entropies = next(fresh)
        assert torch.equal(got_ids, ids) and torch.equal(got_entropies, entropies)

    ranks = [ByteBatchIterator(packed, "train", 50, 4, seed=1, world_size=2, rank=r, entropies=positions)
             for r in range(2)]
    whole = ByteBatchIterator(packed, "train", 50, 4, seed=1, entropies=positions)
    for _ in range(5):
        ids, entropies = next(whole)
        for r, it in enumerate(ranks):
            local_ids, local_entropies = next(it)
            assert torch.equal(local_ids, ids[r::2]) and torch.equal(local_entropies, entropies[r::2])

    for plain_ids, (ids, entropies) in zip(validation_batches(packed, 40, 3),
                                           validation_batches(packed, 40, 3, entropies=positions), strict=True):
        assert torch.equal(ids, plain_ids)
        assert_aligned(ids, entropies, lengths)


# --- the command -----------------------------------------------------------------------------------------

@pytest.fixture
def entropy_run(model, tmp_path) -> Path:
    run = tmp_path / "ent"
    write_run_config(run, "entropy_model", model.cfg)
    save_file(model.state_dict(), run / "model.safetensors")
    return run


def patch(capsys, *argv) -> tuple[int, str, str]:
    code = main(["patch", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_precomputes_then_reuses(capsys, data, model, entropy_run):
    code, out, err = patch(capsys, "--data", data.path, "--entropy-model", entropy_run, "--batch-size", 4)
    root = data.path / "entropies" / entropy_model_key(model)
    assert code == 0, err
    assert f"entropies of {data.manifest.total_documents} documents" in out and str(root) in out
    assert "MB/s) on cpu; reused 0.0 MB" in out
    assert json.loads((root / "manifest.json").read_text())["entropy_model"]["run"] == str(entropy_run.resolve())
    code, out, _ = patch(capsys, "--data", data.path, "--entropy-model", entropy_run)
    assert code == 0 and "all finished before; nothing to compute" in out


@pytest.mark.parametrize("case, message", [
    ("missing run", "run directory"),
    ("not a run", "is not a blt run directory (no config.json)"),
    ("BLT run without entropy model", "is a BLT run without an entropy_model/ folder"),
    ("missing data", "is not a directory; prepare data with `blt data prepare"),
    ("not prepared data", "manifest.json is missing"),
    ("with --text", "--text does not go with --data: --data only precomputes entropies for training"),
    ("with --threshold", "--threshold does not go with --data"),
    ("zero batch size", "--batch-size must be at least 1, got 0"),
    ("batch size without --data", "--batch-size is for --data DIR"),
    ("bad device", "device must be auto, cpu, cuda or cuda:N, not 'nowhere'"),
])
def test_bad_input_is_one_clear_line(capsys, data, entropy_run, tmp_path, case, message):
    (tmp_path / "blt_run").mkdir()
    write_run_config(tmp_path / "blt_run", "blt", BLTConfig.preset("tiny"))
    run = ("--entropy-model", entropy_run)
    argv = {
        "missing run": ("--data", data.path, "--entropy-model", tmp_path / "no_run"),
        "not a run": ("--data", data.path, "--entropy-model", tmp_path),
        "BLT run without entropy model": ("--data", data.path, "--entropy-model", tmp_path / "blt_run"),
        "missing data": ("--data", tmp_path / "nowhere", *run),
        "not prepared data": ("--data", tmp_path / "blt_run", *run),
        "with --text": ("--data", data.path, "--text", "hi", *run),
        "with --threshold": ("--data", data.path, "--threshold", 1.0, *run),
        "zero batch size": ("--data", data.path, "--batch-size", 0, *run),
        "batch size without --data": ("--text", "hi", "--batch-size", 2, *run),
        "bad device": ("--data", data.path, "--device", "nowhere", *run),
    }[case]
    code, out, err = patch(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("blt patch: error: ") and err.count("\n") == 1 and message in err
    assert not (data.path / "entropies").exists()


def test_prepare_force_replaces_data_with_precomputed_entropies(tmp_path):
    """`prepare --force` owns the entropies/ folder of the data it replaces (they would be stale)."""
    from blt.data import prepare

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"hello world " * 20)
    prepare([str(corpus)], tmp_path / "out", progress=False)
    (tmp_path / "out" / "entropies" / "0123456789abcdef").mkdir(parents=True)
    (tmp_path / "out" / ".index.npy.0a1b2c.tmp").write_bytes(b"left by an interrupted run")
    prepare([str(corpus)], tmp_path / "out", force=True, progress=False)
    assert not (tmp_path / "out" / "entropies").exists()
    assert not list((tmp_path / "out").glob(".*.tmp"))
