"""Checkpoints that survive anything: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint is a folder ``step_00000100/`` holding ``model.safetensors``, ``optimizer.safetensors``
and ``state.json`` (step, data position, optimizer hyper-parameters, and the size and sha256 of every
tensor file). It is written under a temporary name and renamed into place, so a crash mid-write leaves
either the previous checkpoints or the new complete one, never a half one under a trusted name.
Loading verifies sizes and checksums and never unpickles anything.

A run's final weights (``model.safetensors``) have their size and sha256 in ``checksums.json`` beside them,
checked when the run is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from blt.errors import CheckpointError
from blt.fileio import atomic_path, atomic_write_text, fsync_dir, temporary_sibling

STATE_FILE = "state.json"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"  # a run's final weights
CHECKSUMS_FILE = "checksums.json"  # beside them: {file name: {"bytes": n, "sha256": hex}}


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors file written atomically (temporary name, fsync, rename)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or foreign file is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone (nothing is allocated). A
    header that lies about its length or about where its tensors lie is a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


# --- final weights with a checksum beside them ----------------------------------------------------

def record_checksum(path: Path) -> None:
    """Record ``path``'s size and sha256 in the ``checksums.json`` of its folder (atomically)."""
    path = Path(path)
    _write_checksum(path.parent, path.name, path.stat().st_size, sha256_of(path))


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Final weights: a safetensors file whose sha256 is recorded in ``checksums.json`` before the file takes
    its name, so that weights under that name always have a record (a kill in between leaves a record that
    the old file, if any, fails: `weights_intact` tells, and the run writes them again)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _write_checksum(path.parent, path.name, tmp.stat().st_size, sha256_of(tmp))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def verify_weights(path: Path) -> bool:
    """Check ``path`` against its record in ``checksums.json``: True when it matches, False when it has no
    record (e.g. weights written by another program); a `CheckpointError` when it differs (corrupt, or
    truncated)."""
    path = Path(path)
    meta = _read_checksums(path.parent).get(path.name)
    if meta is None:
        return False
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (its checksum is recorded in {path.parent / CHECKSUMS_FILE})")
    size = path.stat().st_size
    if size != meta.get("bytes"):
        raise CheckpointError(f"{path} has {size} bytes, but {meta.get('bytes')} are recorded (truncated?); "
                              "train it again, or use a checkpoint")
    if sha256_of(path) != meta.get("sha256"):
        raise CheckpointError(f"{path} fails its sha256 check (corrupt); train it again, or use a checkpoint")
    return True


def weights_intact(path: Path) -> bool:
    """Whether ``path`` exists and does not contradict its recorded checksum (weights with no record count)."""
    try:
        verify_weights(path)
    except CheckpointError:
        return False
    return Path(path).is_file()


def _write_checksum(folder: Path, name: str, size: int, sha256: str) -> None:
    record = _read_checksums(folder)
    record[name] = {"bytes": size, "sha256": sha256}
    atomic_write_text(Path(folder) / CHECKSUMS_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _read_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not all(isinstance(v, dict) for v in record.values()):
        raise CheckpointError(f"{path} is not a checksum record (corrupt?); remove it to load the weights unchecked")
    return record


# --- optimizer state as flat tensors + JSON ------------------------------------------------------

def optimizer_to_tensors(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able hyper-parameters.

    Parameters may be keyed by index (``optimizer.state_dict()``) or by name (a full FSDP state dict).
    """
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_tensors`: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int | str, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        param, key = name.rsplit(".", 1)  # state keys (exp_avg, step, ...) have no dots; parameter names may
        state.setdefault(int(param) if param.isdigit() else param, {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# --- checkpoint folders ---------------------------------------------------------------------------

@dataclass
class Checkpoint:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    state: dict[str, Any]


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def write_checkpoint(
    root: Path,
    step: int,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, torch.Tensor],
    state: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write ``root/step_XXXXXXXX`` atomically; then keep only the newest ``keep_last`` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in (".tmp_step_", ".old_step_"):  # folders of writes that a kill interrupted
        for leftover in root.glob(prefix + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp_{checkpoint_name(step)}_"))
    try:
        files = {}
        for name, tensors in (("model.safetensors", model), ("optimizer.safetensors", optimizer)):
            save_tensors(tmp / name, tensors)
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_of(tmp / name)}
        record = {"format_version": FORMAT_VERSION, "step": step, "files": files, **state}
        atomic_write_text(tmp / STATE_FILE, json.dumps(record, indent=2))
        fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. after an interrupt): replace it whole
            old = root / f".old_{final.name}_{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last is not None:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under root, oldest first (temporary folders of interrupted writes are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check that state.json parses and every file has its recorded size and sha256; return the state."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"checkpoint {path} has no {STATE_FILE} (interrupted write?)")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{state_file} is not valid JSON (corrupt?): {err}") from None
    if not isinstance(state, dict) or "files" not in state or "step" not in state:
        raise CheckpointError(f"{state_file} is not a blt checkpoint state")
    for name, meta in state["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} is missing")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(f"checkpoint file {f} has {size} bytes, expected {meta['bytes']} (truncated?)")
        if sha256_of(f) != meta["sha256"]:
            raise CheckpointError(f"checkpoint file {f} fails its sha256 check (corrupt)")
    return state


def load_checkpoint(path: Path) -> Checkpoint:
    """Verify and load one checkpoint folder."""
    path = Path(path)
    state = verify_checkpoint(path)
    return Checkpoint(
        path=path,
        step=int(state["step"]),
        model=load_tensors(path / "model.safetensors"),
        optimizer=load_tensors(path / "optimizer.safetensors"),
        state=state,
    )


def latest_checkpoint(root: Path, on_skip=None) -> Checkpoint | None:
    """The newest checkpoint under root that verifies; corrupt newer ones are skipped (``on_skip(error)``)."""
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            if on_skip is not None:
                on_skip(err)
    return None
