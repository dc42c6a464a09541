"""`prepare` and `PreparedData`: exact round trip, manifest, deterministic split, atomicity, bad inputs."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from blt.data import PreparedData, assign_split, prepare
from blt.data.manifest import MANIFEST_NAME
from blt.data.sources import DocumentSource, Scan
from blt.errors import DataError
from tests.data.corpora import ALL_BYTES, random_corpus, read_documents, write_tree


def test_round_trip_is_exact_and_the_manifest_accounts_for_every_byte(corpus, prepare_dir):
    data = prepare_dir([corpus], val_fraction=0.25, seed=3)
    files = {b"corpus/" + p.relative_to(corpus).as_posix().encode(): p.read_bytes()
             for p in corpus.rglob("*") if p.is_file()}
    train, val = read_documents(data, "train"), read_documents(data, "val")
    assert {**train, **val} == files and not set(train) & set(val)
    assert files[b"corpus/all_bytes.bin"] == ALL_BYTES

    m = data.manifest
    assert m.total_documents == len(files) and m.total_bytes == sum(map(len, files.values()))
    assert m.sources == (str(corpus),) and m.args == {"val_fraction": 0.25, "seed": 3, "shard_bytes": 256 * 2**20}
    for doc in m.documents:
        assert doc.size == len(files[doc.name]) and doc.sha256 == hashlib.sha256(files[doc.name]).hexdigest()
    for shard in m.shards:
        assert shard.sha256 == hashlib.sha256((data.path / shard.file).read_bytes()).hexdigest()
    for split, docs in (("train", train), ("val", val)):
        stats = m.splits[split]
        assert (stats.documents, stats.bytes) == (len(docs), sum(map(len, docs.values())))
        assert np.array_equal(stats.byte_histogram, np.bincount(np.frombuffer(b"".join(docs.values()), np.uint8),
                                                                minlength=256))
    assert json.loads((data.path / MANIFEST_NAME).read_text())["format_version"] == 1


def test_a_single_source_may_be_given_without_a_list(corpus, tmp_path):
    assert prepare(corpus, tmp_path / "out", progress=False).total_documents == 41


def test_small_shards_split_documents_between_them_and_large_documents_get_their_own(tmp_path, prepare_dir):
    root = write_tree(tmp_path / "c", {"big": b"B" * 5000, **random_corpus(20, seed=2)})
    data = prepare_dir([root], val_fraction=0.0, shard_bytes=1000)
    shards = [s.size for s in data.manifest.shards]
    assert len(shards) > 3 and max(shards) == 5000 and all(s <= 1000 for s in shards if s != 5000)
    assert read_documents(data, "train")[b"c/big"] == b"B" * 5000
    assert len(data.split("val")) == 0


def test_split_is_deterministic_by_name_and_seed_and_stable_when_files_are_added(tmp_path, prepare_dir):
    root = write_tree(tmp_path / "c", random_corpus(60, seed=4))

    def split_of(data):
        return {d.name: d.split for d in data.manifest.documents}

    first = split_of(prepare_dir([root], "out_a", val_fraction=0.3, seed=7))
    assert first == split_of(prepare_dir([root], "out_b", val_fraction=0.3, seed=7))
    assert first != split_of(prepare_dir([root], "out_c", val_fraction=0.3, seed=8))
    assert 5 < list(first.values()).count("val") < 35
    write_tree(root, {f"new{i}": b"new" for i in range(20)})
    grown = split_of(prepare_dir([root], "out_d", val_fraction=0.3, seed=7))
    assert {k: grown[k] for k in first} == first


def test_assign_split_hits_the_requested_fraction():
    splits = [assign_split(f"file{i}".encode(), 0, 0.1) for i in range(20000)]
    assert abs(splits.count("val") / len(splits) - 0.1) < 0.01
    assert all(assign_split(f"file{i}".encode(), 0, 0.0) == "train" for i in range(1000))


def test_non_utf8_names_survive_the_json_manifest(tmp_path, prepare_dir):
    root = tmp_path / "c"
    root.mkdir()
    with open(os.fsencode(root) + b"/\xff\xfe.bin", "wb") as f:
        f.write(ALL_BYTES)
    data = prepare_dir([root], val_fraction=0.0)
    assert read_documents(data, "train") == {b"c/\xff\xfe.bin": ALL_BYTES}
    entry = json.loads((data.path / MANIFEST_NAME).read_text(encoding="utf-8"))["documents"][0]
    assert entry["name"] == "c/\\xff\\xfe.bin" and entry["name_hex"] == b"c/\xff\xfe.bin".hex()


def test_existing_output_directory_is_refused_unless_forced_and_foreign_files_are_never_deleted(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prepare([str(corpus)], out, progress=False)  # an existing empty directory is fine
    with pytest.raises(DataError, match="pass --force"):
        prepare([str(corpus)], out, progress=False)
    prepare([str(corpus)], out, progress=False, force=True, seed=1)
    assert PreparedData.open(out).manifest.args["seed"] == 1

    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not prepared data.*notes.txt"):
        prepare([str(corpus)], out, progress=False, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / MANIFEST_NAME).exists()
    with pytest.raises(DataError, match="not a directory"):
        prepare([str(corpus)], out / "notes.txt", progress=False)


def test_missing_manifest_and_corrupt_files_are_errors_naming_the_file(corpus, prepare_dir):
    data = prepare_dir([corpus], val_fraction=0.0)
    shard = data.path / data.manifest.shards[0].file
    raw = bytearray(shard.read_bytes())
    raw[7] ^= 1
    shard.write_bytes(raw)
    with pytest.raises(DataError, match=f"shard {shard} is corrupt"):
        PreparedData.open(data.path)
    PreparedData.open(data.path, verify=False)  # sizes still match: only the sha256 check can tell

    shard.write_bytes(raw[:-1])
    with pytest.raises(DataError, match=f"shard {shard} has {len(raw) - 1} bytes"):
        PreparedData.open(data.path, verify=False)
    (data.path / "index.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="index .*index.npy is corrupt"):
        PreparedData.open(data.path)
    (data.path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DataError, match="manifest.json is not valid JSON"):
        PreparedData.open(data.path)
    (data.path / MANIFEST_NAME).unlink()
    with pytest.raises(DataError, match="manifest.json is missing.*--force"):
        PreparedData.open(data.path)


def test_interrupted_prepare_leaves_nothing_trusted_and_a_forced_rerun_recovers(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = 0
    real_chunks = DocumentSource.chunks

    def failing_chunks(self, chunk_bytes=4 * 2**20):
        nonlocal calls
        calls += 1
        if calls == 30:
            raise KeyboardInterrupt
        yield from real_chunks(self, chunk_bytes)

    monkeypatch.setattr(DocumentSource, "chunks", failing_chunks)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(corpus)], out, shard_bytes=500, val_fraction=0.0, progress=False)
    left = sorted(p.name for p in out.iterdir())
    assert left and MANIFEST_NAME not in left and not any(name.endswith(".tmp") for name in left)
    with pytest.raises(DataError, match="manifest.json is missing"):
        PreparedData.open(out)

    monkeypatch.setattr(DocumentSource, "chunks", real_chunks)
    prepare([str(corpus)], out, force=True, val_fraction=0.0, progress=False)
    assert len(PreparedData.open(out).split("train")) == 41


def test_files_are_streamed_in_chunks(tmp_path):
    path = write_tree(tmp_path, {"f": bytes(range(256)) * 40}) / "f"
    pieces = list(DocumentSource(name=b"f", size=10240, path=str(path)).chunks(chunk_bytes=4096))
    assert [len(p) for p in pieces] == [4096, 4096, 2048] and b"".join(pieces) == path.read_bytes()


def test_a_file_that_changes_while_read_is_an_error(tmp_path, monkeypatch):
    path = write_tree(tmp_path / "c", {"grows.txt": b"now longer"}) / "grows.txt"
    stale = Scan(documents=[DocumentSource(name=b"c/grows.txt", size=3, path=str(path))])
    monkeypatch.setattr("blt.data.writer.scan_sources", lambda sources, exclude: stale)
    with pytest.raises(DataError, match="grows.txt changed while being read"):
        prepare([str(path)], tmp_path / "out", progress=False)


def test_empty_files_are_skipped_and_an_all_empty_corpus_is_an_error(tmp_path, prepare_dir):
    root = write_tree(tmp_path / "c", {"a": b"", "b": b"", "c": b"data"})
    data = prepare_dir([root])
    assert data.manifest.skipped == {"empty": 2} and data.manifest.total_documents == 1
    (root / "c").write_bytes(b"")
    with pytest.raises(DataError, match=r"no documents to prepare.*skipped: 3 empty"):
        prepare([str(root)], tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
    ({"shard_bytes": 0}, "shard_bytes must be positive"),
])
def test_bad_arguments(corpus, tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        prepare([str(corpus)], tmp_path / "out", progress=False, **kwargs)


def test_unknown_split_is_an_error(corpus, prepare_dir):
    with pytest.raises(DataError, match="unknown split 'test'"):
        prepare_dir([corpus]).split("test")
