"""Whole-checkpoint conversion between blt run directories and other BLT implementations' layouts.

- `convert_from_hf`: a transformers ``BltForCausalLM`` directory (``config.json`` with
  ``model.safetensors``, or sharded ``model.safetensors.index.json`` + shards) -> a blt run. The bundled
  patcher (``model.patcher.*``, ``patcher_config``) becomes the run's ``entropy_model/``.
- `convert_to_hf`: a blt run -> a directory ``BltForCausalLM.from_pretrained`` loads, with the run's
  entropy model as the patcher when the run patches with a global entropy threshold.
- `convert_from_bytelatent`: the reference release (``config.json`` ``{"args"}`` + ``model.safetensors``,
  or ``params.json`` + ``consolidated.pth``; the entropy model's ``params.json`` + ``consolidated.pth``)
  -> a blt run; ``.pth`` files are read with ``torch.load(weights_only=True)``, which unpickles no code.

Every conversion first plans every output tensor from the source headers and our model's expected
names and shapes (built on the meta device, so nothing is allocated), refusing unknown, missing or
mis-shaped tensors; then it streams the tensors one at a time into a staging directory that is renamed
into place only when complete. Values and dtypes are copied unchanged, so conversions round-trip bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blt.config import BLTConfig, EntropyModelConfig, PatchingConfig
from blt.errors import CheckpointError
from blt.fileio import atomic_write_text, fsync_dir
from blt.interop.bytelatent import (
    blt_config_from_reference,
    entropy_config_from_reference,
    reference_entropy_name,
    reference_sources,
)
from blt.interop.hf import (
    PATCHER_PREFIX,
    blt_config_from_hf,
    entropy_config_from_hf,
    hf_entropy_name,
    hf_model_config,
    hf_name,
)
from blt.interop.tensorfile import (
    PlannedTensor,
    SafetensorsReader,
    TensorReader,
    TorchFileReader,
    plan_tensors,
    read_json,
    write_safetensors,
)
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching.entropy_model import EntropyModel
from blt.run import ENTROPY_SUBDIR, KIND_NAMES, read_run_config, write_run_config
from blt.train.checkpoint import record_checksum, verify_weights

WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
_METADATA = {"format": "pt"}  # transformers refuses safetensors files without it


@dataclass
class Conversion:
    """What a conversion wrote: the output directory, the configs, and notes for the user."""

    out: Path
    config: BLTConfig
    entropy_config: EntropyModelConfig | None
    parameters: int
    entropy_parameters: int = 0
    notes: list[str] = field(default_factory=list)


def expected_shapes(model_class: Callable[[Any], nn.Module], config: Any) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of ``model_class(config)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = model_class(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _count(plan: list[PlannedTensor]) -> int:
    return sum(math.prod(tensor.shape) for tensor in plan)


@contextlib.contextmanager
def staged_directory(out: Path, source: Path, force: bool) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out``; on success it replaces ``out`` whole, on failure
    it is removed. ``out`` may be missing or empty; anything else needs ``force``. It must not be the
    ``source`` being converted, nor contain it, nor lie inside it."""
    out = Path(out)
    if source.resolve() == out.resolve() or out.resolve() in source.resolve().parents:
        raise CheckpointError(f"--out {out} would replace the source {source}; write somewhere else")
    if source.resolve() in out.resolve().parents:
        raise CheckpointError(f"--out {out} lies inside the source {source}; write somewhere else")
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a directory")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise CheckpointError(f"--out {out}: {blocking} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CheckpointError(f"{out} already exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        yield staging
        for directory in [*(p for p in staging.rglob("*") if p.is_dir()), staging]:
            fsync_dir(directory)
        if out.exists():
            old = out.parent / f".{out.name}.old-{secrets.token_hex(6)}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _json_object(path: Path, what: str) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object; is it {what}?")
    return data


def _source_dir(src: Path, what: str) -> Path:
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src} does not exist")
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a directory; give {what}")
    return src


