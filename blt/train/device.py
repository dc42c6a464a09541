"""Where training runs: the device, bf16 autocast, and the processes of a `torchrun` (DDP or FSDP2)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
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


def compile_module(module: nn.Module) -> nn.Module:
    """``torch.compile(module)``, as ``train.compile`` trains and ``blt bench training --compile`` times it.

    The training forwards compile into one graph each (tests/train/test_train.py): the objectives validate
    their inputs on the host first, a compiled `CausalMask` skips its one-document shortcut, and compiled
    attention applies RoPE in real arithmetic.
    """
    return torch.compile(module)


def matmul_flops_per_s(dtype: torch.dtype, size: int, repeats: int, device: torch.device | str = "cpu",
                       seed: int = 0) -> float:
    """Best achieved FLOP/s of a ``size × size`` by ``size × size`` matmul in ``dtype`` on ``device``, over
    ``repeats`` timed calls after one warmup; on a GPU each timing waits for the queued work."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


BF16_PROBE_SIZE = 256  # a bf16 matmul this wide takes ~25 ms even where bf16 has no hardware support


@dataclass(frozen=True)
class Bf16Probe:
    """fp32 and bf16 matmul FLOP/s of one small square matmul on a device, measured in the same moment."""

    device: str
    fp32_flops_per_s: float
    bf16_flops_per_s: float

    @property
    def speedup(self) -> float:
        """How many times faster bf16 matmuls run than fp32 ones (about 2-6 with native bf16, 1/50 without)."""
        return self.bf16_flops_per_s / self.fp32_flops_per_s

    @property
    def slow(self) -> bool:
        """bf16 runs at under half the fp32 speed: the CPU emulates bf16 (no AVX512-BF16 or AMX), so bf16
        autocast costs far more than it saves."""
        return self.speedup < 0.5

    def describe(self) -> str:
        return (f"bf16 matmuls run at {self.bf16_flops_per_s / 1e9:.1f} GFLOP/s on this {self.device} against "
                f"{self.fp32_flops_per_s / 1e9:.1f} in fp32 ({self.speedup:.2g}x)")


@functools.lru_cache(maxsize=None)
def probe_bf16(device: str = "cpu") -> Bf16Probe:
    """Time a `BF16_PROBE_SIZE`-wide matmul in fp32 and in bf16 on ``device`` (about 0.1 s on a CPU without
    native bf16); cached per device, so training, eval and `blt bench` pay for it once per process."""
    fp32 = matmul_flops_per_s(torch.float32, BF16_PROBE_SIZE, 3, device)
    bf16 = matmul_flops_per_s(torch.bfloat16, BF16_PROBE_SIZE, 3, device)
    return Bf16Probe(str(torch.device(device)), fp32, bf16)


def slow_bf16_warning(device: torch.device | str, precision: str) -> str | None:
    """One line for a user who asked for bf16 on a device where it is emulated (`Bf16Probe.slow`); None when
    the precision is fp32 or bf16 is fast there."""
    if precision != "bf16":
        return None
    probe = probe_bf16(str(torch.device(device)))
    if not probe.slow:
        return None
    why = (f"this CPU has no native bf16 (torch's CPU capability: {torch.backends.cpu.get_cpu_capability()})"
           if torch.device(device).type == "cpu" else "this device emulates bf16")
    return f"warning: {probe.describe()}: {why}, so --precision fp32 will be much faster"


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
