"""Kill anywhere: a training run SIGKILLed at points drawn by a seeded schedule — between steps, inside a
tensor file's write, before and after each rename, inside the pruning of old checkpoints, inside the append
of a metrics line — and resumed each time, ends with the weights, optimizer state and metrics of a run that
was never interrupted, bit for bit.

Each attempt runs `blt.cli.main` (the command a user types, with ``--resume`` once the run has a
config.json and ``--force`` before) in a process forked from a server that imported torch and blt once, so
an attempt costs a fork, not an interpreter start. The process counts the points it passes and kills itself
at the one the schedule chose. The short schedule runs in CI; ``pytest -m long`` runs the long one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from blt.cli import main
from tests.train.test_cli import BLT_SET, ENTROPY_SET, TRAIN_SET, sets

TOKEN_SET = ["dim=64", "n_layers=1", "n_heads=2"]
# 12 steps, a checkpoint every 4 steps and whenever 0.1 s passed (so the timed ones come at steps that depend
# on the machine's speed: the result must not), two kept (so every checkpoint prunes one)
RUN_SET = ["train.checkpoint_every=4", "train.checkpoint_minutes=0.0017", "train.keep_checkpoints=2",
           "train.eval_every=4", "train.warmup_steps=2"]
STEPS = 12
TIMING_FIELDS = {"bytes_per_s"}  # wall-clock speed, the one field of a record that differs between runs


def _argv(kind: str, data: Path, entropy_run: Path, out: Path) -> list[str]:
    common = ["--data", str(data), "--out", str(out), "--steps", str(STEPS), "--quiet", *sets(TRAIN_SET + RUN_SET)]
    if kind == "blt":
        return ["train", *common, "--entropy-model", str(entropy_run), "--target-patch-size", "3", *sets(BLT_SET)]
    return ["train-baseline", "--kind", "bpe", "--vocab-size", "300", *common, *sets(TOKEN_SET)]


# --- the child: train until the chosen point, then die ------------------------------------------------

def _child(argv: list[str], kill_at: int | None, count_file: str) -> None:
    """Run ``blt argv`` and SIGKILL this process at its ``kill_at``-th point (None: never); write the number of
    points passed to ``count_file`` when it ends by itself, or the kind of point it died at."""
    import threading

    import safetensors.torch
    import torch
    from tqdm.auto import tqdm

    import blt.train.checkpoint
    import blt.train.loop

    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())  # not a multiprocessing lock, which a killed process would leave behind
    passed = 0

    def point(kind: str) -> bool:
        """Count a point; True when this is the one to die at."""
        nonlocal passed
        passed += 1
        if passed == kill_at:
            Path(count_file).write_text(kind)
        return passed == kill_at

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def wrap(function, kind: str, before: bool = True):
        def wrapped(*args, **kwargs):
            if before and point(f"before {kind}"):
                die()
            result = function(*args, **kwargs)
            if point(f"after {kind}"):
                die()
            return result
        return wrapped

    def cut_short(write, data_of, kind: str):
        """A write that, at its point, puts down half of what it would write and dies."""
        def wrapped(*args, **kwargs):
            if point(f"inside {kind}"):
                path, payload = data_of(*args, **kwargs)
                with open(path, "ab") as f:
                    f.write(payload[: len(payload) // 2])
                    f.flush()
                die()
            return write(*args, **kwargs)
        return wrapped

    def rmtree_partly(rmtree):
        """Pruning that, at its point, removes one file of the folder and dies."""
        def wrapped(path, *args, **kwargs):
            if point("inside the pruning of a folder"):
                files = sorted(p for p in Path(path).rglob("*") if p.is_file())
                if files:
                    files[0].unlink()
                die()
            return rmtree(path, *args, **kwargs)
        return wrapped

    os.replace = wrap(os.replace, "a rename")
    shutil.rmtree = rmtree_partly(shutil.rmtree)
    blt.train.loop.Trainer.train_step = wrap(blt.train.loop.Trainer.train_step, "a step", before=False)
    blt.train.checkpoint.save_file = cut_short(
        safetensors.torch.save_file,
        lambda tensors, path, metadata=None: (path, safetensors.torch.save(tensors, metadata)), "a tensor file's write")
    blt.train.loop.append_metrics = cut_short(
        blt.train.loop.append_metrics, lambda path, record: (path, (json.dumps(record) + "\n").encode()),
        "a metrics append")
    code = main(argv)
    Path(count_file).write_text(str(passed))
    raise SystemExit(code)


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "blt.cli", "blt.pipelines.recipes", "tests.train.test_kill_anywhere"])


def _attempt(argv: list[str], kill_at: int | None, tmp: Path) -> tuple[int, str | None]:
    """Exit code of one attempt (-9 when it was killed) and what it wrote: the number of points it passed when
    it ended by itself, or the kind of point it was killed at."""
    count_file = tmp / "points"
    count_file.unlink(missing_ok=True)
    process = _CONTEXT.Process(target=_child, args=(argv, kill_at, str(count_file)))
    process.start()
    process.join(timeout=300)
    assert process.exitcode is not None, "an attempt hung"
    return process.exitcode, count_file.read_text() if count_file.is_file() else None


def run_with_kills(argv_for, out: Path, schedule_seed: int, kills: int, points: int, tmp: Path) -> list[str]:
    """Train ``argv_for(out)`` to the end, SIGKILLed at a random one of its first ``points`` points in each of
    up to ``kills`` attempts (resuming with --resume once a config.json exists, else --force, as a user
    would); returns the kinds of point of the kills it survived (fewer than ``kills`` when it finished first)."""
    rng = random.Random(schedule_seed)
    survived = []
    for _ in range(kills + 1):
        argv = argv_for(out) + (["--resume"] if (out / "config.json").is_file() else ["--force"])
        kill_at = rng.randint(1, points) if len(survived) < kills else None
        code, kind = _attempt(argv, kill_at, tmp)
        if code == -signal.SIGKILL:
            survived.append(kind)
            continue
        assert code == 0, f"attempt {argv} (kill at {kill_at}) exited with {code}"
        return survived
    raise AssertionError("the run did not finish after its last kill")


# --- what must be equal -----------------------------------------------------------------------------

def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in load_file(path).items()}


def assert_same_run(a: Path, b: Path) -> None:
    from blt.train import read_metrics
    from blt.train.checkpoint import latest_checkpoint

    for name in ("model.safetensors",):
        ta, tb = _tensors(a / name), _tensors(b / name)
        assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta), name
    ca, cb = latest_checkpoint(a / "checkpoints"), latest_checkpoint(b / "checkpoints")
    assert ca.step == cb.step == STEPS
    assert ca.optimizer.keys() == cb.optimizer.keys()
    assert [k for k in ca.optimizer if not np.array_equal(ca.optimizer[k].numpy(), cb.optimizer[k].numpy())] == []
    assert ca.state["optimizer"] == cb.state["optimizer"] and ca.state["data"] == cb.state["data"]
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
    ra, rb = strip(read_metrics(a / "metrics.jsonl")), strip(read_metrics(b / "metrics.jsonl"))
    assert [r["step"] for r in ra] == list(range(1, STEPS + 1))
    assert ra == rb
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())


@pytest.fixture(scope="module")
def entropy_run(text_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill") / "ent"
    assert main(["train-entropy", "--data", str(text_data.path), "--out", str(out), "--steps", "2", "--quiet",
                 *sets(ENTROPY_SET + TRAIN_SET)]) == 0
    return out


def _kill_anywhere(kind: str, text_data, entropy_run: Path, tmp_path: Path, seeds: list[int],
                   kills: int) -> Counter:
    argv_for = lambda out: _argv(kind, text_data.path, entropy_run, out)
    reference = tmp_path / "reference"
    code, points = _attempt(argv_for(reference), None, tmp_path)
    points = int(points)
    assert code == 0 and points > STEPS
    survived = Counter()
    for seed in seeds:
        killed = tmp_path / f"killed_{seed}"
        # each attempt dies within about a third of a whole run's points, so that most get some steps done
        survived.update(run_with_kills(argv_for, killed, seed, kills, max(2, points // 3), tmp_path))
        assert_same_run(killed, reference)
        shutil.rmtree(killed)
    print(f"kill anywhere ({kind}): {survived.total()} kills survived ({points} points in a run):",
          ", ".join(f"{n} {where}" for where, n in survived.most_common()))
    return survived


@pytest.mark.parametrize("kind", ["blt", "bpe"])
def test_kill_anywhere_then_resume_equals_uninterrupted(kind, text_data, entropy_run, tmp_path):
    assert _kill_anywhere(kind, text_data, entropy_run, tmp_path, seeds=[0], kills=8).total() >= 4


@pytest.mark.long
@pytest.mark.parametrize("kind", ["blt", "bpe"])
def test_kill_anywhere_long(kind, text_data, entropy_run, tmp_path):
    seeds = list(range(1, 9))
    survived = _kill_anywhere(kind, text_data, entropy_run, tmp_path, seeds=seeds, kills=25)
    assert survived.total() >= 10 * len(seeds) and len(survived) >= 6, survived
