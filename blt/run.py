"""Run directories: what training leaves behind, and `blt.load(run)` to get it back.

A run directory holds ``config.json`` (its kind, the model config, the training config), the final
``model.safetensors``, ``metrics.jsonl``, ``loss.png`` and ``checkpoints/``. A BLT run also holds a copy
of the entropy model it was patched with under ``entropy_model/``, so one folder is the whole model. A
token-model run (a baseline, `blt.baselines`) records its tokenizer in config.json (``"tokenizer":
{"kind": "bpe" | "byte", ...}``) and keeps a BPE tokenizer beside the weights as ``tokenizer.json``; so
does a BLT run patched by BPE (``"patching_tokenizer"``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from blt.baselines.model import TokenLM, TokenModelConfig
from blt.baselines.tokenization import (
    TOKENIZER_FILE,
    BaselineTokenizer,
    BPETokenizer,
    tokenizer_from_record,
)
from blt.checkpoint import latest_checkpoint, load_tensors
from blt.config import BLTConfig, EntropyModelConfig
from blt.errors import CheckpointError, ConfigError
from blt.fileio import atomic_write_text
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching.entropy_model import EntropyModel
from blt.patching.patcher import Patcher

RunKind = Literal["blt", "entropy_model", "token_model"]
RUN_KINDS: tuple[str, ...] = get_args(RunKind)
KIND_NAMES = {
    "entropy_model": "an entropy-model run (from `blt train-entropy`)",
    "blt": "a BLT run (from `blt train`)",
    "token_model": "a token-model baseline run (from `blt train-baseline`)",
}
RUN_FORMAT_VERSION = 1
ENTROPY_SUBDIR = "entropy_model"


@dataclass
class Run:
    """A loaded run: the model (BLT, entropy model or token model), BLT's patcher's entropy model, a token
    model's tokenizer (or the BPE a BLT run patches by, in mode "bpe"), and the configs."""

    path: Path
    kind: RunKind
    config: BLTConfig | EntropyModelConfig | TokenModelConfig
    model: nn.Module
    entropy_model: EntropyModel | None = None
    info: dict[str, Any] = field(default_factory=dict)
    tokenizer: BaselineTokenizer | None = None

    @property
    def patcher(self) -> Patcher:
        if self.kind != "blt":
            raise ConfigError(f"{self.path} is {KIND_NAMES[self.kind]}; it has no patcher of its own")
        return Patcher(self.config.patching, self.entropy_model, self.tokenizer)


def write_run_config(run_dir: Path, kind: RunKind, model_config, extra: dict[str, Any] | None = None) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"format_version": RUN_FORMAT_VERSION, "kind": kind, "model": model_config.to_dict(), **(extra or {})}
    atomic_write_text(run_dir / "config.json", json.dumps(record, indent=2) + "\n")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a blt run directory (no config.json)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if record.get("kind") not in RUN_KINDS:
        raise CheckpointError(f"{path} does not describe a blt, entropy-model or token-model run")
    return record


def build_model(kind: RunKind, model_config: dict[str, Any]) -> tuple[nn.Module, Any]:
    if kind == "blt":
        cfg = BLTConfig.from_dict(model_config)
        return ByteLatentTransformer(cfg), cfg
    if kind == "token_model":
        cfg = TokenModelConfig.from_dict(model_config)
        return TokenLM(cfg), cfg
    cfg = EntropyModelConfig.from_dict(model_config)
    return EntropyModel(cfg), cfg


def load_weights(model: nn.Module, run_dir: Path, prefer_final: bool = True) -> str:
    """Load the final weights, or the newest valid checkpoint's; returns where they came from."""
    final = Path(run_dir) / "model.safetensors"
    if prefer_final and final.is_file():
        tensors, source = load_tensors(final), str(final)
    else:
        ckpt = latest_checkpoint(Path(run_dir) / "checkpoints")
        if ckpt is None:
            raise CheckpointError(f"{run_dir} has no model.safetensors and no valid checkpoint: has it trained yet?")
        tensors, source = ckpt.model, str(ckpt.path)
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{source} does not match its config: missing {missing[:3]}, unknown {unknown[:3]}")
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(f"{source}: {name} has shape {tuple(t.shape)}, config expects {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=True)
    return source


def load(run_dir: str | Path, expect: RunKind | None = None, device: str | torch.device = "cpu") -> Run:
    """Load a run directory written by `blt train`, `blt train-entropy` or `blt train-baseline` (models in
    eval mode)."""
    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    kind = record["kind"]
    if expect is not None and kind != expect:
        raise CheckpointError(f"{run_dir} is {KIND_NAMES[kind]}, but {KIND_NAMES[expect]} is needed here")
    model, cfg = build_model(kind, record["model"])
    source = load_weights(model, run_dir)
    entropy_model = None
    if kind == "blt" and (run_dir / ENTROPY_SUBDIR).is_dir():
        entropy_model = load(run_dir / ENTROPY_SUBDIR, expect="entropy_model", device=device).model
    elif kind == "entropy_model":
        entropy_model = model
    tokenizer = None
    if kind == "token_model":
        tokenizer = tokenizer_from_record(record, run_dir)
    elif kind == "blt" and cfg.patching.mode == "bpe":  # the BPE it patches by (`blt train --patching bpe`)
        tokenizer = BPETokenizer.load(run_dir / record.get("patching_tokenizer", {}).get("file", TOKENIZER_FILE))
    if kind == "token_model" and tokenizer.vocab_size != cfg.vocab_size:
        raise CheckpointError(f"{run_dir}: its tokenizer has {tokenizer.vocab_size} tokens but its model "
                              f"{cfg.vocab_size}; the run directory is inconsistent")
    info = dict(record, weights=source)
    return Run(path=run_dir, kind=kind, config=cfg, model=model.to(device).eval(),
               entropy_model=entropy_model.to(device).eval() if entropy_model is not None else None, info=info,
               tokenizer=tokenizer)


def copy_entropy_model(source_run: Path, run_dir: Path) -> None:
    """Copy an entropy model's config and final weights into ``run_dir/entropy_model`` (self-contained runs)."""
    source_run = Path(source_run)
    load(source_run, expect="entropy_model")  # validates before copying
    target = Path(run_dir) / ENTROPY_SUBDIR
    tmp = Path(run_dir) / f".{ENTROPY_SUBDIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(source_run / "config.json", tmp / "config.json")
    weights = source_run / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{source_run} has no final model.safetensors; finish its training first")
    shutil.copy2(weights, tmp / "model.safetensors")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
