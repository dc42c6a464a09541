"""The streaming safetensors writer, conversion plans and the weights-only readers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from blt.errors import CheckpointError
from blt.interop import tensorfile
from blt.interop.tensorfile import (
    SafetensorsReader,
    TorchFileReader,
    plan_tensors,
    write_safetensors,
)

TENSORS = {
    "f32": torch.randn(3, 5),
    "bf16": torch.randn(4, 2).to(torch.bfloat16),
    "i64": torch.arange(-3, 3),
    "flags": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 4),
    "table.0": torch.randn(2, 3),
    "table.1": torch.randn(4, 3),
    "wide": torch.randn(2, 9),  # one row is wider than the smallest block
}


@pytest.mark.parametrize("chunk_bytes", [tensorfile.CHUNK_BYTES, 16], ids=["whole tensors", "blocks of rows"])
def test_streamed_file_equals_its_sources_and_fuses_pieces(chunk_bytes, tmp_path, monkeypatch):
    monkeypatch.setattr(tensorfile, "CHUNK_BYTES", chunk_bytes)
    save_file(TENSORS, tmp_path / "in.safetensors")
    reader = SafetensorsReader.from_file(tmp_path / "in.safetensors")
    expected = {name: tuple(t.shape) for name, t in TENSORS.items() if not name.startswith("table")} | {"table": (6, 3)}
    sources = {name: (name,) for name in expected} | {"table": ("table.0", "table.1")}
    plan = plan_tensors(expected, sources, reader)
    write_safetensors(tmp_path / "out.safetensors", [(plan, reader)], {"format": "pt"})

    out = load_file(tmp_path / "out.safetensors")
    assert out.keys() == expected.keys()
    for name in expected:
        want = torch.cat([TENSORS["table.0"], TENSORS["table.1"]]) if name == "table" else TENSORS[name]
        assert out[name].dtype == want.dtype and torch.equal(out[name], want), name
    assert safe_open(str(tmp_path / "out.safetensors"), "pt").metadata() == {"format": "pt"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("expected, sources, message", [
    ({"f32": (3, 5)}, {"f32": ("f32",)}, "9 unknown tensor"),
    ({"f32": (3, 5), "x": (1,)}, {"f32": ("f32",), "x": ("nope",)}, "missing 1 tensor"),
    ({"f32": (5, 3)}, {"f32": ("f32",)}, "has shape (3, 5), the config expects (5, 3)"),
    ({"table": (7, 3)}, {"table": ("table.0", "table.1")}, "6 rows in all, the config expects 7"),
    ({"mixed": (7, 2)}, {"mixed": ("bf16", "f32b")}, "has shape (3, 5)"),
])
def test_plans_refuse_what_does_not_fit(expected, sources, message, tmp_path):
    save_file(TENSORS | {"f32b": torch.randn(3, 5)}, tmp_path / "in.safetensors")
    reader = SafetensorsReader.from_file(tmp_path / "in.safetensors")
    used = {s for pieces in sources.values() for s in pieces}
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_tensors(expected, sources, reader, ignored=set(reader.infos) - used if "unknown" not in message else ())


def test_fused_pieces_must_share_a_dtype(tmp_path):
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(1, 3, dtype=torch.float16)}, tmp_path / "in.safetensors")
    reader = SafetensorsReader.from_file(tmp_path / "in.safetensors")
    with pytest.raises(CheckpointError, match="mix dtypes"):
        plan_tensors({"ab": (3, 3)}, {"ab": ("a", "b")}, reader)


def test_sharded_index_reads_every_shard(tmp_path):
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    save_file({"b": torch.zeros(3)}, tmp_path / "s2.safetensors")
    (tmp_path / "index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}))
    reader = SafetensorsReader.from_index(tmp_path / "index.json")
    assert torch.equal(reader.read("a"), torch.ones(2)) and reader.infos["b"].shape == (3,)
    (tmp_path / "index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}}))
    with pytest.raises(CheckpointError, match="lacks"):
        SafetensorsReader.from_index(tmp_path / "index.json")


def test_pth_reader_takes_plain_or_nested_state_dicts_and_nothing_else(tmp_path):
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "flat.pth")
    torch.save({"model": {"w": torch.ones(2, 2)}, "step": 10}, tmp_path / "nested.pth")
    for name in ("flat.pth", "nested.pth"):
        reader = TorchFileReader(tmp_path / name)
        assert reader.infos["w"].shape == (2, 2) and torch.equal(reader.read("w"), torch.ones(2, 2))
    torch.save({"model": {"w": torch.ones(1), "lr": 0.1}}, tmp_path / "scalars.pth")
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        TorchFileReader(tmp_path / "scalars.pth")
    (tmp_path / "garbage.pth").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        TorchFileReader(tmp_path / "garbage.pth")
