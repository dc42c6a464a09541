"""The one training loop (docs/design.md §4). It trains BLT, the entropy model and the baselines alike: what
differs is an `Objective` (the model and how a batch of ids becomes a loss).

Recipe: AdamW β = (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices, linear warmup then cosine to
10% of the peak LR, grad clip 1.0, optional bf16 autocast (CPU and CUDA), gradient accumulation.
Reliability: checkpoints every N steps and every few minutes (atomic; see `blt.checkpoint`), resume =
never stopping (bit-identical on CPU), a non-finite loss stops the run before it touches the weights,
Ctrl-C saves, and resuming a finished run changes nothing.
Distributed: under ``torchrun`` the same code uses DDP; the global batch is split over ranks and the
loss is normalised by the *global* number of targets, so N processes follow 1 process's curve.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import nn

from blt.checkpoint import (
    WEIGHTS_FILE,
    latest_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_weights,
    weights_intact,
    write_checkpoint,
)
from blt.config import ConfigError, _JsonConfig, _require
from blt.data import (
    ByteBatchIterator,
    PrecomputedEntropies,
    PreparedData,
    validation_batches,
)
from blt.errors import BLTError, CheckpointError
from blt.fileio import atomic_path, atomic_write_text
from blt.model.byte_latent import byte_loss_mask

LN2 = math.log(2.0)
METRICS_FILE = "metrics.jsonl"


class TrainingError(BLTError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}  # train.precision -> dtype


def autocast(device_type: str, precision: str) -> torch.autocast:
    """The autocast a precision trains and evaluates under: bf16 autocast for "bf16", none for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    return torch.autocast(device_type, dtype=PRECISIONS[precision], enabled=precision != "fp32")


@dataclass(frozen=True)
class TrainConfig(_JsonConfig):
    """How to train; the model's own config says what to train."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # sequences per optimizer step, over all processes and accumulation steps
    seq_len: int = 512  # bytes per sequence (BOS included)
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    lr: float = 3e-3  # peak learning rate
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of the peak
    weight_decay: float = 0.1  # on weight matrices only (not norms, embeddings)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast for matmuls, fp32 master weights
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2) the model
    eval_every: int = 200  # steps between validation passes (0 = only at the end)
    eval_batches: int = 16  # validation batches per pass
    checkpoint_every: int = 200  # steps between checkpoints (0 = only at the end)
    checkpoint_minutes: float = 5.0  # also checkpoint when this much time passed since the last (0 = never)
    keep_checkpoints: int = 3  # newest checkpoints kept
    log_every: int = 10  # steps between log lines / metrics records
    seed: int = 0  # model init, data order
    row_order: Literal["shuffled", "stream"] = "shuffled"  # an epoch's rows shuffled, or one after another

    def __post_init__(self):
        _require(self.steps >= 1 and self.batch_size >= 1 and self.grad_accum >= 1, "steps, batch_size, grad_accum must be >= 1")
        _require(self.seq_len >= 2, "train.seq_len must be >= 2")
        _require(self.lr > 0 and 0 <= self.min_lr_ratio <= 1, "train.lr must be > 0 and min_lr_ratio in [0, 1]")
        _require(self.warmup_steps >= 0 and self.weight_decay >= 0 and self.grad_clip >= 0, "warmup_steps, weight_decay, grad_clip must be >= 0")
        _require(self.precision in ("fp32", "bf16"), f"train.precision must be fp32 or bf16, not {self.precision!r}")
        _require(self.parallel in ("ddp", "fsdp"), f"train.parallel must be ddp or fsdp, not {self.parallel!r}")
        _require(self.row_order in ("shuffled", "stream"), f"train.row_order must be shuffled or stream, not {self.row_order!r}")
        _require(self.keep_checkpoints >= 1 and self.log_every >= 1, "keep_checkpoints and log_every must be >= 1")
        _require(self.eval_every >= 0 and self.eval_batches >= 1 and self.checkpoint_every >= 0,
                 "train.eval_every and checkpoint_every must be >= 0 and eval_batches >= 1")
        _require(math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0,
                 f"train.checkpoint_minutes must be a number of minutes >= 0 (0 = no timed checkpoints), "
                 f"not {self.checkpoint_minutes}")

    def lr_at(self, step: int) -> float:
        """Linear warmup to ``lr`` then cosine to ``min_lr_ratio * lr`` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


