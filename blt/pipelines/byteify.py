"""Byteifying a token model: a BLT whose global transformer is a trained token model's blocks.

The paper initialises BLT's global model from Llama 3.1, and Ai2's Bolmo byteifies Olmo 3 this way: the
blocks already know language, so only the local encoder and decoder (and the entropy model) start new.
The token model's embedding and LM head are dropped; its blocks become the global transformer unchanged
(same widths, heads, RoPE base and norm epsilon), so on the same inputs they compute the same states.

Sources: a run of `blt train-baseline` (a BPE or byte token model) or a transformers Llama checkpoint
directory (`blt.interop.llama`).

`train_byteified` (`blt byteify`) trains the result in two stages, each an ordinary BLT run under OUT:

1. ``OUT/stage1``: the global model frozen (``train.freeze``); the local models learn to feed it and read
   from it. Patches fall where the source's units start, so the global model sees the units it was trained
   on: the source's BPE token starts (``--patching bpe`` with its ``tokenizer.json``), or one patch per
   byte for a byte-level source. With ``distill_weight`` (``--distill W``) the encoder is also pulled
   toward the inputs the blocks were trained on: the global model's input at each patch toward the source's
   embedding of that patch's token (`blt.train.objectives.EmbeddingDistillObjective`).
2. ``OUT/stage2``: from stage 1's weights, everything trains, the global model at ``global_lr_scale`` times
   the learning rate (``train.lr_scaled``); patching stays, or moves to entropy patching at a chosen patch
   size.

``OUT/stage2`` is the byteified BLT: `blt eval`, `blt generate` and `blt convert --to-hf` take it like any
BLT run. Both stages resume (``resume``), and a finished stage is not run again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blt.baselines.model import TokenModelConfig
from blt.baselines.tokenization import TOKENIZER_FILE
from blt.config import BLTConfig, ConfigError, GlobalConfig
from blt.errors import BLTError, CheckpointError
from blt.fileio import atomic_write_text
from blt.interop.llama import CONFIG_FILE, read_llama
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching.patcher import Patcher
from blt.pipelines.recipes import RunOptions, train_blt
from blt.run import load, read_run_config
from blt.tokenizer import VOCAB_SIZE
from blt.train import read_metrics
from blt.train.metrics import METRICS_FILE
from blt.train.objectives import EmbeddingDistillObjective

BLOCK_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta")


@dataclass
class TokenSource:
    """The token model a BLT is byteified from: its config, its blocks' tensors (our names, without the
    ``transformer.`` prefix) and where it came from."""

    path: Path
    kind: str  # "token_model" (a blt run) or "llama" (a transformers checkpoint)
    config: TokenModelConfig
    blocks: dict[str, torch.Tensor]
    embedding: torch.Tensor | None = None  # the input token table (V, dim), for stage 1's distillation


def read_token_source(path: str | Path) -> TokenSource:
    """A `blt train-baseline` run or a transformers Llama checkpoint directory; one-line errors otherwise."""
    path = Path(path)
    if (path / "config.json").is_file() and _is_blt_run(path):
        run = load(path, expect="token_model")
        state = run.model.state_dict()
        kind, config = "token_model", run.config
    elif (path / CONFIG_FILE).is_file():
        checkpoint = read_llama(path)
        state, kind, config = checkpoint.state_dict, "llama", checkpoint.config
    else:
        raise CheckpointError(f"{path} is neither a blt token-model run (from `blt train-baseline`) nor a "
                              "transformers Llama checkpoint directory")
    blocks = {name[len("transformer."):]: t for name, t in state.items() if name.startswith("transformer.")}
    return TokenSource(path, kind, config, blocks, state.get("embedding.weight"))


def _is_blt_run(path: Path) -> bool:
    try:
        read_run_config(path)
        return True
    except BLTError:
        return False


def global_config_of(config: TokenModelConfig) -> GlobalConfig:
    """The global-model config with exactly the token model's blocks."""
    return GlobalConfig(**{field: getattr(config, field) for field in BLOCK_FIELDS})


def byteified_config(source: TokenSource, base: BLTConfig) -> BLTConfig:
    """``base`` (a preset with the user's overrides) with the source's blocks as its global model."""
    return base.replace(global_model=global_config_of(source.config))


def load_blocks(model: ByteLatentTransformer, source: TokenSource) -> None:
    """Put the source's blocks into ``model``'s global transformer (same shapes, or a `CheckpointError`)."""
    try:
        model.global_model.transformer.load_state_dict(source.blocks, strict=True)
    except RuntimeError as err:  # a source whose tensors disagree with its own config
        raise CheckpointError(f"{source.path}: its blocks do not fit its config ({str(err).splitlines()[0]})") from None


def byteify(source: TokenSource, base: BLTConfig, seed: int = 0) -> ByteLatentTransformer:
    """A BLT with ``base``'s local models (initialised from ``seed``) and the source's blocks as its global
    transformer."""
    model = ByteLatentTransformer(byteified_config(source, base)).init_weights(seed=seed)
    load_blocks(model, source)
    return model


