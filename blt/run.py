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
from blt.config import BLTConfig, EntropyModelConfig
from blt.errors import CheckpointError, ConfigError
from blt.fileio import atomic_write_text
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching.entropy_model import EntropyModel
from blt.patching.patcher import Patcher
from blt.train.checkpoint import (
    WEIGHTS_FILE,
    list_checkpoints,
    load_tensors,
    record_checksum,
    tensor_shapes,
    verify_checkpoint,
    verify_weights,
)

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
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(record, dict) or record.get("kind") not in RUN_KINDS:
        raise CheckpointError(f"{path} does not describe a blt, entropy-model or token-model run")
    if not isinstance(record.get("model"), dict):
        raise CheckpointError(f"{path} holds no model config (\"model\" must be a JSON object)")
    for key in ("train", "tokenizer", "patching_tokenizer", "finetune"):
        if key in record and not isinstance(record[key], dict):
            raise CheckpointError(f"{path}: \"{key}\" must be a JSON object")
    return record


CONFIG_CLASSES = {"blt": BLTConfig, "token_model": TokenModelConfig, "entropy_model": EntropyModelConfig}
_MODEL_CLASSES = {"blt": ByteLatentTransformer, "token_model": TokenLM, "entropy_model": EntropyModel}


def build_model(kind: RunKind, model_config: dict[str, Any], device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """The model a run's config describes (weights not loaded), and its config. On the "meta" device nothing is
    allocated: its shapes are what a run's weights must have."""
    cfg = CONFIG_CLASSES[kind].from_dict(model_config)
    with torch.device(device):
        return _MODEL_CLASSES[kind](cfg), cfg


def expected_shapes(kind: RunKind, model_config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a model of this config has, found without allocating it."""
    model, _ = build_model(kind, model_config, device="meta")
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_shapes(stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str,
                 config: Path) -> None:
    """A one-line `CheckpointError` saying how the weights in ``source`` differ from what ``config`` describes."""
    missing, unknown = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{source} does not match {config}: missing {missing[:3]}, unknown {unknown[:3]}")
    for name, shape in stored.items():
        if shape != expected[name]:
            raise CheckpointError(f"{source} does not match {config}: {name} has shape {shape} in the weights, "
                                  f"the config gives {expected[name]}")


def read_weights(run_dir: Path, expected: dict[str, tuple[int, ...]], prefer_final: bool = True,
                 verify: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The final weights of a run, or its newest valid checkpoint's, checked against ``expected`` shapes from
    the file's header before anything is read, and (``verify``) against their recorded sha256. Returns the
    tensors and where they came from."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    final = run_dir / WEIGHTS_FILE
    if prefer_final and final.is_file():
        check_shapes(tensor_shapes(final), expected, str(final), config)
        if verify:
            verify_weights(final)
        return load_tensors(final), str(final)
    errors = []
    for path in reversed(list_checkpoints(run_dir / "checkpoints")):
        try:
            if verify:
                verify_checkpoint(path)
            weights = path / WEIGHTS_FILE
        except CheckpointError as err:
            errors.append(str(err))
            continue
        check_shapes(tensor_shapes(weights), expected, str(weights), config)
        return load_tensors(weights), str(path)
    why = f" ({errors[0]})" if errors else ""
    raise CheckpointError(f"{run_dir} has no {WEIGHTS_FILE} and no valid checkpoint{why}: has it trained yet?")


def load(run_dir: str | Path, expect: RunKind | None = None, device: str | torch.device = "cpu",
         verify: bool = True) -> Run:
    """Load a run directory written by `blt train`, `blt train-entropy` or `blt train-baseline` (models in
    eval mode). Its config is checked against the weights' shapes before the model is built, and the weights
    against their recorded sha256 (``verify=False`` skips that hash, for huge files)."""
    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    kind = record["kind"]
    if expect is not None and kind != expect:
        raise CheckpointError(f"{run_dir} is {KIND_NAMES[kind]}, but {KIND_NAMES[expect]} is needed here")
    tensors, source = read_weights(run_dir, expected_shapes(kind, record["model"]), verify=verify)
    model, cfg = build_model(kind, record["model"])
    model.load_state_dict(tensors, strict=True)
    del tensors
    entropy_model = None
    if kind == "blt" and (run_dir / ENTROPY_SUBDIR).is_dir():
        entropy_model = load(run_dir / ENTROPY_SUBDIR, expect="entropy_model", device=device, verify=verify).model
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


def copy_entropy_model(source_run: Path, run_dir: Path, config: EntropyModelConfig | None = None) -> None:
    """Copy an entropy model's config and final weights into ``run_dir/entropy_model`` (self-contained runs).
    ``config``: the model config to record instead of the source's (the same weights computing in another
    precision: `EntropyModelConfig.precision`)."""
    source_run = Path(source_run)
    load(source_run, expect="entropy_model")  # validates before copying
    target = Path(run_dir) / ENTROPY_SUBDIR
    tmp = Path(run_dir) / f".{ENTROPY_SUBDIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(source_run / "config.json", tmp / "config.json")
    if config is not None:
        record = read_run_config(tmp)
        atomic_write_text(tmp / "config.json", json.dumps({**record, "model": config.to_dict()}, indent=2) + "\n")
    weights = source_run / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{source_run} has no final {WEIGHTS_FILE}; finish its training first")
    shutil.copy2(weights, tmp / WEIGHTS_FILE)
    record_checksum(tmp / WEIGHTS_FILE)  # verified by the load above
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
