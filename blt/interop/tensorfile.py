"""Tensor files for conversion, one tensor at a time: lazy readers and a streaming safetensors writer.

A conversion is a *plan*: for every output tensor, its name, shape, dtype and the source tensor (or
tensors, fused along dim 0) that make it up. `plan_tensors` checks a plan against a reader before
anything is written (unknown, missing or mis-shaped tensors are refused, never loaded partially) and
`write_safetensors` streams it: source tensors are read in blocks of rows, each written and dropped
before the next is read, so the memory peak is one block (`CHUNK_BYTES`), never a second copy of the
model or even a whole hash table. (The safetensors library's own `save_file` needs every tensor in
memory and then copies each to bytes.) Sources are memory-mapped, so the pages read show up in the
process's RSS as file-backed pages, which the kernel drops under memory pressure: converting a
2.9 GiB model allocates about 215 MiB at most, most of it torch itself.

Readers never unpickle arbitrary objects: safetensors files are plain data, and a PyTorch ``.pth`` is
opened with ``torch.load(weights_only=True, mmap=True)``, which refuses anything but tensors and plain
containers and maps the tensors instead of reading them.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from blt.errors import CheckpointError
from blt.fileio import AtomicFile

# torch dtype <-> safetensors dtype name (the names in a safetensors header).
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
_HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes
CHUNK_BYTES = 1 << 28  # tensors are copied in blocks of rows of at most this size (or one row)


@dataclass(frozen=True)
class TensorInfo:
    """What a reader knows about a stored tensor without reading it."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class TensorReader:
    """Named tensors read one at a time. Subclasses fill ``infos`` and implement `read`."""

    description: str  # where the tensors come from, for messages
    infos: dict[str, TensorInfo]

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """The tensor ``name``, or only ``rows`` of it (along dim 0)."""
        raise NotImplementedError


class SafetensorsReader(TensorReader):
    """One safetensors file or the shards of a sharded checkpoint, opened lazily (headers only)."""

    def __init__(self, files: dict[str, Path], description: str):
        """``files``: tensor name -> the file holding it (one file for all, or the shards of an index)."""
        self.description = description
        self._handles = {path: _open_safetensors(path) for path in sorted(set(files.values()))}
        self._files = files
        self.infos = {}
        for path, handle in self._handles.items():
            stored = set(handle.keys())
            wanted = {name for name, file in files.items() if file == path}
            if wanted - stored:
                raise CheckpointError(f"{path} lacks {sorted(wanted - stored)[:3]}, which its index places there")
            for name in sorted(wanted):
                view = handle.get_slice(name)
                dtype = _DTYPES.get(view.get_dtype())
                if dtype is None:
                    raise CheckpointError(f"{path}: {name} has dtype {view.get_dtype()}, which blt cannot convert")
                self.infos[name] = TensorInfo(tuple(view.get_shape()), dtype)

    @classmethod
    def from_file(cls, path: Path) -> SafetensorsReader:
        return cls(dict.fromkeys(_open_safetensors(path).keys(), path), str(path))

    @classmethod
    def from_index(cls, index_path: Path) -> SafetensorsReader:
        """A sharded checkpoint: ``*.safetensors.index.json`` maps every tensor to its shard."""
        index = read_json(index_path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index_path} has no weight_map of tensor names to shard files")
        shards = {}
        for shard in set(weight_map.values()):
            path = index_path.parent / shard
            if Path(shard).name != shard or not path.is_file():
                raise CheckpointError(f"{index_path} names shard {shard!r}, which is not a file in {index_path.parent}")
            shards[shard] = path
        return cls({name: shards[shard] for name, shard in weight_map.items()}, str(index_path.parent))

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        path = self._files[name]
        handle = self._handles[path]
        try:
            return handle.get_tensor(name) if rows is None else handle.get_slice(name)[rows]
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot read {name} from {path} (truncated or corrupt?): {_one_line(err)}") from None


class TorchFileReader(TensorReader):
    """A PyTorch ``.pth`` state dict (optionally nested under ``"model"``, as in the reference's
    ``consolidated.pth``), loaded with ``weights_only=True`` and memory-mapped."""

    def __init__(self, path: Path):
        self.description = str(path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:
            raise CheckpointError(f"{path} holds more than tensors and plain containers; blt reads .pth files with "
                                  "torch.load(weights_only=True) and never unpickles other objects") from None
        except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable PyTorch file (truncated or corrupt?): "
                                  f"{_one_line(err)}") from None
        state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} is not a state dict of tensors (nor one under the key 'model')")
        self._state: dict[str, torch.Tensor] = state
        self.infos = {name: TensorInfo(tuple(t.shape), t.dtype) for name, t in state.items()}
        unsupported = sorted(name for name, info in self.infos.items() if info.dtype not in _DTYPE_NAMES)
        if unsupported:
            raise CheckpointError(f"{path}: {unsupported[0]} has dtype {self.infos[unsupported[0]].dtype}, "
                                  "which blt cannot convert")

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        return self._state[name] if rows is None else self._state[name][rows]


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open_safetensors(path: Path):
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                              f"{_one_line(err)}") from None


