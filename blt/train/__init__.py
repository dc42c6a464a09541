"""Training: the one loop (`loop`), its settings (`config`), objectives per model kind (`objectives`), atomic
checkpoints (`checkpoint`), ``metrics.jsonl`` (`metrics`), and where it runs (`device`: autocast, DDP, FSDP2)."""

from blt.train.config import TrainConfig, default_train_config, recorded_train_config
from blt.train.device import PRECISIONS, World, autocast, init_distributed, resolve_device
from blt.train.loop import LN2, Objective, Trainer, TrainingError, TrainResult, build_optimizer, count_targets
from blt.train.metrics import METRICS_FILE, append_metrics, keep_metrics_through, plot_metrics, read_metrics

__all__ = [
    "LN2", "METRICS_FILE", "PRECISIONS", "Objective", "TrainConfig", "TrainResult", "Trainer", "TrainingError", "World",
    "append_metrics", "autocast", "build_optimizer", "count_targets", "default_train_config", "init_distributed",
    "keep_metrics_through", "plot_metrics", "read_metrics", "recorded_train_config", "resolve_device",
]
