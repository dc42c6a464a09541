"""The MEGABYTE-style baseline is BLT with static patches and no hash embeddings: `blt train --patching static
--patch-size K --set hash.num_functions=0`; its FLOPs are counted at K bytes per patch."""

from __future__ import annotations

import blt
from blt.cli import main
from blt.flops import run_cost
from tests.baselines.conftest import MICRO_BLT_SET, MICRO_TRAIN_SET


def test_static_patches_without_hash_embeddings_train_and_evaluate(text_data, tmp_path, capsys):
    sets = [arg for v in MICRO_BLT_SET + [f"train.{v}" for v in MICRO_TRAIN_SET] + ["hash.num_functions=0"]
            for arg in ("--set", v)]
    out = tmp_path / "megabyte"
    assert main(["train", "--data", str(text_data.path), "--out", str(out), "--patching", "static", "--patch-size", "4",
                 "--steps", "2", "--quiet", *sets]) == 0
    run = blt.load(out)
    assert run.model.hash_embedding is None and run.entropy_model is None
    assert run.config.patching.mode == "static" and run.config.patching.patch_size == 4
    assert main(["eval", str(out), "--batches", "1"]) == 0
    assert "mean patch size" in capsys.readouterr().out
    cost = run_cost(out)
    assert 3 < cost.bytes_per_step <= 4 and cost.parameters["hash_embedding"] == 0 and cost.patcher is None