def read_json(path: Path) -> object:
    """A JSON file, or a one-line CheckpointError saying why it can't be read."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {_one_line(err)}") from None


# --- plans ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: the source tensors ``pieces`` concatenated along dim 0, in order (usually one)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    pieces: tuple[str, ...]


def plan_tensors(
    expected: dict[str, tuple[int, ...]],
    sources: dict[str, tuple[str, ...]],
    reader: TensorReader,
    ignored: Iterable[str] = (),
) -> list[PlannedTensor]:
    """Check that ``reader`` holds exactly the tensors the output needs, with the right shapes.

    ``expected``: output name -> shape. ``sources``: output name -> the source tensors that make it
    up (one, or several fused along dim 0). ``ignored``: reader tensors that belong to another output.
    Raises CheckpointError naming the first missing, unknown or mis-shaped tensors. The output keeps
    the source dtype (a fused tensor's pieces must share one), so no conversion changes a value.
    """
    needed = {source for pieces in sources.values() for source in pieces}
    present = set(reader.infos) - set(ignored)
    missing, unknown = sorted(needed - present), sorted(present - needed)
    if missing or unknown:
        parts = ([f"missing {len(missing)} tensor(s) {missing[:4]}"] if missing else []) + (
            [f"{len(unknown)} unknown tensor(s) {unknown[:4]}"] if unknown else [])
        raise CheckpointError(f"{reader.description} does not match its config: {'; '.join(parts)}")
    plan = []
    for name, shape in expected.items():
        pieces = sources[name]
        infos = [reader.infos[source] for source in pieces]
        if len(pieces) == 1 and infos[0].shape != tuple(shape):
            raise CheckpointError(f"{reader.description}: {pieces[0]} has shape {infos[0].shape}, "
                                  f"the config expects {tuple(shape)}")
        if len(pieces) > 1:
            for source, info in zip(pieces, infos):
                if info.shape[1:] != tuple(shape[1:]) or len(info.shape) != len(shape):
                    raise CheckpointError(f"{reader.description}: {source} has shape {info.shape}, the config "
                                          f"expects rows of {tuple(shape[1:])}")
            rows = sum(info.shape[0] for info in infos)
            if rows != shape[0]:
                raise CheckpointError(f"{reader.description}: {pieces[0]} ... {pieces[-1]} have {rows} rows in all, "
                                      f"the config expects {shape[0]}")
        dtypes = {info.dtype for info in infos}
        if len(dtypes) != 1:
            raise CheckpointError(f"{reader.description}: the pieces of {name} mix dtypes {sorted(map(str, dtypes))}")
        plan.append(PlannedTensor(name, tuple(shape), dtypes.pop(), tuple(pieces)))
    return plan


def write_safetensors(path: Path, parts: list[tuple[list[PlannedTensor], TensorReader]],
                      metadata: dict[str, str] | None = None) -> None:
    """Stream planned tensors into one safetensors file at ``path``, written atomically.

    ``parts``: plans, each with the reader its pieces come from (a BLT and its patcher may come from two
    files). Each piece is read in blocks of rows, each written and dropped before the next is read.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for plan, _ in parts:
        for tensor in plan:
            size = math.prod(tensor.shape) * tensor.dtype.itemsize
            header[tensor.name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                                   "data_offsets": [offset, offset + size]}
            offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % _HEADER_ALIGNMENT)
    with AtomicFile(path) as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for plan, reader in parts:
            for tensor in plan:
                for source in tensor.pieces:
                    for block in _row_blocks(reader, source):
                        # Raw little-endian bytes, without an intermediate copy for contiguous tensors.
                        out.write(memoryview(block.detach().contiguous().reshape(-1).view(torch.uint8).numpy()))


def _row_blocks(reader: TensorReader, name: str) -> Iterator[torch.Tensor]:
    """A stored tensor as consecutive blocks of rows of at most `CHUNK_BYTES` (a scalar as itself)."""
    info = reader.infos[name]
    if not info.shape:
        yield reader.read(name)
        return
    step = max(1, CHUNK_BYTES // max(1, math.prod(info.shape[1:]) * info.dtype.itemsize))
    for start in range(0, info.shape[0], step):
        yield reader.read(name, slice(start, min(start + step, info.shape[0])))
