"""`blt train-entropy`: train the byte-level entropy model that places patch boundaries."""

from __future__ import annotations

import argparse

from blt.commands._common import add_training_arguments, run_options
from blt.config import EntropyModelConfig
from blt.pipelines.recipes import train_entropy_model
from blt.train import init_distributed


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_training_arguments(p)
    p.epilog = "Presets: " + ", ".join(EntropyModelConfig.preset_names())


def run(args: argparse.Namespace) -> int:
    result = train_entropy_model(run_options(args))
    if init_distributed().is_main:
        print(result.summary("entropy model"))
    return 0
