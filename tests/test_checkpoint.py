"""Checkpoints: atomic writes, checksums that catch truncation and corruption, optimizer round trips."""

from __future__ import annotations

import json

import pytest
import torch

from blt.errors import CheckpointError
from blt.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_tensors,
    write_checkpoint,
)


def tiny_state(step: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((4, 3), float(step)), "b": torch.arange(3.0)}


def test_write_and_load(tmp_path):
    path = write_checkpoint(tmp_path, 5, tiny_state(5), {"x": torch.ones(2)}, {"data": {"epoch": 1}})
    ckpt = load_checkpoint(path)
    assert ckpt.step == 5 and ckpt.state["data"] == {"epoch": 1}
    assert torch.equal(ckpt.model["w"], tiny_state(5)["w"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_keep_last(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, tiny_state(step), {}, {}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_state", "garble_state"])
def test_damaged_checkpoint_is_named_and_skipped(tmp_path, damage):
    write_checkpoint(tmp_path, 1, tiny_state(1), {}, {})
    newest = write_checkpoint(tmp_path, 2, tiny_state(2), {}, {})
    target = newest / "model.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    elif damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[-1] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "delete_state":
        (newest / "state.json").unlink()
    else:
        (newest / "state.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="step_00000002"):
        load_checkpoint(newest)
    skipped = []
    ckpt = latest_checkpoint(tmp_path, on_skip=skipped.append)
    assert ckpt is not None and ckpt.step == 1 and len(skipped) == 1


def test_interrupted_write_leaves_no_trusted_folder(tmp_path):
    """A crash before the rename leaves only a dot-folder, which is never listed or loaded."""
    write_checkpoint(tmp_path, 1, tiny_state(1), {}, {})
    (tmp_path / ".tmp_step_00000002_xyz").mkdir()
    (tmp_path / ".tmp_step_00000002_xyz" / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]
    assert latest_checkpoint(tmp_path).step == 1


def test_safetensors_errors_are_one_line(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_tensors(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tensors(tmp_path / "missing.safetensors")


def test_optimizer_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = optimizer_to_tensors(opt.state_dict())
    save_tensors(tmp_path / "opt.safetensors", tensors)
    meta = json.loads(json.dumps(meta))
    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(clone.parameters(), lr=5.0)
    opt2.load_state_dict(optimizer_from_tensors(load_tensors(tmp_path / "opt.safetensors"), meta))
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (clone, opt2)):
        m(x).pow(2).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))
