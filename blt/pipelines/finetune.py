"""`blt finetune`: train a pretrained run briefly on the train split of the character-level tasks.

The solved few-shot examples of every task, asking only about train words (and train number pairs), are
written as documents and prepared into ``OUT/data``; the run's weights, config and patching (and the
entropy model it patches with, or a baseline's tokenizer) are copied and training continues in ``OUT``
with the one `Trainer` loop. The word split is saved in ``OUT/char_words.json`` so `blt eval-char OUT` asks about exactly the
held-out words, which finetuning never saw.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from blt.data import PreparedData, prepare
from blt.errors import BLTError
from blt.evaluate.char_tasks import (
    TASKS,
    WordSplit,
    check_tasks,
    default_words,
    load_split,
    make_examples,
    save_split,
    split_words,
)
from blt.pipelines.recipes import prepare_run_dir
from blt.run import (
    ENTROPY_SUBDIR,
    copy_entropy_model,
    load,
    read_run_config,
    write_run_config,
)
from blt.train import (
    TrainConfig,
    Trainer,
    TrainResult,
    default_train_config,
    init_distributed,
    recorded_train_config,
    resolve_device,
)
from blt.train.checkpoint import WEIGHTS_FILE, latest_checkpoint
from blt.train.objectives import BLTObjective, EntropyModelObjective

DATA_SUBDIR = "data"
WORDS_FILE = "char_words.json"
DEFAULT_STEPS = 200
VAL_FRACTION = 0.1  # of the task documents, to watch the finetuning loss (train words too)


@dataclass
class FinetuneOptions:
    init: Path  # the pretrained run (BLT, entropy model or token-model baseline)
    out: Path
    steps: int | None = None  # optimizer steps (default DEFAULT_STEPS; with resume: the run's, unless given)
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    examples: int = 400  # solved few-shot examples (documents) per task
    shots: int = 3
    seed: int = 0  # examples and training order
    held_out_fraction: float = 0.2
    split_seed: int = 0  # the word split (keep equal to `blt eval-char --split-seed`)
    words: Path | None = None  # word list (default: the system dictionary, else words of the run's data)
    lr: float | None = None  # peak learning rate (default: half the pretraining peak)
    train_overrides: list[str] = field(default_factory=list)
    resume: bool = False
    force: bool = False
    progress: bool = True
    device: str = "auto"  # cpu, cuda, cuda:N, or auto (a GPU when torch sees one); `blt.train.resolve_device`


def task_documents(split: WordSplit, tasks: list[str], examples: int, shots: int, seed: int) -> dict[str, str]:
    """File name -> one solved few-shot example about train words, for each task."""
    docs = {}
    for task in check_tasks(tasks):
        for i, ex in enumerate(make_examples(task, split, examples, shots, seed, part="train")):
            docs[f"{task}/{i:05d}.txt"] = ex.text
    return docs


def finetune_train_config(base: TrainConfig, opts: FinetuneOptions) -> TrainConfig:
    """The pretraining config with the finetuning steps, a short warmup, a lower peak LR and one
    validation pass and checkpoint at the end (plus ``opts.train_overrides``)."""
    steps = opts.steps or DEFAULT_STEPS
    cfg = base.replace(steps=steps, warmup_steps=max(0, steps // 10), lr=base.lr / 2 if opts.lr is None else opts.lr,
                       eval_every=0, checkpoint_every=0, seed=opts.seed)
    return cfg.with_overrides(opts.train_overrides) if opts.train_overrides else cfg


def finetune(opts: FinetuneOptions, log=print) -> TrainResult:
    """Finetune ``opts.init`` on the train-split tasks into ``opts.out`` (or resume that)."""
    device = resolve_device(opts.device)
    world = init_distributed(device)
    out = Path(opts.out)
    if opts.resume:
        prepare_run_dir(out, resume=True, force=False)
        record = read_run_config(out)
        if "finetune" not in record:
            raise BLTError(f"--resume: {out} is not a finetuning run (from `blt finetune`)")
        # the run's own copy of the model (its checkpoints' weights), so that the pretrained run may be gone
        has_weights = (out / WEIGHTS_FILE).is_file() or latest_checkpoint(out / "checkpoints") is not None
        init = load(out if has_weights else record["finetune"]["init"], device=device)
        tcfg = recorded_train_config(record["train"])
        if opts.steps is not None and opts.steps != tcfg.steps:
            if opts.steps < 1:
                raise BLTError("--steps must be >= 1")
            tcfg = tcfg.replace(steps=opts.steps)
            if world.is_main:
                write_run_config(out, init.kind, init.config, {**record, "train": tcfg.to_dict()})
    else:
        init = load(opts.init, device=device)
        if Path(opts.init).resolve() == out.resolve():
            raise BLTError("--out must be a new run directory, not the run being finetuned")
        if (opts.steps is not None and opts.steps < 1) or opts.examples < 1:
            raise BLTError("--steps and --examples must be >= 1")
        words_file = Path(opts.init) / WORDS_FILE
        if opts.words is None and words_file.is_file():  # finetuning a finetuned run: keep its split
            split, source = load_split(words_file)
        else:
            words, source = default_words(init.info.get("data"), opts.words)
            split = split_words(words, opts.held_out_fraction, opts.split_seed)
        docs = task_documents(split, opts.tasks, opts.examples, opts.shots, opts.seed)
        base = (TrainConfig.from_dict(init.info["train"]) if "train" in init.info
                else default_train_config(init.kind, "tiny"))
        tcfg = finetune_train_config(base, opts)
        if world.is_main:
            prepare_run_dir(out, resume=False, force=opts.force)
            record = {"train": tcfg.to_dict(), "data": str(out / DATA_SUBDIR),
                      "finetune": {"init": str(opts.init), "init_data": init.info.get("data"), "tasks": opts.tasks,
                                   "examples": opts.examples, "shots": opts.shots, "words": source}}
            for key in ("tokenizer", "patching_tokenizer"):  # a token model's or BPE patching's: with the weights
                if key not in init.info:
                    continue
                from blt.baselines.tokenization import TOKENIZER_FILE

                record[key] = init.info[key]
                tokenizer_file = Path(opts.init) / init.info[key].get("file", TOKENIZER_FILE)
                if tokenizer_file.is_file():
                    shutil.copy2(tokenizer_file, out / tokenizer_file.name)
            with tempfile.TemporaryDirectory() as tmp:
                # document names start with the source directory's own name, and they decide the split: a fixed
                # name keeps the split the same from run to run (the temporary directory's is random)
                root = Path(tmp) / "tasks"
                for name, text in docs.items():
                    path = root / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
                manifest = prepare([str(root)], out / DATA_SUBDIR, val_fraction=VAL_FRACTION, seed=opts.seed,
                                   progress=False)
            if not manifest.splits["val"].documents:
                raise BLTError(f"none of the {len(docs)} task examples fell in the validation split; "
                               "pass more --examples")
            save_split(out / WORDS_FILE, split, source)
            if init.kind == "blt" and (Path(opts.init) / ENTROPY_SUBDIR).is_dir():
                copy_entropy_model(Path(opts.init) / ENTROPY_SUBDIR, out)
            write_run_config(out, init.kind, init.config, record)  # last: without it, the setup was interrupted
        world.barrier()
        log(f"finetuning {opts.init} on {len(docs)} task examples about {len(split.train)} train words "
            f"({len(split.held_out)} held out; words: {source})")
    model = init.model.train()
    if init.kind == "blt":
        objective = BLTObjective(model, init.patcher)
    elif init.kind == "token_model":
        from blt.train.objectives import TokenObjective

        objective = TokenObjective(model, init.tokenizer)
    else:
        objective = EntropyModelObjective(model)
    data = PreparedData.open(out / DATA_SUBDIR)
    trainer = Trainer(objective, data, tcfg, out, world=world, progress=opts.progress)
    return trainer.fit(resume=opts.resume)