def global_overrides(config: TokenModelConfig) -> list[str]:
    """``global_model.KEY=V`` overrides that give a preset the source's blocks."""
    return [f"global_model.{name}={json.dumps(getattr(config, name))}" for name in BLOCK_FIELDS]


GLOBAL_PREFIX = "global_model."  # the global transformer's parameter names


@dataclass
class ByteifyOptions:
    """What `blt byteify` runs (the CLI's options)."""

    source: Path
    data: Path
    out: Path
    preset: str = "paper-xs"  # the local models' shapes (its global model is replaced by the source's)
    stage1_steps: int = 200
    stage2_steps: int = 200
    global_lr_scale: float = 0.1  # stage 2: the global model's learning rate over the local models'
    patching: str | None = None  # stage 1 (and 2): None = the source's units (bpe for BPE, byte for bytes)
    tokenizer: Path | None = None  # for bpe patching; default: the source run's tokenizer.json
    stage2_patching: str | None = None  # e.g. "entropy"; None: as stage 1
    entropy_model: Path | None = None  # for entropy patching in stage 2
    target_patch_size: float | None = None  # stage 2's entropy patching is calibrated to this
    distill_weight: float = 0.0  # stage 1: weight of `EmbeddingDistillObjective`'s term; 0 = next-byte loss only
    distill_loss: str = "cosine"  # its form: "cosine" or "mse" (`blt.train.objectives.DISTILL_LOSSES`)
    model_overrides: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    precision: str | None = None
    device: str = "auto"
    resume: bool = False
    force: bool = False
    progress: bool = True


def stage1_patching(opts: ByteifyOptions, source: TokenSource) -> tuple[str, Path | None]:
    """Stage 1's patching mode and tokenizer file: the source's units unless ``opts.patching`` says."""
    tokenizer = opts.tokenizer
    source_tokenizer = source.path / TOKENIZER_FILE if source.kind == "token_model" else None
    mode = opts.patching
    if mode is None:
        if source.kind == "token_model" and source_tokenizer.is_file():
            mode = "bpe"
        elif source.kind == "token_model" and source.config.vocab_size == VOCAB_SIZE:
            mode = "byte"
        else:
            raise ConfigError(f"{source.path}: patching at the source's token starts needs its BPE tokenizer; pass "
                              "--tokenizer FILE (a blt tokenizer.json) or choose --patching")
    if mode == "bpe" and tokenizer is None:
        if source_tokenizer is None or not source_tokenizer.is_file():
            raise ConfigError(f"--patching bpe needs a tokenizer: {source.path} has no {TOKENIZER_FILE}; pass --tokenizer FILE")
        tokenizer = source_tokenizer
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise ConfigError(f"--tokenizer {tokenizer} does not exist")
    if mode in ("entropy", "monotonic", "combined"):
        raise ConfigError(f"stage 1 patches at the source's units (bpe, byte, space or static), not {mode}; "
                          "entropy patching belongs to stage 2 (--stage2-patching)")
    return mode, tokenizer if mode == "bpe" else None


def stage1_objective(opts: ByteifyOptions, source: TokenSource, mode: str, tokenizer: Path | None):
    """What stage 1 optimises: None (the plain next-byte loss) without ``distill_weight``, else a builder of an
    `EmbeddingDistillObjective` toward the source's token embeddings, which needs one patch per source
    token: a blt token-model source whose own BPE tokenizer places the patches."""
    if opts.distill_weight == 0:
        return None
    own = source.path / TOKENIZER_FILE if source.kind == "token_model" else None
    if source.kind != "token_model" or source.embedding is None:
        raise ConfigError("--distill needs a blt BPE token-model source (from `blt train-baseline --kind bpe`): its "
                          "embeddings are indexed by the tokens of its own tokenizer")
    if mode != "bpe" or tokenizer is None or own is None or not own.is_file() or \
            Path(tokenizer).read_bytes() != own.read_bytes():
        raise ConfigError("--distill needs stage 1 to patch at the source's own token starts: --patching bpe with "
                          f"the source's {TOKENIZER_FILE} (the default)")
    embedding = source.embedding

    def build(model: ByteLatentTransformer, patcher: Patcher) -> EmbeddingDistillObjective:
        device = next(model.parameters()).device
        return EmbeddingDistillObjective(model, patcher, embedding.to(device), patcher.tokenizer, opts.distill_weight,
                                         opts.distill_loss)

    return build


def _stage_options(opts: ByteifyOptions, stage: str, steps: int, source: TokenSource, train: list[str]) -> RunOptions:
    return RunOptions(data=opts.data, out=opts.out / stage, preset=opts.preset,
                      model_overrides=[*global_overrides(source.config), *opts.model_overrides],
                      train_overrides=[*opts.train_overrides, *train], steps=steps, precision=opts.precision,
                      resume=opts.resume and (opts.out / stage / "config.json").is_file(), force=opts.force,
                      progress=opts.progress, device=opts.device)