class Objective(Protocol):
    """A model and how a batch of ids (B, T) becomes a summed loss."""

    model: nn.Module

    def loss_sum(self, model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed next-byte cross-entropy (nats) over counted targets, and stats to log (summed)."""
        ...


def count_targets(ids: torch.Tensor) -> int:
    return int(byte_loss_mask(ids[:, 1:]).sum())


# --- distributed -----------------------------------------------------------------------------------

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

@dataclass
class TrainResult:
    step: int
    train_loss: float
    val_bpb: float | None
    run_dir: Path
    already_complete: bool = False  # a resumed run that had trained all its steps before: nothing was done

    def summary(self, what: str) -> str:
        """One line for the end of a training command, e.g. ``BLT: 400 steps, validation 2.488 bits/byte``."""
        val = f", validation {self.val_bpb:.3f} bits/byte" if self.val_bpb is not None else ""
        done = "already complete at " if self.already_complete else ""
        return f"{what}: {done}{self.step} steps{val} -> {self.run_dir}"


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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per parameter group instead of a dozen foreach passes over every tensor; 3-4x faster
    # on CPU (small preset, 56 M parameters, 1 thread: 37-45 ms per step instead of 118-143 ms)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)


class Trainer:
    """Runs `TrainConfig.steps` optimizer steps of an objective on prepared data, into ``run_dir``."""

    def __init__(
        self,
        objective: Objective,
        data: PreparedData,
        cfg: TrainConfig,
        run_dir: Path,
        world: World | None = None,
        log: Callable[[str], None] | None = None,
        progress: bool = True,
        entropies: PrecomputedEntropies | None = None,
    ):
        """``entropies``: precomputed entropy-model entropies of ``data``; batches then carry them to the
        objective as ``loss_sum(model, ids, entropies)`` (see `blt.data.entropies`)."""
        self.objective = objective
        self.data = data
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.world = world or World()
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.progress = progress and self.world.is_main
        if cfg.batch_size % (self.world.size * cfg.grad_accum):
            raise ConfigError(
                f"train.batch_size {cfg.batch_size} must divide by processes x grad_accum = {self.world.size} x {cfg.grad_accum}"
            )
        self.micro_batch = cfg.batch_size // (self.world.size * cfg.grad_accum)
        self.model = objective.model
        self.device = next(self.model.parameters()).device  # where the caller put the model
        self.wrapped = self.model
        self.sharded = self.world.size > 1 and cfg.parallel == "fsdp"
        if self.sharded:
            shard_model(self.model, self.device, self.world.size)
        elif self.world.size > 1:
            on_gpu = self.device.type == "cuda"
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None)
        self.optimizer = build_optimizer(self.model, cfg)
        self.entropies = entropies
        self.train_iter = ByteBatchIterator(
            data, "train", seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed,
            rank=self.world.rank, world_size=self.world.size, entropies=entropies, order=cfg.row_order,
        )
        validation_batches(data, cfg.seq_len, cfg.batch_size, world_size=self.world.size, rank=self.world.rank,
                           entropies=entropies)  # checks the validation split now, not after the training steps
        self.step = 0
        # targets and patches since the last metrics record; kept in checkpoints, so that the records' sums
        # cover every step also across an interruption between two records
        self.window_counts = {"targets": 0.0, "patches": 0.0}

    # -- checkpoints --
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def full_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Unsharded model and optimizer state (collective under FSDP: every rank must call it)."""
        if not self.sharded:
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.model, self.optimizer, options=options)

    def load_full_state(self, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
        if not self.sharded:
            self.model.load_state_dict(model_state, strict=True)
            self.optimizer.load_state_dict(optimizer_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_state_dict,
        )

        set_state_dict(self.model, self.optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=StateDictOptions(full_state_dict=True, strict=True))

    def save_checkpoint(self) -> Path | None:
        model_state, optimizer_state = self.full_state()
        path = None
        if self.world.is_main:
            opt_tensors, opt_meta = optimizer_to_tensors(optimizer_state)
            opt_tensors["rng.torch"] = torch.random.get_rng_state()
            state = {"optimizer": opt_meta, "data": self.train_iter.state().to_dict(), "train_config": self.cfg.to_dict(),
                     "window_counts": dict(self.window_counts)}
            path = write_checkpoint(self.checkpoint_dir, self.step, model_state, opt_tensors, state,
                                    keep_last=self.cfg.keep_checkpoints)
        self.world.barrier()
        return path

    def resume(self) -> bool:
        """Load the newest valid checkpoint of this run; False if there is none. The run then starts over with
        a new metrics file, after saying so; a run with final weights but no checkpoint is refused instead
        (starting over would overwrite them)."""
        ckpt = latest_checkpoint(self.checkpoint_dir, on_skip=lambda err: self.log(f"skipping checkpoint: {err}"))
        if ckpt is None:
            if (self.run_dir / WEIGHTS_FILE).is_file():
                raise CheckpointError(f"--resume: {self.run_dir} has final weights but no usable checkpoint in "
                                      f"{self.checkpoint_dir}; pass --force instead to train it again from scratch")
            self.log(f"--resume: no usable checkpoint in {self.checkpoint_dir}; starting from step 0 with a new "
                     "metrics.jsonl")
            if self.world.is_main:
                keep_metrics_through(self.run_dir / METRICS_FILE, -1)
            return False
        rng = ckpt.optimizer.pop("rng.torch")
        self.load_full_state(ckpt.model, optimizer_from_tensors(ckpt.optimizer, ckpt.state["optimizer"]))
        torch.random.set_rng_state(rng)
        self.train_iter.load_state(type(self.train_iter.state()).from_dict(ckpt.state["data"]))
        self.window_counts = {"targets": 0.0, "patches": 0.0, **ckpt.state.get("window_counts", {})}
        self.step = ckpt.step
        if self.world.is_main:  # records of steps after the checkpoint will be made again
            keep_metrics_through(self.run_dir / METRICS_FILE, self.step)
        self.log(f"resumed from {ckpt.path} (step {self.step})")
        return True

    # -- one step --
    def _micro_batches(self, batch: torch.Tensor | tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
        """Split a batch (ids, or ids with per-byte entropies) into micro-batches on the device."""
        parts = batch if isinstance(batch, tuple) else (batch,)
        return list(zip(*(part.to(self.device).split(self.micro_batch) for part in parts)))

    def _gradient_sync(self, sync: bool):
        """Skip gradient communication on all but the last micro-batch of an accumulation."""
        if sync or self.world.size == 1:
            return contextlib.nullcontext()
        if self.sharded:
            return _fsdp_no_sync(self.model)
        return self.wrapped.no_sync()

    def _autocast(self):
        return autocast(self.device.type, self.cfg.precision)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        micro = self._micro_batches(next(self.train_iter))  # this rank's rows of the global batch
        # Normalise by the global number of targets so accumulation and DDP equal one big batch.
        local_targets = sum(count_targets(ids) for ids, *_ in micro)
        (global_targets,) = self.world.all_sum([float(local_targets)])
        scale = self.world.size / max(global_targets, 1.0)  # DDP averages gradients over ranks
        loss_sum, stats = 0.0, {}
        for i, (ids, *extra) in enumerate(micro):
            sync = i == len(micro) - 1 or self.world.size == 1
            with self._gradient_sync(sync):
                with self._autocast():
                    loss, micro_stats = self.objective.loss_sum(self.wrapped, ids, *extra)
                (loss * scale).backward()
            loss_sum += loss.item()
            for k, v in micro_stats.items():
                stats[k] = stats.get(k, 0.0) + v
        keys = sorted(stats)
        totals = self.world.all_sum([loss_sum] + [stats[k] for k in keys])
        mean_loss = totals[0] / max(global_targets, 1.0)
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"loss became {mean_loss} at step {self.step + 1}; weights were not updated and the last good "
                f"checkpoint is kept in {self.checkpoint_dir}. Try a lower --set train.lr or fp32 precision"
            )
        grad_norm = float("nan")
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            grad_norm = (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()  # DTensor under FSDP
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        out = {"loss": mean_loss, "bpb": mean_loss / LN2, "targets": global_targets, "grad_norm": grad_norm,
               "lr": cfg.lr_at(self.step - 1)}
        out.update({k: v for k, v in zip(keys, totals[1:])})
        return out

    @torch.no_grad()
    def evaluate(self, batches: int | None = None) -> float:
        """Validation bits per byte over the first ``batches`` validation batches (deterministic)."""
        self.model.eval()
        it = validation_batches(self.data, self.cfg.seq_len, self.cfg.batch_size, world_size=self.world.size,
                                rank=self.world.rank, entropies=self.entropies)
        loss_sum, targets = 0.0, 0.0
        for i, batch in enumerate(it):
            if batches is not None and i >= batches:
                break
            for ids, *extra in self._micro_batches(batch):
                with self._autocast():
                    loss, _ = self.objective.loss_sum(self.model, ids, *extra)
                loss_sum += loss.item()
                targets += count_targets(ids)
        self.model.train()
        loss_sum, targets = self.world.all_sum([loss_sum, targets])
        return loss_sum / max(targets, 1.0) / LN2

    # -- the loop --
    def fit(self, resume: bool = False, on_step: Callable[[int], None] | None = None) -> TrainResult:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            torch.manual_seed(cfg.seed)  # what the run draws depends on its seed alone, not on what its setup drew
        if self.step >= cfg.steps:
            return self._already_complete()
        self.model.train()
        metrics_path = self.run_dir / METRICS_FILE
        bar = _progress(total=cfg.steps, initial=self.step, enabled=self.progress)
        window_start, window_bytes = time.perf_counter(), 0
        last_saved = time.monotonic()
        last, val_bpb = {"loss": float("nan")}, None
        stop_requests, stopped = _StopRequests(), False
        try:
            while self.step < cfg.steps:
                last = self.train_step()
                window_bytes += int(last["targets"])
                self.window_counts["targets"] += last["targets"]
                self.window_counts["patches"] += last.get("patches", 0.0)
                if on_step is not None:
                    on_step(self.step)
                done = self.step == cfg.steps
                evaluate = bool(cfg.eval_every) and self.step % cfg.eval_every == 0
                # A validation pass is always recorded, also at a step that is not a multiple of log_every.
                if self.step % cfg.log_every == 0 or done or evaluate:
                    elapsed = time.perf_counter() - window_start
                    last["bytes_per_s"] = window_bytes / max(elapsed, 1e-9)
                    record = {"step": self.step, **{k: _round(v) for k, v in last.items()}}
                    if "patches" in last:  # over every step since the last record, not only this one
                        targets, patches = self.window_counts["targets"], self.window_counts["patches"]
                        record.update(window_targets=targets, window_patches=patches,
                                      mean_patch_size=_round(targets / max(patches, 1.0)))
                    self.window_counts = {"targets": 0.0, "patches": 0.0}
                    window_start, window_bytes = time.perf_counter(), 0
                    if evaluate or done:
                        val_bpb = self.evaluate(cfg.eval_batches)
                        record["val_bpb"] = _round(val_bpb)
                    if self.world.is_main:
                        append_metrics(metrics_path, record)
                    bar.set_postfix_str(_postfix(record), refresh=False)
                bar.update(1)
                due = bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0
                timed = bool(cfg.checkpoint_minutes) and time.monotonic() - last_saved >= 60 * cfg.checkpoint_minutes
                timed, stop = self._any_process([timed, stop_requests.requested])  # a kill loses at most the timer's work
                if due or done or timed or stop:
                    path = self.save_checkpoint()
                    last_saved = time.monotonic()
                if stop and not done:
                    stopped = True  # on every process, also those that got no signal themselves
                    bar.close()
                    self.log(f"stopped at step {self.step} by a signal; saved {path}; continue with --resume")
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            if not (stopped or stop_requests.requested):  # raised by the code it interrupted: the step is whole
                path = self.save_checkpoint()
                self.log(f"interrupted at step {self.step}; saved {path}; continue with --resume")
            raise
        finally:
            stop_requests.release()
        bar.close()
        self._save_final_weights()
        return TrainResult(step=self.step, train_loss=last["loss"], val_bpb=val_bpb, run_dir=self.run_dir)

    def _any_process(self, flags: list[bool]) -> list[bool]:
        """Each flag true on every process when it is true on any (all of them then act together)."""
        if self.world.size == 1:
            return flags
        return [total > 0 for total in self.world.all_sum([float(f) for f in flags])]

    def _save_final_weights(self) -> None:
        model_state, _ = self.full_state()
        if self.world.is_main:
            save_weights(self.run_dir / WEIGHTS_FILE, model_state)
            plot_metrics(self.run_dir / METRICS_FILE, self.run_dir / "loss.png")
        self.world.barrier()

    def _already_complete(self) -> TrainResult:
        """A resumed run that trained all its steps before: left as it was (its final weights are written only
        when a kill came between its last checkpoint and them, or in the middle of writing them)."""
        if not weights_intact(self.run_dir / WEIGHTS_FILE):
            self.log(f"step {self.step} was the last; writing the final weights")
            self._save_final_weights()
        records = read_metrics(self.run_dir / METRICS_FILE)
        validated = [r["val_bpb"] for r in records if "val_bpb" in r]
        return TrainResult(step=self.step, train_loss=records[-1]["loss"] if records else float("nan"),
                           val_bpb=validated[-1] if validated else None, run_dir=self.run_dir, already_complete=True)


class _StopRequests:
    """While training runs in the main thread, SIGINT (Ctrl-C) and SIGTERM (what schedulers send before
    SIGKILL) ask it to stop: the step under way finishes, a checkpoint is saved, and `fit` raises
    KeyboardInterrupt. A second signal stops at once (from its last checkpoint)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def release(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _round(v: float) -> float:
    return round(float(v), 5) if math.isfinite(float(v)) else float(v)


def _postfix(record: dict[str, Any]) -> str:
    parts = [f"loss {record['loss']:.3f}", f"bpb {record['bpb']:.3f}"]
    if "val_bpb" in record:
        parts.append(f"val {record['val_bpb']:.3f}")
    parts.append(f"{record['bytes_per_s']:,.0f} B/s")
    if "mean_patch_size" in record:
        parts.append(f"patch {record['mean_patch_size']:.2f}")
    return " ".join(parts)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, file=sys.stderr)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A last line cut short (a run killed while appending it) is left
    out; any other line that is not a JSON record with a step is a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        elif number < len(lines):  # not the unfinished last line
            raise CheckpointError(f"{path} line {number} is not a metrics record (corrupt?); remove that line")
    return records


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """One record as one line at the end of ``metrics.jsonl`` (a kill in the middle leaves a partial last line,
    which `read_metrics` leaves out and a resume removes)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def keep_metrics_through(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` (atomically, and only when that changes it) to its records up to ``step``."""
    path = Path(path)
    if not path.is_file():
        return
    text = "".join(json.dumps(r) + "\n" for r in read_metrics(path) if r["step"] <= step)
    if path.read_bytes() != text.encode():
        atomic_write_text(path, text)


def plot_metrics(metrics_path: Path, out_png: Path) -> Path | None:
    """Training and validation bits-per-byte against step, as a PNG."""
    records = read_metrics(metrics_path)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in records], [r["bpb"] for r in records], label="train")
    val = [r for r in records if "val_bpb" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_bpb"] for r in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)


def recorded_train_config(record: dict[str, Any]) -> TrainConfig:
    """The training config a run's config.json records; runs from before rows were shuffled took them in
    stream order, and go on so."""
    return TrainConfig.from_dict({"row_order": "stream", **record})


def default_train_config(kind: str, preset: str) -> TrainConfig:
    """Training defaults per model kind and preset; `tiny` finishes in minutes on 2 CPU cores."""
    small = {"steps": 5000, "batch_size": 32, "seq_len": 1024, "warmup_steps": 200, "eval_every": 500,
             "checkpoint_every": 500}
    large = {"steps": 100_000, "batch_size": 64, "seq_len": 4096, "warmup_steps": 2000, "lr": 4e-4,
             "eval_every": 2000, "checkpoint_every": 2000, "precision": "bf16"}
    table = {
        ("entropy_model", "tiny"): {"steps": 400, "batch_size": 16, "seq_len": 512, "warmup_steps": 40, "lr": 4e-3,
                                    "eval_every": 200, "checkpoint_every": 200},
        ("blt", "tiny"): {"steps": 400, "batch_size": 16, "seq_len": 512, "warmup_steps": 40, "lr": 2e-3,
                          "eval_every": 200, "checkpoint_every": 200},
        ("entropy_model", "small"): small,
        ("blt", "small"): dict(small, lr=1e-3),
        ("blt", "paper-xs"): {"steps": 400, "batch_size": 16, "seq_len": 512, "warmup_steps": 40, "lr": 2e-3,
                              "eval_every": 200, "checkpoint_every": 200},
        ("blt", "paper-s"): dict(small, lr=1e-3),
    }
    return TrainConfig(**table.get((kind, preset), large))
