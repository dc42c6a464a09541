"""Where training runs: the device, bf16 autocast, and the processes of a `torchrun` (DDP or FSDP2)."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from blt.errors import BLTError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}  # train.precision -> dtype


def autocast(device_type: str, precision: str) -> torch.autocast:
    """The autocast a precision trains and evaluates under: bf16 autocast for "bf16", none for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    return torch.autocast(device_type, dtype=PRECISIONS[precision], enabled=precision != "fp32")


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.size == 1:
            return values
        nccl = dist.get_backend() == "nccl"  # reduces CUDA tensors only
        t = torch.tensor(values, dtype=torch.float64, device=f"cuda:{torch.cuda.current_device()}" if nccl else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_distributed(device: torch.device | None = None) -> World:
    """Join the process group that torchrun describes in the environment: nccl when this process trains on a
    CUDA ``device`` (default: when torch sees a GPU), gloo on the CPU. Later calls return the same world."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return World()
    if not dist.is_initialized():
        cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def resolve_device(name: str = "auto") -> torch.device:
    """The device a training process runs on: "cpu", "cuda" (under torchrun, GPU ``LOCAL_RANK``), "cuda:N", or
    "auto" (a GPU when torch sees one, else the CPU). A CUDA device becomes the process's current one."""
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise BLTError(f"device must be auto, cpu, cuda or cuda:N, not {name!r}")
    if not torch.cuda.is_available():
        raise BLTError(f"device {name}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    if match.group(1) is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BLTError(f"device {name}: under torchrun each process takes GPU LOCAL_RANK; pass --device cuda (or "
                       "auto), and choose the GPUs with CUDA_VISIBLE_DEVICES")
    index = int(match.group(1) if match.group(1) is not None else os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise BLTError(f"device {name}: there is no GPU {index} (torch sees {torch.cuda.device_count()})")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


# --- the loop --------------------------------------------------------------------------------------


def shard_model(model: nn.Module, device: torch.device, world_size: int) -> None:
    """FSDP2: shard every transformer block and cross-attention, then the rest of the model, over a mesh on
    ``device``'s type (without one, FSDP would pick any GPU it finds, even for a CPU run)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from blt.model.layers import CrossAttention, TransformerBlock

    mesh = init_device_mesh(device.type, (world_size,))
    for module in model.modules():
        if isinstance(module, (TransformerBlock, CrossAttention)):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