def _finished(run: Path) -> bool:
    return (run / "model.safetensors").is_file()


def train_byteified(opts: ByteifyOptions, log=print) -> dict:
    """Both stages (see the module docstring); returns what ``OUT/byteify.json`` records."""
    if opts.stage1_steps < 1 or opts.stage2_steps < 0:
        raise ConfigError("--stage1-steps must be at least 1 and --stage2-steps at least 0")
    if not (opts.global_lr_scale > 0):
        raise ConfigError(f"--global-lr-scale must be > 0, got {opts.global_lr_scale}")
    if opts.stage2_patching in ("entropy", "monotonic", "combined") and opts.entropy_model is None:
        raise ConfigError(f"--stage2-patching {opts.stage2_patching} needs --entropy-model RUN")
    if opts.target_patch_size is not None and opts.stage2_patching is None:
        raise ConfigError("--target-patch-size is for stage 2's entropy patching (--stage2-patching entropy)")
    if not (math.isfinite(opts.distill_weight) and opts.distill_weight >= 0):
        raise ConfigError(f"--distill must be a finite number >= 0, got {opts.distill_weight}")
    source = read_token_source(opts.source)
    mode, tokenizer = stage1_patching(opts, source)
    objective = stage1_objective(opts, source, mode, tokenizer)
    if opts.out.exists() and not opts.out.is_dir():
        raise ConfigError(f"--out {opts.out} exists and is not a directory")
    if opts.out.is_dir() and not (opts.resume or opts.force):
        present = sorted(p.name for p in opts.out.iterdir())
        if present:
            raise ConfigError(f"--out {opts.out} is not empty ({present[0]}); pass --resume to continue or --force "
                              "to start over")
    opts.out.mkdir(parents=True, exist_ok=True)
    record = {"source": str(opts.source), "source_kind": source.kind, "preset": opts.preset,
              "global_lr_scale": opts.global_lr_scale, "distill_weight": opts.distill_weight, "distill_loss": opts.distill_loss if opts.distill_weight else None,
              "stages": {}}
    stage1 = opts.out / "stage1"
    if not (opts.resume and _finished(stage1)):
        distilled = (f", distilling toward its token embeddings ({opts.distill_loss}, weight {opts.distill_weight:g})"
                     if objective else "")
        log(f"byteify: stage 1, {opts.stage1_steps} steps with the source's blocks frozen, {mode} patching"
            f"{distilled} -> {stage1}")
        result = train_blt(_stage_options(opts, "stage1", opts.stage1_steps, source, [f"freeze={json.dumps([GLOBAL_PREFIX])}"]),
                           {"mode": mode}, None, log=log, tokenizer_file=tokenizer,
                           init_model=lambda model: load_blocks(model, source), objective=objective)
        log(result.summary("byteify stage 1"))
    record["stages"]["stage1"] = _stage_record(stage1)
    if opts.stage2_steps == 0:
        _write_record(opts.out, record)
        return record
    stage2 = opts.out / "stage2"
    if not (opts.resume and _finished(stage2)):
        patching = {"mode": opts.stage2_patching or mode}
        if opts.target_patch_size is not None:
            patching["target_patch_size"] = opts.target_patch_size
        state = load(stage1, expect="blt").model.state_dict()
        log(f"byteify: stage 2, {opts.stage2_steps} steps, everything trains, the global model at "
            f"{opts.global_lr_scale:g} x the learning rate, {patching['mode']} patching -> {stage2}")
        train = [f"lr_scaled={json.dumps([GLOBAL_PREFIX])}", f"lr_scale={opts.global_lr_scale!r}"]
        result = train_blt(_stage_options(opts, "stage2", opts.stage2_steps, source, train), patching,
                           opts.entropy_model, log=log,
                           tokenizer_file=tokenizer if patching["mode"] == "bpe" else None,
                           init_model=lambda model: model.load_state_dict(state, strict=True))
        log(result.summary("byteify stage 2"))
    record["stages"]["stage2"] = _stage_record(stage2)
    _write_record(opts.out, record)
    return record


def _stage_record(run: Path) -> dict:
    config = read_run_config(run)
    metrics = read_metrics(run / METRICS_FILE)
    val = [m["val_bpb"] for m in metrics if "val_bpb" in m]
    return {"run": run.name, "steps": config["train"]["steps"], "patching": config["model"]["patching"]["mode"],
            "val_bpb": val[-1] if val else None}


def _write_record(out: Path, record: dict) -> None:
    atomic_write_text(out / "byteify.json", json.dumps(record, indent=2) + "\n")


__all__ = ["BLOCK_FIELDS", "ByteifyOptions", "TokenSource", "byteified_config", "byteify", "global_config_of",
           "global_overrides", "load_blocks", "read_token_source", "stage1_patching", "train_byteified"]
