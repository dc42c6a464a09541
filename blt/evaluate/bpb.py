"""Bits per byte on held-out data, with the patch statistics that set BLT's compute per byte."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from blt.data import PrecomputedEntropies, PreparedData, validation_batches
from blt.errors import BLTError, CheckpointError, DataError
from blt.model.byte_latent import byte_loss_mask, next_byte_loss
from blt.patching.precompute import usable_entropies
from blt.run import Run
from blt.tokenizer import PAD_ID
from blt.train import autocast as train_autocast
from blt.train.device import slow_bf16_warning
from blt.train.objectives import TokenObjective


@dataclass
class EvalResult:
    bits_per_byte: float
    bytes: int  # counted targets (bytes and EOS)
    sequences: int
    mean_patch_size: float | None  # bytes per patch after each row's BOS patch (BLT runs)
    global_steps_per_byte: float | None  # patches per position (BOS patches included; padding not) (BLT runs)
    bytes_per_token: float | None = None  # counted byte targets per counted token target (token-model runs)
    entropies: str | None = None  # where entropy patching's entropies came from: "precomputed" or "entropy model"
    precision: str = "fp32"  # "bf16": the model ran under bf16 autocast, as a run trained in bf16 validates

    def to_dict(self) -> dict:
        return asdict(self)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def recorded_train(record: dict, where: object) -> dict:
    """The ``train`` section of a run's config.json record (empty when absent), checked: a JSON object whose
    ``seq_len``, when present, is an integer >= 2 and ``precision`` fp32 or bf16. ``where`` names the run."""
    train = record.get("train", {})
    if not isinstance(train, dict):
        raise CheckpointError(f"{where}: config.json's train section is not a JSON object; the run directory is corrupt")
    seq_len = train.get("seq_len")
    if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 2):
        raise CheckpointError(f"{where}: config.json records train.seq_len {seq_len!r}, not an integer >= 2; "
                              "the run directory is corrupt (pass --seq-len to evaluate it anyway)")
    if train.get("precision", "fp32") not in ("fp32", "bf16"):
        raise CheckpointError(f"{where}: config.json records train.precision {train['precision']!r}, not fp32 or bf16")
    return train


def recorded_data(record: dict, where: object) -> str | None:
    """The prepared data directory a run's config.json records (None when absent), checked to be a path."""
    data = record.get("data")
    if data is not None and not isinstance(data, str):
        raise CheckpointError(f"{where}: config.json records data {data!r}, not a path; pass --data DIR")
    return data


def run_precision(run: Run) -> str:
    """The precision a run trained (and ran its validation passes) in: "fp32" or "bf16"."""
    return recorded_train(run.info, run.path).get("precision", "fp32")


