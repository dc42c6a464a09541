"""`blt compare`: the paper's FLOP-controlled comparison at small scale (docs/design.md §6, the scaling axis).

Members: BLT with entropy patches calibrated to mean sizes of 4.5, 6 and 8 bytes, the BPE baseline and
the byte baseline (`blt.baselines`). Each trains with the one loop, on the same data, batches and
validation bytes, for as many steps as one training-FLOP budget buys:

    steps = round(budget / (training FLOPs per byte × bytes per step)),   bytes per step = batch × seq_len

with the planned FLOPs per byte of `blt.flops`: BLT at the bytes per patch of the very batches it will
train on (its threshold calibrated to the target patch size as `blt train` does it, then the training
batches patched in order: `_blt_steps`), the BPE model at the bytes per token its tokenizer gives on
training sequences, the byte model at one byte per token. The entropy model is not charged to BLT's
training (it is in its inference FLOPs). The report uses what each run measured instead: BLT's bytes per
patch over its training steps (equal to the plan's), the BPE model's validation bytes per token.

Output, in OUT: one run directory per member (``blt-p4.5``, ``blt-p6``, ``blt-p8``, ``bpe``, ``byte``),
the BPE tokenizer shared by the plan (``tokenizer.json``), ``compare_plan.json``, ``compare.json``,
``compare.md`` (the table) and ``bpb_vs_flops.png`` (validation bits per byte against cumulative training
FLOPs). Running it again continues: finished members are skipped, unfinished ones resume from their
newest checkpoint.

Default budget: `DEFAULT_BUDGET` (3e13 training FLOPs per member) is about an hour for all five on 2
CPU cores with the tiny presets: BLT at patch size 4.5 then trains about 320 steps of 16 × 512 bytes, the
byte model about 150. The speeds behind that estimate, and a GPU budget, are in benchmarks/README.md.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from blt.baselines.model import TokenModelConfig
from blt.baselines.tokenization import (
    MIN_BPE_VOCAB,
    TOKENIZER_FILE,
    BPETokenizer,
    measure_bytes_per_token,
    train_bpe,
)
from blt.config import BLTConfig, PatchingConfig
from blt.data import ByteBatchIterator, PreparedData
from blt.errors import BLTError, ConfigError
from blt.evaluate import evaluate_run
from blt.fileio import atomic_write_text
from blt.flops import ModelCost, blt_cost, format_flops, run_cost, token_model_cost
from blt.patching.calibration import spread_sample
from blt.patching.patcher import Patcher
from blt.pipelines.recipes import (
    CALIBRATION_ROWS,
    RunOptions,
    calibrate_on_training_data,
    entropy_model_for,
    precomputed_entropies,
    train_blt,
    train_token_model,
)
from blt.run import load
from blt.train import TrainConfig, count_targets, default_train_config, read_metrics
from blt.train.checkpoint import latest_checkpoint
from blt.viz.plots import plot_bpb_vs_flops

DEFAULT_BUDGET = 3e13  # training FLOPs per member: about an hour for all five on 2 CPU cores (tiny)
DEFAULT_PATCH_SIZES = (4.5, 6.0, 8.0)
BASELINES = ("bpe", "byte")
PLAN_FILE = "compare_plan.json"


@dataclass
class CompareOptions:
    """What `blt compare` runs (the CLI's options)."""

    data: Path
    out: Path
    entropy_model: Path | None = None  # needed when there are BLT members
    budget: float = DEFAULT_BUDGET  # training FLOPs per member
    preset: str = "tiny"  # BLT preset; the baselines use `TokenModelConfig.preset` of the same name
    patch_sizes: tuple[float, ...] = DEFAULT_PATCH_SIZES  # one BLT member per target mean patch size
    baselines: tuple[str, ...] = BASELINES
    vocab_size: int | None = None  # BPE vocabulary (default: the preset's)
    blt_overrides: list[str] = field(default_factory=list)  # `--set blt.KEY=V`
    token_overrides: list[str] = field(default_factory=list)  # `--set token.KEY=V`
    train_overrides: list[str] = field(default_factory=list)  # `--set train.KEY=V`
    precision: str | None = None
    evals: int = 5  # validation passes per member during training (and one at the end)
    warmup_fraction: float | None = None  # warmup as a share of each member's steps (None: the preset's steps)
    force: bool = False  # start OUT over
    progress: bool = True

    def settings(self) -> dict:
        """What the plan depends on: a finished comparison is only continued with the same settings."""
        record = asdict(self)
        for name in ("out", "force", "progress"):
            record.pop(name)
        record["data"] = str(Path(self.data).resolve())
        record["entropy_model"] = str(Path(self.entropy_model).resolve()) if self.entropy_model else None
        record["patch_sizes"] = [float(p) for p in self.patch_sizes]
        record["baselines"] = list(self.baselines)
        if self.warmup_fraction is None:  # left out when unset, so a plan without the field matches
            record.pop("warmup_fraction")
        return record


@dataclass(frozen=True)
class Member:
    """One model of the comparison, trained into ``OUT/name``."""

    name: str
    kind: str  # "blt", "bpe" or "byte"
    patch_size: float | None = None  # BLT's target mean patch size
    steps: int = 0
    planned_training_flops_per_byte: float = 0.0
    planned_patch_size: float | None = None  # BLT: bytes per patch of the very batches it will train on


def member_names(patch_sizes: tuple[float, ...], baselines: tuple[str, ...]) -> list[tuple[str, str, float | None]]:
    return [(f"blt-p{p:g}", "blt", float(p)) for p in patch_sizes] + [(kind, kind, None) for kind in baselines]


def _check(opts: CompareOptions) -> None:
    if not (math.isfinite(opts.budget) and opts.budget > 0):
        raise ConfigError(f"--budget must be a positive number of FLOPs (e.g. 2.5e13), got {opts.budget}")
    if not opts.patch_sizes and not opts.baselines:
        raise ConfigError("nothing to compare: give at least one --patch-sizes value or --baselines kind")
    if any(not p >= 1 for p in opts.patch_sizes):
        raise ConfigError(f"--patch-sizes must be >= 1 byte each (e.g. 4.5 6 8), got {list(opts.patch_sizes)}")
    if len(set(opts.patch_sizes)) != len(opts.patch_sizes) or len(set(opts.baselines)) != len(opts.baselines):
        raise ConfigError("--patch-sizes and --baselines must not repeat")
    unknown = sorted(set(opts.baselines) - set(BASELINES))
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    if opts.patch_sizes and opts.entropy_model is None:
        raise ConfigError("BLT members need --entropy-model RUN (train one with `blt train-entropy`)")
    if opts.evals < 1:
        raise ConfigError(f"evals must be >= 1, got {opts.evals}")
    if opts.warmup_fraction is not None:
        if not 0 <= opts.warmup_fraction < 1:
            raise ConfigError(f"--warmup-fraction must be in [0, 1), got {opts.warmup_fraction}")
        if any(item.split("=", 1)[0].strip() == "warmup_steps" for item in opts.train_overrides):
            raise ConfigError("give --warmup-fraction or --set train.warmup_steps, not both")
    if opts.vocab_size is not None and opts.vocab_size < MIN_BPE_VOCAB:
        raise ConfigError(f"--vocab-size must be at least {MIN_BPE_VOCAB} (4 specials + 256 bytes), got {opts.vocab_size}")
    blt_cfg = BLTConfig.preset(opts.preset).with_overrides(opts.blt_overrides)
    TokenModelConfig.preset(opts.preset).with_overrides(opts.token_overrides)
    tcfg = train_config(opts)
    if opts.patch_sizes and tcfg.seq_len > blt_cfg.max_seq_len:
        raise ConfigError(f"train.seq_len {tcfg.seq_len} is longer than the BLT members' max_seq_len "
                          f"{blt_cfg.max_seq_len}; raise it with --set blt.max_seq_len={tcfg.seq_len}")
    if opts.patch_sizes:
        load(opts.entropy_model, expect="entropy_model")


def train_config(opts: CompareOptions) -> TrainConfig:
    """The training config every member shares (the preset's, with the ``train.`` overrides)."""
    return default_train_config("blt", opts.preset).with_overrides(opts.train_overrides)


def _read_plan(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BLTError(f"{path} is not valid JSON ({err}); pass --force to start the comparison over") from None
    if not isinstance(saved, dict):
        raise BLTError(f"{path} is not a comparison plan; pass --force to start the comparison over")
    return saved


def _prepare_out(opts: CompareOptions) -> None:
    """Create OUT, or check that it holds a comparison with the same settings (unless --force)."""
    out = Path(opts.out)
    plan_path = out / PLAN_FILE
    if out.exists() and any(out.iterdir()):
        if not plan_path.is_file():
            raise BLTError(f"{out} exists and is not a `blt compare` directory (no {PLAN_FILE}); choose another --out")
        if opts.force:
            shutil.rmtree(out)
        else:
            saved = _read_plan(plan_path).get("settings")
            if saved != opts.settings():
                saved = saved if isinstance(saved, dict) else {}
                changed = sorted(k for k in opts.settings() if saved.get(k) != opts.settings()[k])
                raise BLTError(f"{out} holds a comparison with other settings ({', '.join(changed)}); rerun with the "
                               "same options to continue it, or pass --force to start over, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not plan_path.is_file():  # marks OUT as a comparison from the start; the members are added by `compare`
        atomic_write_text(plan_path, json.dumps({"settings": opts.settings()}, indent=2) + "\n")


def _shared_tokenizer(opts: CompareOptions, data: PreparedData, token_cfg: TokenModelConfig, seed: int, log) -> BPETokenizer:
    path = Path(opts.out) / TOKENIZER_FILE
    if path.is_file():
        return BPETokenizer.load(path)
    size = opts.vocab_size or token_cfg.vocab_size
    log(f"compare: learning a byte-level BPE of {size:,} tokens from the training split")
    tokenizer = train_bpe(data, size, seed=seed)
    tokenizer.save(path)
    return tokenizer


def plan(opts: CompareOptions, data: PreparedData, tcfg: TrainConfig, log=print) -> tuple[list[Member], dict]:
    """The members and their steps under the budget, and what the plan measured (bytes per token)."""
    blt_cfg = BLTConfig.preset(opts.preset).with_overrides(opts.blt_overrides)
    token_cfg = TokenModelConfig.preset(opts.preset).with_overrides(opts.token_overrides)
    bytes_per_step = tcfg.batch_size * tcfg.seq_len
    measured: dict[str, float] = {}
    members = []
    batches = TrainingBatches(data, tcfg, opts.entropy_model) if opts.patch_sizes else None
    for name, kind, p in member_names(tuple(opts.patch_sizes), tuple(opts.baselines)):
        if kind == "blt":
            steps, size, cost = _blt_steps(blt_cfg, member_patching(blt_cfg, p), opts, data, tcfg, batches, log)
            log(f"compare: {name}: the {steps:,} training batches it will see patch to {size:.3f} bytes")
            members.append(Member(name, kind, p, steps, cost.training, size))
            continue
        if kind == "bpe":
            tokenizer = _shared_tokenizer(opts, data, token_cfg, tcfg.seed, log)
            sample = spread_sample(data, "train", tcfg.seq_len, CALIBRATION_ROWS, seed=tcfg.seed)
            measured["train_bytes_per_token"], _ = measure_bytes_per_token(tokenizer, [sample])
            cost = token_model_cost(token_cfg.replace(vocab_size=tokenizer.vocab_size),
                                    measured["train_bytes_per_token"], tcfg.seq_len, name="bpe")
        else:
            cost = token_model_cost(token_cfg.replace(vocab_size=260), 1.0, tcfg.seq_len, name="byte")
        steps = max(1, round(opts.budget / (cost.training * bytes_per_step)))
        members.append(Member(name, kind, p, steps, cost.training))
    return members, measured


PLAN_ROUNDS = 8  # rounds of steps -> patch size of those steps' batches -> steps; it settles in two or three


def member_patching(blt_cfg: BLTConfig, target_patch_size: float) -> PatchingConfig:
    """A BLT member's patching: entropy patches calibrated to ``target_patch_size`` (as `_train_member` asks)."""
    return PatchingConfig.from_dict({**blt_cfg.patching.to_dict(), **_member_patching_changes(target_patch_size)})


def _member_patching_changes(target_patch_size: float) -> dict:
    return {"mode": "entropy", "target_patch_size": target_patch_size, "threshold": None}


class TrainingBatches:
    """The training batches of a run, in the trainer's order, with their entropies: computed once by the
    entropy model (or read from precomputed ones) and shared by the BLT members' plans."""

    def __init__(self, data: PreparedData, tcfg: TrainConfig, entropy_model_run: Path):
        self.entropy_model = entropy_model_for(entropy_model_run, data, log=lambda message: None)  # as `train_blt`
        self.stored = precomputed_entropies(data, self.entropy_model, lambda message: None)
        self._iterator = iter(ByteBatchIterator(data, "train", seq_len=tcfg.seq_len, batch_size=tcfg.batch_size,
                                                seed=tcfg.seed, entropies=self.stored, order=tcfg.row_order))
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``i``: (ids, entropies), as the trainer's patcher gets them."""
        while len(self._batches) <= i:
            batch = next(self._iterator)
            ids, entropies = batch if self.stored is not None else (batch, self.entropy_model.entropies(batch))
            self._batches.append((ids, entropies.float()))
        return self._batches[i]


def _blt_steps(blt_cfg: BLTConfig, patching: PatchingConfig, opts: CompareOptions, data: PreparedData,
               tcfg: TrainConfig, batches: TrainingBatches, log) -> tuple[int, float, ModelCost]:
    """Steps for a BLT member such that the budget is spent at the bytes per patch of the batches those steps
    train on, and that patch size. -> (steps, bytes per patch, cost).

    The threshold is calibrated as `blt train` will calibrate it (same rows, same seed), then the training
    batches (the same iterator, seed and order as the trainer's) are patched in order, as many as the steps
    need: the calibration sample spreads over the whole split, but a short run sees only its first documents,
    whose patches may be smaller or larger (smaller on the stdlib corpus: README.md, `blt compare`). Steps
    and patch size are iterated to a fixed point."""
    calibrated, _ = calibrate_on_training_data(patching, batches.entropy_model, data, tcfg.seq_len, seed=tcfg.seed,
                                               entropies=batches.stored)
    patcher = Patcher(calibrated, batches.entropy_model)
    counts: list[tuple[int, int]] = []  # (byte targets, patches after BOS) of each batch, in training order
    bytes_per_step = tcfg.batch_size * tcfg.seq_len
    size, steps = float(patching.target_patch_size), 0
    for _ in range(PLAN_ROUNDS):
        cost = blt_cost(blt_cfg, size, tcfg.seq_len)
        previous, steps = steps, max(1, round(opts.budget / (cost.training * bytes_per_step)))
        while len(counts) < steps:
            ids, entropies = batches[len(counts)]
            lengths = patcher(ids, entropies)
            counts.append((count_targets(ids), int((lengths[:, 1:] > 0).sum())))
        size = sum(t for t, _ in counts[:steps]) / max(1, sum(q for _, q in counts[:steps]))
        if steps == previous:
            break
    else:
        log(f"compare: steps for patch size {patching.target_patch_size:g} did not settle in {PLAN_ROUNDS} rounds; "
            f"the budget may be off by a step")
    return steps, size, blt_cost(blt_cfg, size, tcfg.seq_len)


def _train_member(member: Member, opts: CompareOptions, eval_every: int, log) -> str:
    """Train (or continue, or skip) one member; returns what was done."""
    run_dir = Path(opts.out) / member.name
    records = read_metrics(run_dir / "metrics.jsonl")
    if (run_dir / "model.safetensors").is_file() and records and records[-1]["step"] >= member.steps:
        return "finished before"
    resume = (run_dir / "config.json").is_file() and latest_checkpoint(run_dir / "checkpoints") is not None
    train_overrides = [f"eval_every={eval_every}", f"checkpoint_every={eval_every}", *opts.train_overrides]
    if opts.warmup_fraction is not None:
        train_overrides.append(f"warmup_steps={warmup_steps(member.steps, opts.warmup_fraction)}")
    overrides = opts.blt_overrides if member.kind == "blt" else opts.token_overrides
    run_opts = RunOptions(data=Path(opts.data), out=run_dir, preset=opts.preset, model_overrides=list(overrides),
                          train_overrides=train_overrides, steps=member.steps, precision=opts.precision,
                          resume=resume, force=not resume, progress=opts.progress)
    if member.kind == "blt":
        train_blt(run_opts, _member_patching_changes(member.patch_size), opts.entropy_model, log=log)
    elif member.kind == "bpe":
        train_token_model(run_opts, "bpe", tokenizer_file=Path(opts.out) / TOKENIZER_FILE, log=log)
    else:
        train_token_model(run_opts, "byte", log=log)
    return "resumed" if resume else "trained"


def warmup_steps(steps: int, fraction: float) -> int:
    """Warmup steps of a member of ``steps`` steps: members of one budget train for very different numbers of
    steps (at 1e13 FLOPs, `paper-xs` BLT at 6 bytes per patch 169, the byte model 34), and a fixed warmup
    would leave the short ones below their peak learning rate."""
    return round(fraction * steps)


def _bytes_per_second(records: list[dict]) -> float | None:
    """Median training throughput over the logged windows (the first, with start-up costs, left out)."""
    speeds = [r["bytes_per_s"] for r in records if "bytes_per_s" in r]
    return statistics.median(speeds[1:] or speeds) if speeds else None


def _row(member: Member, cost: ModelCost, opts: CompareOptions, data: PreparedData, tcfg: TrainConfig,
         bytes_per_step: int) -> dict:
    run_dir = Path(opts.out) / member.name
    records = read_metrics(run_dir / "metrics.jsonl")
    result = evaluate_run(load(run_dir), data, seq_len=tcfg.seq_len, batch_size=tcfg.batch_size)
    steps = records[-1]["step"] if records else 0
    return {
        "name": member.name,
        "kind": member.kind,
        "target_patch_size": member.patch_size,
        "val_bpb": result.bits_per_byte,
        "val_bytes": result.bytes,
        "bytes_per_step_of_model": cost.bytes_per_step,  # mean patch size, bytes per token, or 1
        "train_flops_per_byte": cost.training,
        "inference_flops_per_byte": cost.inference,
        "planned_train_flops_per_byte": member.planned_training_flops_per_byte,
        "planned_patch_size": member.planned_patch_size,
        "train_flops": steps * bytes_per_step * cost.training,
        "parameters": cost.parameters,
        "bytes_per_s": _bytes_per_second(records),
        "steps": steps,
        "curve": [{"step": r["step"], "flops": r["step"] * bytes_per_step * cost.training, "val_bpb": r["val_bpb"]}
                  for r in records if "val_bpb" in r],
    }


def compare(opts: CompareOptions, log=print) -> dict:
    """Plan, train every member (resuming), evaluate each on the whole validation split, and write the
    table and the plot. Returns what ``compare.json`` holds."""
    _check(opts)
    data = PreparedData.open(opts.data)
    _prepare_out(opts)
    tcfg = train_config(opts)
    bytes_per_step = tcfg.batch_size * tcfg.seq_len
    saved = _read_plan(Path(opts.out) / PLAN_FILE)
    if saved.get("members"):  # continuing: the runs in OUT were started from this plan (same settings)
        members, measured = [Member(**m) for m in saved["members"]], saved.get("measured", {})
        log(f"compare: continuing the plan in {Path(opts.out) / PLAN_FILE}")
    else:
        members, measured = plan(opts, data, tcfg, log)
    plan_record = {"settings": opts.settings(), "bytes_per_step": bytes_per_step, "measured": measured,
                   "members": [asdict(m) for m in members]}
    atomic_write_text(Path(opts.out) / PLAN_FILE, json.dumps(plan_record, indent=2) + "\n")
    log(f"compare: budget {opts.budget:.3g} training FLOPs per member, {bytes_per_step:,} bytes per step")
    for m in members:
        log(f"  {m.name:<9} {format_flops(m.planned_training_flops_per_byte):>8} FLOPs/byte -> {m.steps:,} steps "
            f"({m.steps * bytes_per_step:,} bytes)")
    rows = []
    for m in members:
        start = time.perf_counter()
        done = _train_member(m, opts, eval_every=max(1, math.ceil(m.steps / opts.evals)), log=log)
        log(f"compare: {m.name} {done} ({time.perf_counter() - start:,.0f} s)")
        rows.append(_row(m, run_cost(Path(opts.out) / m.name), opts, data, tcfg, bytes_per_step))
    result = {"settings": opts.settings(), "bytes_per_step": bytes_per_step, "measured": measured, "members": rows}
    out = Path(opts.out)
    atomic_write_text(out / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "compare.md", compare_table(result) + "\n")
    plot_bpb_vs_flops(result, out / "bpb_vs_flops.png")
    return result


def _shown_path(path: str) -> str:
    """A recorded (resolved) path, relative to the working directory when it lies inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def compare_table(result: dict) -> str:
    """The comparison as a Markdown table."""
    s = result["settings"]
    lines = [
        (f"Budget {s['budget']:.3g} training FLOPs per model, preset `{s['preset']}`, {result['bytes_per_step']:,} "
         f"bytes per step; validation bits per byte over the whole validation split of `{_shown_path(s['data'])}`."),
        "",
        ("| model | val BPB | train FLOPs/byte | inference FLOPs/byte | params (non-emb) | params (total) | "
         "bytes/step | bytes/s | steps |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["members"]:
        speed = f"{r['bytes_per_s']:,.0f}" if r["bytes_per_s"] is not None else "-"
        unit = {"blt": "patch", "bpe": "token", "byte": "byte"}[r["kind"]]
        lines.append(
            f"| {r['name']} | {r['val_bpb']:.3f} | {format_flops(r['train_flops_per_byte'])} | "
            f"{format_flops(r['inference_flops_per_byte'])} | {r['parameters']['non_embedding']:,} | "
            f"{r['parameters']['total']:,} | {r['bytes_per_step_of_model']:.2f} per {unit} | {speed} | {r['steps']:,} |"
        )
    return "\n".join(lines)