def _write_conversion(out, src, force: bool, config, plan, reader, entropy, source_format: str,
                      notes: list[str]) -> Conversion:
    """Write the converted run into ``out`` through a staging directory, and say what was converted."""
    with staged_directory(out, src, force) as staging:
        _write_run(staging, config, plan, reader, entropy, {"format": source_format, "path": str(src)})
    return Conversion(Path(out), config, entropy[0] if entropy else None, _count(plan),
                      _count(entropy[1]) if entropy else 0, notes)


def _write_run(staging: Path, config: BLTConfig, plan: list[PlannedTensor], reader: TensorReader,
               entropy: tuple[EntropyModelConfig, list[PlannedTensor], TensorReader] | None,
               origin: dict[str, str]) -> None:
    write_run_config(staging, "blt", config, {"converted_from": origin})
    write_safetensors(staging / WEIGHTS, [(plan, reader)], _METADATA)
    record_checksum(staging / WEIGHTS)  # checked whenever the run is loaded, as a trained run's
    if entropy is not None:
        entropy_config, entropy_plan, entropy_reader = entropy
        write_run_config(staging / ENTROPY_SUBDIR, "entropy_model", entropy_config, {"converted_from": origin})
        write_safetensors(staging / ENTROPY_SUBDIR / WEIGHTS, [(entropy_plan, entropy_reader)], _METADATA)
        record_checksum(staging / ENTROPY_SUBDIR / WEIGHTS)


# --- transformers -> blt ---------------------------------------------------------------------------

def open_hf_weights(src: Path) -> SafetensorsReader:
    """The tensors of a transformers directory: ``model.safetensors`` or a sharded index."""
    if (src / WEIGHTS).is_file():
        return SafetensorsReader.from_file(src / WEIGHTS)
    if (src / SHARD_INDEX).is_file():
        return SafetensorsReader.from_index(src / SHARD_INDEX)
    raise CheckpointError(f"{src} has neither {WEIGHTS} nor {SHARD_INDEX} (pickled pytorch_model.bin files are "
                          "not read); re-save the model with save_pretrained(), which writes safetensors")


def convert_from_hf(src: Path, out: Path, force: bool = False) -> Conversion:
    """A transformers BltForCausalLM directory -> a blt run directory at ``out`` (see the module notes)."""
    src = _source_dir(src, "a transformers BltForCausalLM directory (from save_pretrained)")
    hf = _json_object(src / "config.json", "a transformers BltForCausalLM config")
    if hf.get("model_type") != "blt":
        raise CheckpointError(f"{src / 'config.json'} has model_type {hf.get('model_type')!r}, not 'blt'; "
                              "is this a BltForCausalLM directory?")
    config = blt_config_from_hf(hf)
    reader = open_hf_weights(src)
    patcher_names = {name for name in reader.infos if name.startswith(PATCHER_PREFIX)}
    has_patcher = bool(hf.get("patch_in_forward", True))  # transformers' default builds a patcher

    expected = expected_shapes(ByteLatentTransformer, config)
    plan = plan_tensors(expected, {name: (hf_name(name),) for name in expected}, reader,
                        ignored=patcher_names if has_patcher else ())
    entropy = None
    notes = []
    if has_patcher:
        if not isinstance(hf.get("patcher_config"), dict):
            raise CheckpointError(f"{src / 'config.json'} sets patch_in_forward but has no patcher_config")
        entropy_config = entropy_config_from_hf(hf["patcher_config"])
        entropy_expected = expected_shapes(EntropyModel, entropy_config)
        entropy_plan = plan_tensors(entropy_expected, {name: (hf_entropy_name(name),) for name in entropy_expected},
                                    reader, ignored=set(reader.infos) - patcher_names)
        entropy = (entropy_config, entropy_plan, reader)
    elif config.patching.uses_entropy_model:
        notes.append(f"{src} has no patcher (patch_in_forward is false): patching mode {config.patching.mode!r} "
                     f"needs an entropy model; copy one into {Path(out) / ENTROPY_SUBDIR}")
    return _write_conversion(out, src, force, config, plan, reader, entropy, "transformers", notes)