def rows_needed(data: PreparedData, split: str, seq_len: int) -> int:
    """At most how many rows of ``seq_len`` ids one pass over ``split`` fills (each document is BOS, its bytes
    and EOS; each row takes at least ``seq_len - 1`` new ids): a batch never needs more."""
    lengths = data.split(split).lengths
    return -(-int(lengths.sum() + 2 * len(lengths)) // (seq_len - 1)) + 1


def stored_entropies(run: Run, data: PreparedData, log: Callable[[str], None] = _stderr,
                     split: str = "val") -> PrecomputedEntropies | None:
    """The entropies of the run's entropy model precomputed in ``data`` (`blt patch --data`), as training
    and its validation passes use them; None when the run patches without an entropy model, or when there
    are none or they can't be used (unfinished, stale, corrupt) and the entropy model must run on each row.
    Only ``split``'s entropies are opened and verified. Logs which, for runs that patch by entropy."""
    if run.kind != "blt" or not run.config.patching.uses_entropy_model:
        return None
    return usable_entropies(data, run.entropy_model, log, "computed by the entropy model on each row",
                                            splits=(split,))


@torch.no_grad()
def evaluate_run(run: Run, data: PreparedData, seq_len: int, batch_size: int = 8, max_batches: int | None = None,
                 split: str = "val", *, precomputed: bool = True, precision: str | None = None,
                 log: Callable[[str], None] = _stderr, documents: Sequence[int] | None = None) -> EvalResult:
    """One deterministic pass over ``split`` (or its first ``max_batches`` batches).

    A BLT run patched by an entropy model places its patches by the entropies precomputed for that model
    beside the data (`stored_entropies`) when there are usable ones and ``precomputed``, as training and
    its validation passes do: full-document context, so a row that starts inside a document gets the
    patches it gets there, and `Trainer.evaluate` over the same rows gives the same bits per byte. Else
    its entropy model runs on each row, which sees only the row. ``log`` says which.

    A token-model run scores the same byte rows through its tokenizer, with the convention of
    `blt.train.objectives.TokenObjective`: token NLL over the rows' data bytes and EOS.

    ``precision`` (default: the run's training precision, `run_precision`) is "fp32" or "bf16"; under "bf16"
    the model runs under bf16 autocast as `Trainer.evaluate` runs it, while patch boundaries are still
    decided in fp32 (as `blt.train.objectives.BLTObjective` decides them).

    ``documents`` (indices into the split) scores only those documents, packed as the whole pass packs them.
    """
    if seq_len < 2 or batch_size < 1 or (max_batches is not None and max_batches < 1):
        raise BLTError(f"evaluation needs seq_len >= 2, batch_size >= 1 and max_batches >= 1 or None; got {seq_len}, "
                       f"{batch_size}, {max_batches}")
    precision = precision or run_precision(run)
    device = next(run.model.parameters()).device  # batches go where `blt.load(..., device=)` put the model
    autocast = train_autocast(device.type, precision)
    if log is not None and (warning := slow_bf16_warning(device, precision)):
        log(warning)
    patcher = run.patcher if run.kind == "blt" else None
    stored = stored_entropies(run, data, log, split) if precomputed else None
    # Rows past the split's end are [BOS, PAD, ...] and count nothing: a batch larger than the pass is no different.
    batch_size = min(batch_size, rows_needed(data, split, seq_len))
    it = validation_batches(data, seq_len, batch_size, split=split, entropies=stored, documents=documents)
    loss_sum, targets, sequences, positions, patches_after_bos, patches, data_bytes = 0.0, 0, 0, 0, 0, 0, 0
    token_targets = 0
    for i, batch in enumerate(it):
        if max_batches is not None and i >= max_batches:
            break
        ids, entropies = batch if stored is not None else (batch, None)
        ids, entropies = ids.to(device), entropies.to(device) if entropies is not None else None
        if patcher is not None:
            lengths = patcher(ids, entropies)
            with autocast:
                loss_sum += float(next_byte_loss(run.model(ids, lengths), ids, reduction="sum"))
            patches_after_bos += int((lengths[:, 1:] > 0).sum())
            patches += int((lengths > 0).sum())
            data_bytes += int(lengths[:, 1:].sum())
        elif run.kind == "token_model":
            with autocast:
                loss, extras = TokenObjective(run.model, run.tokenizer).loss_sum(run.model, ids)
            loss_sum += float(loss)
            token_targets += int(extras["tokens"])
        else:
            with autocast:
                loss_sum += float(next_byte_loss(run.model(ids), ids, reduction="sum"))
        targets += int(byte_loss_mask(ids[:, 1:]).sum())
        sequences += ids.shape[0]
        positions += int((ids != PAD_ID).sum())
    if targets == 0:
        raise DataError(f"the {split} split of {data.path} has no data to evaluate")
    return EvalResult(
        bits_per_byte=loss_sum / targets / math.log(2),
        bytes=targets,
        sequences=sequences,
        mean_patch_size=data_bytes / patches_after_bos if patcher is not None and patches_after_bos else None,
        global_steps_per_byte=patches / positions if patcher is not None else None,
        bytes_per_token=targets / token_targets if token_targets else None,
        entropies=None if patcher is None or not run.config.patching.uses_entropy_model
        else "precomputed" if stored is not None else "entropy model",
        precision=precision,
    )
