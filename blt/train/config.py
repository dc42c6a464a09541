"""`TrainConfig`: every setting of a training run, validated, with defaults per model kind and preset."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from blt.config import _JsonConfig, _require


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
    freeze: tuple[str, ...] = ()  # parameters whose names start with one of these are not trained
    lr_scaled: tuple[str, ...] = ()  # parameters whose names start with one of these train at lr x lr_scale
    lr_scale: float = 1.0
    compile: bool = False  # torch.compile the training forward: faster steps after minutes of compiling

    def __post_init__(self):
        object.__setattr__(self, "freeze", tuple(self.freeze))
        object.__setattr__(self, "lr_scaled", tuple(self.lr_scaled))
        _require(all(isinstance(x, str) and x for x in self.freeze + self.lr_scaled),
                 "train.freeze and train.lr_scaled must be lists of parameter-name prefixes")
        _require(math.isfinite(self.lr_scale) and self.lr_scale > 0, f"train.lr_scale must be > 0, not {self.lr_scale}")
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