# --- blt -> transformers ---------------------------------------------------------------------------

def convert_to_hf(run: Path, out: Path, threshold: float | None = None, force: bool = False) -> Conversion:
    """A blt run -> a transformers BltForCausalLM directory (``config.json`` + ``model.safetensors``).

    ``threshold`` replaces the run's patching threshold (needed when the run only has a target patch
    size). The run's entropy model becomes the patcher when the run patches with a global threshold;
    transformers' patcher can do nothing else, so other runs are exported without it (see the notes).
    """
    run = _source_dir(run, "a blt run directory")
    record = read_run_config(run)
    if record["kind"] != "blt":
        raise CheckpointError(f"{run} is {KIND_NAMES[record['kind']]}; --to-hf converts a BLT run (its entropy model "
                              f"goes along from the run's {ENTROPY_SUBDIR}/)")
    config = BLTConfig.from_dict(record["model"])
    if threshold is not None:
        config = config.replace(patching=config.patching.replace(threshold=threshold))
    verify_weights(run / WEIGHTS)  # against the sha256 the run recorded, if any
    reader = SafetensorsReader.from_file(run / WEIGHTS)
    expected = expected_shapes(ByteLatentTransformer, config)
    parts = [(plan_tensors({hf_name(n): s for n, s in expected.items()}, {hf_name(n): (n,) for n in expected}, reader),
              reader)]
    notes = []
    entropy_config = None
    if (run / ENTROPY_SUBDIR).is_dir():
        entropy_record = read_run_config(run / ENTROPY_SUBDIR)
        if entropy_record["kind"] != "entropy_model":
            raise CheckpointError(f"{run / ENTROPY_SUBDIR} is not an entropy-model run")
        if config.patching.mode == "entropy":
            entropy_config = EntropyModelConfig.from_dict(entropy_record["model"])
            verify_weights(run / ENTROPY_SUBDIR / WEIGHTS)
            entropy_reader = SafetensorsReader.from_file(run / ENTROPY_SUBDIR / WEIGHTS)
            entropy_expected = expected_shapes(EntropyModel, entropy_config)
            parts.append((plan_tensors({hf_entropy_name(n): s for n, s in entropy_expected.items()},
                                       {hf_entropy_name(n): (n,) for n in entropy_expected}, entropy_reader),
                          entropy_reader))
        else:
            notes.append(f"transformers' patcher patches only with a global entropy threshold and {run} patches in "
                         f"mode {config.patching.mode!r}: the entropy model was left out (patch_in_forward is false); "
                         "pass patch_lengths to BltForCausalLM")
    elif config.patching.uses_entropy_model:
        notes.append(f"{run} has no {ENTROPY_SUBDIR}/: exported without a patcher; pass patch_lengths to BltForCausalLM")
    else:
        notes.append(f"{run} patches in mode {config.patching.mode!r}, which transformers' patcher cannot do: exported "
                     "without a patcher; pass patch_lengths to BltForCausalLM (blt's Patcher computes them)")
    hf_config = hf_model_config(config, entropy_config)
    with staged_directory(out, run, force) as staging:
        atomic_write_text(staging / "config.json", json.dumps(hf_config, indent=2) + "\n")
        write_safetensors(staging / WEIGHTS, parts, _METADATA)
    return Conversion(Path(out), config, entropy_config, _count(parts[0][0]),
                      _count(parts[1][0]) if len(parts) > 1 else 0, notes)


# --- bytelatent -> blt -----------------------------------------------------------------------------

