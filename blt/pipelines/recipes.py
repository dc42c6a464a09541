"""End-to-end recipes the CLI and `blt demo` call: set up a run directory, build the model, train it.

All recipes use the one loop in `blt.train`; they differ only in the objective and the run's config.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blt.baselines.model import TokenLM, TokenModelConfig
from blt.baselines.tokenization import (
    DEFAULT_BPE_TRAIN_BYTES,
    MIN_BPE_VOCAB,
    TOKENIZER_FILE,
    BPETokenizer,
    ByteTokenizer,
    measure_bytes_per_token,
    tokenizer_from_record,
    train_bpe,
)
from blt.config import BLTConfig, EntropyModelConfig, PatchingConfig
from blt.data import (
    ByteBatchIterator,
    PrecomputedEntropies,
    PreparedData,
    validation_batches,
)
from blt.errors import BLTError, ConfigError, DataError
from blt.fileio import atomic_write_text
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching.calibration import (
    calibrate_patching,
    calibration_sample,
    mean_patch_size,
    patch_size_curves,
    spread_sample,
)
from blt.patching.entropy_model import EntropyModel
from blt.patching.patcher import Patcher
from blt.patching.precompute import precomputed_precisions, usable_entropies, with_precision
from blt.run import (
    CONFIG_CLASSES,
    ENTROPY_SUBDIR,
    KIND_NAMES,
    copy_entropy_model,
    expected_shapes,
    load,
    read_run_config,
    write_run_config,
)
from blt.train import (
    Objective,
    TrainConfig,
    Trainer,
    TrainResult,
    World,
    default_train_config,
    init_distributed,
    recorded_train_config,
    resolve_device,
)
from blt.train.checkpoint import CHECKSUMS_FILE
from blt.train.objectives import BLTObjective, EntropyModelObjective, TokenObjective
from blt.viz import PATCH_SIZE_CURVE_FILE, write_patch_size_curves

# Training sequences the entropy threshold is calibrated on, spread over the split. Documents differ a lot,
# so the result varies with the rows drawn: on the stdlib corpus (tiny entropy model, 512-byte rows) a
# target of 4.5 bytes gave 4.47 ± 0.26 bytes on the rest of the split with 64 rows, 4.44 ± 0.11 with 512
# and 4.45 ± 0.05 with 1024 (over seeds); 1024 rows take about 15 s on one CPU thread.
CALIBRATION_ROWS = 1024
PATCHING_BPE_VOCAB_SIZE = 4096  # BPE patching's tokenizer when none is given: the tiny BPE baseline's size


@dataclass
class RunOptions:
    """What a user chooses for a training run (the CLI's options)."""

    data: Path
    out: Path
    preset: str = "tiny"
    model_overrides: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    steps: int | None = None
    precision: str | None = None
    resume: bool = False
    force: bool = False
    progress: bool = True
    device: str = "auto"  # cpu, cuda, cuda:N, or auto (a GPU when torch sees one); `blt.train.resolve_device`


# What a training command writes into a run directory before its config.json, which comes last: a folder of
# these alone is a setup that was interrupted, and --force may start it again.
SETUP_FILES = frozenset({TOKENIZER_FILE, ENTROPY_SUBDIR, f".{ENTROPY_SUBDIR}.tmp", "data", "char_words.json",
                         CHECKSUMS_FILE})


def _interrupted_setup(out: Path) -> bool:
    return all(e.name in SETUP_FILES or (e.name.startswith(".") and e.name.endswith(".tmp")) for e in out.iterdir())


def check_run_dir(out: Path, force: bool) -> None:
    """Refuse, before any work, to write a new run over an existing one (unless ``force``) or over a folder
    that isn't a run."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BLTError(f"{out} exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise BLTError(f"{out} already exists; pass --resume to continue it or --force to start over")
        if not (out / "config.json").is_file() and not _interrupted_setup(out):
            raise BLTError(f"--force: {out} is not empty and not a run directory; refusing to delete it")


def prepare_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse to clobber a run unless asked; never delete a folder that isn't a run."""
    out = Path(out)
    if resume:
        if not (out / "config.json").is_file():
            if out.is_dir() and any(out.iterdir()) and _interrupted_setup(out):
                raise BLTError(f"--resume: the setup of {out} was interrupted before its config.json was written, "
                               "so there is nothing to resume; start it again with --force")
            raise BLTError(f"--resume: {out} is not a run directory (no config.json)")
        return
    check_run_dir(out, force)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def resumed_record(opts: RunOptions, kind: str) -> dict:
    """The config.json of the run ``opts.out`` that a resume continues, after checking that it is a run of
    ``kind`` and that no model value is being changed (the weights have the shapes they were made with): the
    command that made the run, with --resume added, is a resume."""
    prepare_run_dir(opts.out, resume=True, force=False)
    record = read_run_config(opts.out)
    if record["kind"] != kind:
        raise BLTError(f"--resume: {opts.out} is {KIND_NAMES[record['kind']]}, not {KIND_NAMES[kind]}; resume it "
                       "with the command that made it")
    recorded = CONFIG_CLASSES[kind].from_dict(record["model"])
    for override in opts.model_overrides:
        if recorded.with_overrides([override]) != recorded:
            raise ConfigError(f"--resume continues {opts.out} with the model it was made with; --set {override} "
                              "would change it (only train.KEY=VALUE can change on a resume)")
    return record


def check_training_data(data: PreparedData, tcfg: TrainConfig) -> None:
    """The splits a run reads hold enough for its shapes (a `DataError` saying what to change otherwise):
    checked before any work, not when the first validation pass comes."""
    ByteBatchIterator(data, "train", seq_len=tcfg.seq_len, batch_size=tcfg.batch_size, seed=tcfg.seed,
                      order=tcfg.row_order)
    validation_batches(data, tcfg.seq_len, tcfg.batch_size)


def check_fits_in_memory(kind: str, model_config, device: torch.device, tcfg: TrainConfig, world: World) -> None:
    """Refuse, before anything is allocated, a model whose fp32 weights, gradients and AdamW moments alone
    exceed the memory of ``device`` (e.g. a width typed with one digit too many). FSDP on GPUs gives each
    GPU a share; processes on the CPU share one machine's memory."""
    shapes = expected_shapes(kind, model_config.to_dict())
    params = sum(math.prod(shape) for shape in shapes.values())
    needed = 16 * params  # 4 bytes each for the weights, their gradients and two AdamW moments
    if device.type == "cuda" and tcfg.parallel == "fsdp":
        needed //= world.size
    elif device.type == "cpu":
        needed *= world.size
    if device.type == "cuda":
        available, where = torch.cuda.get_device_properties(device).total_memory, f"GPU {device.index}"
    else:
        available, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
    if needed > available:
        raise ConfigError(f"the model has {params:,} parameters, {needed / 2**30:,.1f} GiB with their gradients and "
                          f"AdamW state: more than the {available / 2**30:,.1f} GiB of {where}; choose smaller widths")


def _train_config(opts: RunOptions, base: TrainConfig) -> TrainConfig:
    cfg = base.with_overrides(opts.train_overrides) if opts.train_overrides else base
    changes = {}
    if opts.steps is not None:
        changes["steps"] = opts.steps
        if cfg.warmup_steps >= opts.steps:
            changes["warmup_steps"] = max(0, opts.steps // 10)
    if opts.precision is not None:
        changes["precision"] = opts.precision
    return cfg.replace(**changes) if changes else cfg


def _check_seq_len(model_cfg: BLTConfig | EntropyModelConfig, tcfg: TrainConfig) -> None:
    """Training rows must fit the model's ``max_seq_len`` (what exports and FLOP counts take as its length)."""
    if tcfg.seq_len > model_cfg.max_seq_len:
        raise ConfigError(f"train.seq_len {tcfg.seq_len} is longer than the model's max_seq_len "
                          f"{model_cfg.max_seq_len}; raise it with --set max_seq_len={tcfg.seq_len}")


def _resumed_train_config(opts: RunOptions, record: dict, world: World,
                          model_cfg: BLTConfig | EntropyModelConfig | None = None) -> TrainConfig:
    """The training config a resumed run recorded, with this call's changes (--steps, --precision, --set
    train.*), which config.json then records, so that e.g. `blt eval` picks the precision training went on in."""
    tcfg = _train_config(opts, recorded_train_config(record["train"]))
    if model_cfg is not None:
        _check_seq_len(model_cfg, tcfg)
    if world.is_main and tcfg.to_dict() != record["train"]:
        atomic_write_text(Path(opts.out) / "config.json", json.dumps({**record, "train": tcfg.to_dict()}, indent=2) + "\n")
    return tcfg


def train_entropy_model(opts: RunOptions) -> TrainResult:
    """Train (or resume) an entropy model into ``opts.out``, then plot the mean patch size it gives against
    the threshold on a validation sample (``patch_size_vs_threshold.png`` and ``.json`` in the run)."""
    device = resolve_device(opts.device)
    world = init_distributed(device)
    data = PreparedData.open(opts.data)
    if opts.resume:
        record = resumed_record(opts, "entropy_model")
        cfg = EntropyModelConfig.from_dict(record["model"])
        tcfg = _resumed_train_config(opts, record, world, cfg)
        check_training_data(data, tcfg)
    else:
        check_run_dir(opts.out, opts.force)
        cfg = EntropyModelConfig.preset(opts.preset).with_overrides(opts.model_overrides)
        tcfg = _train_config(opts, default_train_config("entropy_model", opts.preset))
        _check_seq_len(cfg, tcfg)
        check_training_data(data, tcfg)
        check_fits_in_memory("entropy_model", cfg, device, tcfg, world)
        if world.is_main:
            prepare_run_dir(opts.out, resume=False, force=opts.force)
            write_run_config(opts.out, "entropy_model", cfg, {"train": tcfg.to_dict(), "data": str(opts.data)})
        world.barrier()
    model = EntropyModel(cfg).init_weights(seed=tcfg.seed).to(device)
    trainer = Trainer(EntropyModelObjective(model), data, tcfg, opts.out, world=world, progress=opts.progress)
    result = trainer.fit(resume=opts.resume)
    curve_written = (opts.out / PATCH_SIZE_CURVE_FILE).is_file()
    if world.is_main and not (result.already_complete and curve_written):  # the saved weights, whole even when sharded
        device = next(model.parameters()).device
        trained = load(opts.out, expect="entropy_model", device=device).model
        sample, split = calibration_sample(data, tcfg.seq_len, CALIBRATION_ROWS, seed=tcfg.seed)
        curves = patch_size_curves(trained.entropies(sample.to(device)).cpu())
        curves["sample"] = f"{CALIBRATION_ROWS} random rows of {tcfg.seq_len} bytes of the {split} split of {opts.data}"
        write_patch_size_curves(curves, opts.out / PATCH_SIZE_CURVE_FILE)
    world.barrier()
    return result


def entropy_model_for(entropy_run: Path, data: PreparedData, device: torch.device | str = "cpu",
                      precision: str | None = None, log=print) -> EntropyModel:
    """The entropy model of ``entropy_run`` as a BLT run on ``data`` patches with it: computing in
    ``precision`` (fp32 or bf16) when one is asked for; otherwise in the precision its entropies were
    precomputed in beside the data (`blt patch --data --precision`), its own (fp32) first, so that
    calibration, training and every later evaluation of the run use entropies made alike."""
    model = load(entropy_run, expect="entropy_model", device=device).model
    if precision is not None:
        return with_precision(model, precision)
    found = precomputed_precisions(data, model)
    if found and found[0] != model.cfg.precision:
        log(f"entropies: precomputed in {found[0]} for this entropy model; the run computes any others in "
            f"{found[0]} too")
        with_precision(model, found[0])
    return model


def precomputed_entropies(data: PreparedData, entropy_model: EntropyModel, log=print) -> PrecomputedEntropies | None:
    """The entropies of ``entropy_model`` precomputed in ``data`` (`blt patch --data`), or None when there
    are none or they can't be used (unfinished, stale, corrupt): patches are then placed by running the
    entropy model during training. Logs which."""
    return usable_entropies(data, entropy_model, log, "computed during training")


ENTROPIES_RECORD = "precomputed_entropies"  # in a BLT run's config.json: the key of those it patches by, or null


def entropies_of_resumed_run(data: PreparedData, entropy_model: EntropyModel, record: dict,
                             log=print) -> PrecomputedEntropies | None:
    """The entropies a resumed BLT run patches by: the precomputed ones it started with, or none when it ran
    its entropy model during training, whatever has been precomputed since (either way, its patches stay
    what they were). Runs that recorded nothing take what is there, as they did when they started."""
    if ENTROPIES_RECORD not in record:
        return precomputed_entropies(data, entropy_model, log)
    key = record[ENTROPIES_RECORD]
    if key is None:
        log("entropies: computed during training, as since the run started")
        return None
    try:
        stored = PrecomputedEntropies.open(data, str(key))
    except DataError as err:
        raise DataError(f"this run patches by the entropies precomputed in {data.path} ({key}), which can't be "
                        f"used now: {err}") from None
    log(f"entropies: precomputed in {stored.path}, as since the run started")
    return stored


def calibrate_on_training_data(patching: PatchingConfig, entropy_model: EntropyModel, data: PreparedData,
                               seq_len: int, seed: int = 0, entropies: PrecomputedEntropies | None = None,
                               rows: int = CALIBRATION_ROWS) -> tuple[PatchingConfig, float]:
    """``patching`` with its threshold calibrated (`calibrate_patching`) on ``rows`` training rows of
    ``seq_len`` spread over the whole training split (`spread_sample`), and the mean patch size the run's
    `Patcher` gives those rows. ``entropies``: precomputed ones to use instead of running the model, as
    training will."""
    sample = spread_sample(data, "train", seq_len, rows, seed=seed, entropies=entropies)
    if entropies is not None:
        sample, sample_entropies = sample
    else:  # on the entropy model's device (a GPU run's), back to the CPU for calibrating
        device = next(entropy_model.parameters(), torch.empty(0)).device
        sample_entropies = entropy_model.entropies(sample.to(device)).cpu()
    patching = calibrate_patching(patching, entropy_model, sample, entropies=sample_entropies)
    return patching, mean_patch_size(Patcher(patching, entropy_model)(sample, sample_entropies))


def train_blt(opts: RunOptions, patching: dict | None = None, entropy_run: Path | None = None,
              log=print, tokenizer_file: Path | None = None,
              bpe_vocab_size: int = PATCHING_BPE_VOCAB_SIZE,
              init_model: Callable[[ByteLatentTransformer], None] | None = None,
              objective: Callable[[ByteLatentTransformer, Patcher], Objective] | None = None,
              entropy_precision: str | None = None) -> TrainResult:
    """Train (or resume) a BLT into ``opts.out``.

    ``patching`` holds PatchingConfig fields to change from the preset's (mode, threshold,
    target_patch_size, ...); a target patch size is turned into a threshold by calibrating on the
    training data with the entropy model of ``entropy_run``, which is copied into the run. Entropies
    precomputed for that entropy model beside the data (`blt patch --data`) are used for calibration
    and training; without them the entropy model runs during training. The entropy model computes in
    ``entropy_precision`` (fp32 or bf16), or by default in the precision of those precomputed entropies
    (`entropy_model_for`); the run's copy of it records that precision for evaluation and generation.

    BPE patching (mode "bpe") places patches at the token starts of a byte-level BPE: the one saved in
    ``tokenizer_file`` (e.g. a `blt train-baseline --kind bpe` run's ``tokenizer.json``), or one of
    ``bpe_vocab_size`` tokens learned from the training split. It is saved in the run as ``tokenizer.json``.

    ``init_model`` changes the freshly initialised model before training (e.g. loads trained weights into
    part of it, as `blt byteify` does); a resumed run's checkpoint then replaces them as usual.
    ``objective`` builds what is optimised from the model and its patcher (default: `BLTObjective`, the
    next-byte loss; `blt byteify` adds a distillation term with `EmbeddingDistillObjective`).
    """
    device = resolve_device(opts.device)
    world = init_distributed(device)
    main_log = log if world.is_main else (lambda message: None)
    data = PreparedData.open(opts.data)
    stored = None
    if opts.resume:
        record = resumed_record(opts, "blt")
        cfg = BLTConfig.from_dict(record["model"])
        tcfg = _resumed_train_config(opts, record, world, cfg)
        check_training_data(data, tcfg)
        entropy_model = load(opts.out / ENTROPY_SUBDIR, expect="entropy_model", device=device).model if cfg.patching.uses_entropy_model else None
        if entropy_model is not None:
            stored = entropies_of_resumed_run(data, entropy_model, record, main_log)
    else:
        check_run_dir(opts.out, opts.force)  # before calibrating, which takes a while
        cfg = BLTConfig.preset(opts.preset).with_overrides(opts.model_overrides)
        cfg = cfg.replace(patching=PatchingConfig.from_dict({**cfg.patching.to_dict(), **(patching or {})}))
        tcfg = _train_config(opts, default_train_config("blt", opts.preset))
        _check_seq_len(cfg, tcfg)
        check_training_data(data, tcfg)
        check_fits_in_memory("blt", cfg, device, tcfg, world)
        if tokenizer_file is not None and cfg.patching.mode != "bpe":
            raise ConfigError(f"--tokenizer is for --patching bpe; this run patches by {cfg.patching.mode}")
        entropy_model = None
        if cfg.patching.uses_entropy_model:
            if entropy_run is None:
                raise BLTError(f"patching mode {cfg.patching.mode} needs --entropy-model RUN (train one with `blt train-entropy`)")
            entropy_model = entropy_model_for(entropy_run, data, device, entropy_precision, main_log)
            stored = precomputed_entropies(data, entropy_model, main_log)
            calibrated, size = calibrate_on_training_data(cfg.patching, entropy_model, data, tcfg.seq_len,
                                                          seed=tcfg.seed, entropies=stored)
            cfg = cfg.replace(patching=calibrated)
            main_log(f"patching: {cfg.patching.mode}, threshold {cfg.patching.threshold:.4f} nats -> mean patch size "
                     f"{size:.2f} bytes on {CALIBRATION_ROWS} training sequences spread over the split")
        tokenizer = None
        if cfg.patching.mode == "bpe":  # before the run directory is touched, on every process (none waits on it)
            tokenizer = patching_tokenizer(data, cfg.patching, tokenizer_file, bpe_vocab_size, tcfg, main_log)
        if world.is_main:
            prepare_run_dir(opts.out, resume=False, force=opts.force)
            extra = {"train": tcfg.to_dict(), "data": str(opts.data)}
            if entropy_model is not None:  # which entropies it patches by, so that a resume patches alike
                extra[ENTROPIES_RECORD] = stored.key if stored is not None else None
                copy_entropy_model(entropy_run, opts.out, entropy_model.cfg)
            if tokenizer is not None:
                tokenizer.save(opts.out / TOKENIZER_FILE)
                extra["patching_tokenizer"] = tokenizer.describe()
            write_run_config(opts.out, "blt", cfg, extra)  # last: without it, the setup was interrupted
        world.barrier()
    # every process patches with the saved file, so all of them patch alike
    tokenizer = BPETokenizer.load(opts.out / TOKENIZER_FILE) if cfg.patching.mode == "bpe" else None
    model = ByteLatentTransformer(cfg).init_weights(seed=tcfg.seed)
    if init_model is not None:
        init_model(model)
    model = model.to(device)
    patcher = Patcher(cfg.patching, entropy_model, tokenizer)
    optimised = (objective or BLTObjective)(model, patcher)
    trainer = Trainer(optimised, data, tcfg, opts.out, world=world, progress=opts.progress, entropies=stored)
    return trainer.fit(resume=opts.resume)


def patching_tokenizer(data: PreparedData, patching: PatchingConfig, tokenizer_file: Path | None, vocab_size: int,
                       tcfg: TrainConfig, log) -> BPETokenizer:
    """The byte-level BPE a BLT run patches by (mode "bpe"): loaded from ``tokenizer_file``, or learned from
    the training split. Logs the mean patch size it gives on training rows spread over the split."""
    if tokenizer_file is not None:
        tokenizer = BPETokenizer.load(tokenizer_file)
    else:
        if vocab_size < MIN_BPE_VOCAB:
            raise ConfigError(f"--vocab-size must be at least {MIN_BPE_VOCAB} (4 specials + 256 bytes), got {vocab_size}")
        log(f"tokenizer: learning a byte-level BPE of {vocab_size:,} tokens from up to {DEFAULT_BPE_TRAIN_BYTES:,} "
            "training bytes, for BPE patching")
        tokenizer = train_bpe(data, vocab_size, seed=tcfg.seed)
    sample = spread_sample(data, "train", tcfg.seq_len, CALIBRATION_ROWS, seed=tcfg.seed)
    size = mean_patch_size(Patcher(patching, tokenizer=tokenizer)(sample))
    log(f"patching: bpe, {tokenizer.vocab_size:,} tokens -> mean patch size {size:.2f} bytes on {CALIBRATION_ROWS} "
        "training sequences spread over the split")
    return tokenizer


TOKENIZER_KINDS = ("bpe", "byte")


def train_token_model(opts: RunOptions, tokenizer: str = "bpe", vocab_size: int | None = None,
                      tokenizer_file: Path | None = None, bpe_train_bytes: int = DEFAULT_BPE_TRAIN_BYTES,
                      log=print) -> TrainResult:
    """Train (or resume) a token baseline into ``opts.out``: ``tokenizer="bpe"`` (a byte-level BPE of
    ``vocab_size`` tokens learned from up to ``bpe_train_bytes`` of the training split, or the one saved in
    ``tokenizer_file``) or ``"byte"`` (the same model over raw bytes).

    The model is `TokenModelConfig.preset(opts.preset)` (the global model of the BLT preset of that name).
    It trains with BLT's training defaults for the preset, so it sees the same bytes per step and is
    validated on the same bytes as a BLT run. Validation bytes per token are measured over the whole
    validation split, logged and stored in config.json (``tokenizer.val_bytes_per_token``).
    """
    device = resolve_device(opts.device)
    world = init_distributed(device)
    main_log = log if world.is_main else (lambda message: None)
    data = PreparedData.open(opts.data)
    if opts.resume:
        resumed_record(opts, "token_model")
    else:
        check_run_dir(opts.out, opts.force)
        if tokenizer not in TOKENIZER_KINDS:
            raise ConfigError(f"tokenizer must be one of {list(TOKENIZER_KINDS)}, not {tokenizer!r}")
        if tokenizer == "byte" and (vocab_size is not None or tokenizer_file is not None):
            raise ConfigError("the byte baseline has a fixed vocabulary of 260 ids; drop --vocab-size and --tokenizer")
        if any(o.split("=", 1)[0].strip() == "vocab_size" for o in opts.model_overrides):
            raise ConfigError("set the vocabulary with --vocab-size (BPE), not --set vocab_size")
        base = TokenModelConfig.preset(opts.preset).with_overrides(opts.model_overrides)
        tcfg = _train_config(opts, default_train_config("blt", opts.preset))
        check_fits_in_memory("token_model", base, device, tcfg, world)
        check_training_data(data, tcfg)
        if vocab_size is not None and tokenizer_file is not None:
            raise ConfigError("pass --vocab-size to learn a BPE, or --tokenizer to use one, not both")
        size = base.vocab_size if vocab_size is None else vocab_size
        learn = tokenizer == "bpe" and tokenizer_file is None
        if learn and size < MIN_BPE_VOCAB:
            raise ConfigError(f"--vocab-size must be at least {MIN_BPE_VOCAB} (4 specials + 256 bytes), got {size}")
        if world.is_main:
            tok = BPETokenizer.load(tokenizer_file) if tokenizer_file is not None else ByteTokenizer()
            prepare_run_dir(opts.out, resume=False, force=opts.force)
            if learn:
                main_log(f"tokenizer: learning a byte-level BPE of {size:,} tokens from up to {bpe_train_bytes:,} "
                         f"training bytes")
                tok = train_bpe(data, size, max_bytes=bpe_train_bytes, seed=tcfg.seed)
            if isinstance(tok, BPETokenizer):
                tok.save(opts.out / TOKENIZER_FILE)
            per_token, measured = measure_bytes_per_token(tok, validation_batches(data, tcfg.seq_len, tcfg.batch_size))
            main_log(f"tokenizer: {tok.kind}, {tok.vocab_size:,} tokens, {per_token:.3f} bytes per token on the "
                     f"validation split ({measured:,} bytes)")
            info = {**tok.describe(), "val_bytes_per_token": per_token, "val_bytes": measured}
            write_run_config(opts.out, "token_model", base.replace(vocab_size=tok.vocab_size),
                             {"tokenizer": info, "train": tcfg.to_dict(), "data": str(opts.data)})
        world.barrier()
    record = read_run_config(opts.out)  # a token-model run: made above, or checked by `resumed_record`
    cfg = TokenModelConfig.from_dict(record["model"])
    if opts.resume:
        tcfg = _resumed_train_config(opts, record, world)
        check_training_data(data, tcfg)
    else:
        tcfg = recorded_train_config(record["train"])
    tok = tokenizer_from_record(record, opts.out)
    model = TokenLM(cfg).init_weights(seed=tcfg.seed).to(device)
    trainer = Trainer(TokenObjective(model, tok), data, tcfg, opts.out, world=world, progress=opts.progress)
    return trainer.fit(resume=opts.resume)
