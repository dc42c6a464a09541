"""The one training loop (docs/design.md §4). It trains BLT, the entropy model and the baselines alike: what
differs is an `Objective` (the model and how a batch of ids becomes a loss).

Recipe: AdamW β = (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices, linear warmup then cosine to
10% of the peak LR, grad clip 1.0, optional bf16 autocast (CPU and CUDA), gradient accumulation.
Reliability: checkpoints every N steps and every few minutes (atomic; see `blt.train.checkpoint`), resume =
never stopping (bit-identical on CPU), a non-finite loss stops the run before it touches the weights,
Ctrl-C saves, and resuming a finished run changes nothing.
Distributed: under ``torchrun`` the same code uses DDP; the global batch is split over ranks and the
loss is normalised by the *global* number of targets, so N processes follow 1 process's curve.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from blt.config import ConfigError
from blt.data import (
    ByteBatchIterator,
    PrecomputedEntropies,
    PreparedData,
    validation_batches,
)
from blt.errors import BLTError, CheckpointError
from blt.model.byte_latent import byte_loss_mask
from blt.train.checkpoint import (
    WEIGHTS_FILE,
    latest_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_weights,
    weights_intact,
    write_checkpoint,
)
from blt.train.config import TrainConfig
from blt.train.device import World, _fsdp_no_sync, autocast, compile_module, shard_model, slow_bf16_warning
from blt.train.metrics import METRICS_FILE, append_metrics, keep_metrics_through, plot_metrics, read_metrics

LN2 = math.log(2.0)


class TrainingError(BLTError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


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


def freeze_parameters(model: nn.Module, prefixes: tuple[str, ...]) -> int:
    """Stop training the parameters whose names start with one of ``prefixes``; returns how many tensors.
    A prefix that names no parameter is a `ConfigError`."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise ConfigError(f"train.freeze: no parameter name starts with {prefix!r}")
    frozen = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on matrices only, and those named by
    ``cfg.lr_scaled`` in groups of their own whose ``lr_scale`` the schedule multiplies (`Trainer.train_step`)."""
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and "embedding" not in name
        scaled = bool(cfg.lr_scaled) and name.startswith(cfg.lr_scaled)
        buckets.setdefault((scaled, is_matrix), []).append(p)
    if cfg.lr_scaled and not any(scaled for scaled, _ in buckets):
        raise ConfigError(f"train.lr_scaled: no trainable parameter name starts with one of {list(cfg.lr_scaled)}")
    groups = [{"params": buckets.get((False, True), []), "weight_decay": cfg.weight_decay},
              {"params": buckets.get((False, False), []), "weight_decay": 0.0}]
    if cfg.lr_scaled:
        groups += [{"params": buckets.get((True, True), []), "weight_decay": cfg.weight_decay, "lr_scale": cfg.lr_scale},
                   {"params": buckets.get((True, False), []), "weight_decay": 0.0, "lr_scale": cfg.lr_scale}]
    # fused: one kernel per parameter group instead of a dozen foreach passes over every tensor, several
    # times faster on CPU (benchmarks/README.md)
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
        freeze_parameters(self.model, cfg.freeze)  # before DDP, which then leaves the frozen ones alone
        self.device = next(self.model.parameters()).device  # where the caller put the model
        if self.world.is_main and (warning := slow_bf16_warning(self.device, cfg.precision)):
            self.log(warning)
        self.wrapped = self.model
        self.sharded = self.world.size > 1 and cfg.parallel == "fsdp"
        if self.sharded:
            shard_model(self.model, self.device, self.world.size)
        elif self.world.size > 1:
            on_gpu = self.device.type == "cuda"
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None)
        if cfg.compile:  # the training forward only: validation keeps the eager model (no second compile)
            self.wrapped = compile_module(self.wrapped)
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
            group["lr"] = cfg.lr_at(self.step) * group.get("lr_scale", 1.0)
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
        stop_requests, stopped, stopped_at_last_step = _StopRequests(), False, False
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
                stopped_at_last_step = stop and done  # every process agrees (the flag is all-reduced)
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
        if stopped_at_last_step:  # asked during the last step: done and saved, and the caller stops too
            self.log(f"stopped by a signal at the last step ({self.step}); the run is complete")
            raise KeyboardInterrupt
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