def _reference_main(src: Path) -> tuple[dict[str, Any], dict[str, Any], TensorReader]:
    """The reference BLT's args, the patcher args stored beside them, and its tensors."""
    if (src / "config.json").is_file():  # the Hub release: {"args": ByteLatentTransformerArgs} + safetensors
        record = _json_object(src / "config.json", "a bytelatent config")
        args = record.get("args")
        reader: TensorReader = SafetensorsReader.from_file(src / WEIGHTS)
        patcher_args = {}
    elif (src / "params.json").is_file():  # a consolidated checkpoint: TrainArgs + consolidated.pth
        record = _json_object(src / "params.json", "a bytelatent params.json")
        args = record.get("model")
        reader = TorchFileReader(src / "consolidated.pth")
        patcher_args = (record.get("data") or {}).get("patcher_args") or {}
    else:
        raise CheckpointError(f"{src} has neither config.json (+ {WEIGHTS}) nor params.json (+ consolidated.pth); "
                              "is it a bytelatent BLT checkpoint?")
    if not isinstance(args, dict):
        raise CheckpointError(f"{src}: the bytelatent config has no model arguments ('args' or 'model')")
    # The BLT's own patching_* arguments, where the patcher args say nothing (PatcherArgs defaults else).
    from_args = {"patching_mode": args.get("patching_mode"), "threshold": args.get("patching_threshold"),
                 "threshold_add": args.get("patching_threshold_add"), "monotonicity": args.get("monotonicity"),
                 "max_patch_length": args.get("max_patch_length")}
    return args, {**{k: v for k, v in from_args.items() if v is not None}, **patcher_args}, reader


def convert_from_bytelatent(src: Path, out: Path, entropy_dir: Path | None = None, force: bool = False) -> Conversion:
    """A reference bytelatent BLT checkpoint -> a blt run; its entropy model comes from ``entropy_dir``
    (default ``src/entropy_model`` when present): ``params.json`` + ``consolidated.pth``."""
    src = _source_dir(src, "a bytelatent BLT checkpoint directory")
    args, patcher_args, reader = _reference_main(src)
    entropy = None
    notes = []
    if entropy_dir is None and (src / "entropy_model").is_dir():
        entropy_dir = src / "entropy_model"
    if entropy_dir is not None:
        entropy_dir = _source_dir(entropy_dir, "the bytelatent entropy model's directory")
        params = _json_object(entropy_dir / "params.json", "a bytelatent entropy-model params.json")
        if not isinstance(params.get("entropy_model"), dict):
            raise CheckpointError(f"{entropy_dir / 'params.json'} has no 'entropy_model' section")
        patcher_args = {**patcher_args, **((params.get("data") or {}).get("patcher_args") or {})}
        entropy_config = entropy_config_from_reference(params["entropy_model"])
        entropy_reader = TorchFileReader(entropy_dir / "consolidated.pth")
        entropy_expected = expected_shapes(EntropyModel, entropy_config)
        entropy_plan = plan_tensors(entropy_expected, {n: (reference_entropy_name(n),) for n in entropy_expected},
                                    entropy_reader)
        entropy = (entropy_config, entropy_plan, entropy_reader)
    config = blt_config_from_reference(args, patcher_args)
    expected = expected_shapes(ByteLatentTransformer, config)
    plan = plan_tensors(expected, reference_sources(list(expected), config.hash), reader)
    if entropy is None and config.patching.uses_entropy_model:
        notes.append(f"no entropy model given (--entropy-model DIR, or {src / 'entropy_model'}): patching mode "
                     f"{config.patching.mode!r} needs one; copy it into {Path(out) / ENTROPY_SUBDIR}")
    return _write_conversion(out, src, force, config, plan, reader, entropy, "bytelatent", notes)


def describe_patching(patching: PatchingConfig) -> str:
    """One line on a patching config, for the command's report."""
    parts = [patching.mode]
    if patching.threshold is not None:
        parts.append(f"threshold {patching.threshold:.6g} nats")
    if patching.relative_threshold is not None:
        parts.append(f"relative threshold {patching.relative_threshold:.6g} nats")
    if patching.mode == "static":
        parts.append(f"{patching.patch_size} bytes per patch")
    if patching.max_patch_length is not None:
        parts.append(f"patches split at {patching.max_patch_length} bytes")
    return ", ".join(parts)
