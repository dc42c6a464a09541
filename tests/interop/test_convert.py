"""`blt convert` against transformers' BltForCausalLM: logits, entropies and patches agree; round trips
are bit-exact; bad checkpoints are refused with one line and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BltForCausalLM

from blt.config import BLTConfig, EntropyModelConfig, PatchingConfig
from blt.interop.hf import hf_model_config
from blt.model import ByteLatentTransformer
from blt.patching import EntropyModel, Patcher
from blt.run import ENTROPY_SUBDIR, load, write_run_config
from blt.train.checkpoint import load_tensors, save_tensors, verify_weights
from tests.helpers import random_ids
from tests.interop.builders import (
    hf_blt_with_patcher,
    small_config,
    small_entropy_config,
)

T = 48


def strip_trailing_zeros(lengths: torch.Tensor) -> torch.Tensor:
    """(1, P) -> (1, P') without right padding."""
    return lengths[:, : int((lengths[0] > 0).sum())]


def threshold_between(entropies: torch.Tensor) -> float:
    """A threshold near the median entropy that is at least 1e-3 from every entropy that decides a
    boundary (H_1 .. H_{T-1}), so tiny float differences between implementations cannot flip one."""
    values = entropies[0, 1:].sort().values
    gaps = values[1:] - values[:-1]
    mids = ((values[1:] + values[:-1]) / 2)[gaps > 2e-3]
    return float(mids[(mids - values.median()).abs().argmin()])


CASES = {
    "k=2, one hash function, sliding windows": {"cfg": small_config()},
    "k=1, two hash functions, decoder cross-attn first layer only, sharded save": {
        "cfg": small_config(k=1, functions=2, dec_all=False), "sharded": True},
    "k=4, encoder width != global width, max_patch_length 3": {"cfg": small_config(k=4, glob_dim=48), "max_patch_length": 3},
    "k=2, full causal local models and patcher": {"cfg": small_config(window=None), "entropy_window": None},
}


@pytest.mark.parametrize("name", list(CASES))
def test_from_hf_matches_transformers(name, tmp_path, convert):
    case = CASES[name]
    max_patch_length, sharded = case.get("max_patch_length"), case.get("sharded", False)
    entropy_cfg = small_entropy_config(window=case.get("entropy_window", 8))
    hf = hf_blt_with_patcher(case["cfg"], entropy_cfg, threshold=1.5, seed=0, max_patch_length=max_patch_length)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB" if sharded else "5GB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() == sharded

    code, _, err = convert("--from-hf", tmp_path / "hf", "--out", tmp_path / "run")
    assert code == 0, err
    run = load(tmp_path / "run")
    assert run.config.patching == PatchingConfig(mode="entropy", threshold=1.5, max_patch_length=max_patch_length)
    assert run.entropy_model is not None

    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        ids = random_ids(1, T, gen)  # one row: transformers' patcher mis-pads batches of rows (module notes)
        with torch.no_grad():
            hf_entropies, _, _ = hf.model.patcher(ids)
            entropies = run.entropy_model.entropies(ids)
            torch.testing.assert_close(entropies, hf_entropies, atol=1e-4, rtol=0)

            threshold = threshold_between(entropies)
            _, hf_lengths, _ = hf.model.patcher(ids, patch_size=4, threshold=threshold,
                                                max_patch_length=max_patch_length)
            lengths = Patcher(run.config.patching.replace(threshold=threshold), run.entropy_model)(ids)
            torch.testing.assert_close(strip_trailing_zeros(hf_lengths), lengths, rtol=0, atol=0)
            # transformers appends an empty patch when the last entropy passes the threshold.
            trailing_empty = max_patch_length is None and bool(entropies[0, -1] > threshold)
            assert (hf_lengths.shape[1] > lengths.shape[1]) == trailing_empty

            # Same input, same patch lengths: same logits.
            logits = run.model(ids, lengths)
            expected = hf(input_ids=ids, patch_lengths=lengths, use_cache=False).logits
            torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)

            # transformers patching in its forward: the same, but for the last byte after an empty patch.
            hf.config.patching_threshold = threshold
            patched_in_forward = hf(input_ids=ids, use_cache=False).logits
            agree = slice(None, -1) if trailing_empty else slice(None)
            torch.testing.assert_close(logits[:, agree], patched_in_forward[:, agree], atol=1e-4, rtol=1e-4)


def test_last_byte_reads_the_just_completed_patch_in_transformers(tmp_path, convert):
    """The documented difference: when H_{T-1} > θ, transformers' patcher appends an empty patch and the
    last byte then reads its own patch's global state; ours reads the previous patch's."""
    cfg, entropy_cfg = small_config(), small_entropy_config()
    hf = hf_blt_with_patcher(cfg, entropy_cfg, threshold=1.5, seed=3)
    hf.save_pretrained(tmp_path / "hf")
    assert convert("--from-hf", tmp_path / "hf", "--out", tmp_path / "run")[0] == 0
    run = load(tmp_path / "run")
    ids = random_ids(1, T, torch.Generator().manual_seed(4))
    with torch.no_grad():
        entropies = run.entropy_model.entropies(ids)
        threshold = float(entropies[0, -1]) - 1e-2
        hf.config.patching_threshold = threshold
        _, hf_lengths, _ = hf.model.patcher(ids, patch_size=4, threshold=threshold)
        assert int(hf_lengths[0, -1]) == 0
        lengths = Patcher(run.config.patching.replace(threshold=threshold), run.entropy_model)(ids)
        ours, theirs = run.model(ids, lengths), hf(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(ours[:, :-1], theirs[:, :-1], atol=1e-4, rtol=1e-4)
    assert (ours[:, -1] - theirs[:, -1]).abs().max() > 1e-2


def write_run(path: Path, cfg: BLTConfig, entropy_cfg: EntropyModelConfig | None, seed: int) -> None:
    write_run_config(path, "blt", cfg)
    save_tensors(path / "model.safetensors", ByteLatentTransformer(cfg).init_weights(seed=seed).state_dict())
    if entropy_cfg is not None:
        write_run_config(path / ENTROPY_SUBDIR, "entropy_model", entropy_cfg)
        entropy_model = EntropyModel(entropy_cfg).init_weights(seed=seed + 1)
        save_tensors(path / ENTROPY_SUBDIR / "model.safetensors", entropy_model.state_dict())


@pytest.mark.parametrize("patching", [
    PatchingConfig(mode="entropy", threshold=1.25, max_patch_length=6),
    PatchingConfig(mode="combined", threshold=1.25, relative_threshold=0.5),
], ids=["global threshold: the patcher goes along", "combined: exported without the patcher"])
def test_round_trip_ours_hf_ours_is_bit_exact(patching, tmp_path, convert):
    cfg = small_config(k=4, functions=2, glob_dim=48).replace(patching=patching)
    entropy_cfg = small_entropy_config()
    write_run(tmp_path / "run", cfg, entropy_cfg, seed=5)

    code, out, err = convert("--to-hf", tmp_path / "run", "--out", tmp_path / "hf")
    assert code == 0, err
    hf, info = BltForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    exported_patcher = patching.mode == "entropy"
    assert hf.config.patch_in_forward == exported_patcher and (hf.model.patcher is not None) == exported_patcher
    assert ("note:" in out) != exported_patcher

    assert convert("--from-hf", tmp_path / "hf", "--out", tmp_path / "back")[0] == 0
    for sub in ["", ENTROPY_SUBDIR] if exported_patcher else [""]:
        before = load_tensors(tmp_path / "run" / sub / "model.safetensors")
        after = load_tensors(tmp_path / "back" / sub / "model.safetensors")
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
        assert verify_weights(tmp_path / "back" / sub / "model.safetensors")  # its sha256 is recorded
    back = load(tmp_path / "back")
    assert back.config.patching == patching
    back_entropy = back.entropy_model.cfg if exported_patcher else None
    assert hf_model_config(back.config, back_entropy) == hf_model_config(cfg, entropy_cfg if exported_patcher else None)


def test_to_hf_needs_a_threshold_and_a_free_destination(tmp_path, convert):
    cfg = small_config().replace(patching=PatchingConfig(mode="entropy", target_patch_size=4.5))
    write_run(tmp_path / "run", cfg, small_entropy_config(), seed=0)
    code, _, err = convert("--to-hf", tmp_path / "run", "--out", tmp_path / "hf")
    assert code == 2 and "--threshold" in err and not (tmp_path / "hf").exists()
    assert convert("--to-hf", tmp_path / "run", "--out", tmp_path / "hf", "--threshold", 1.4)[0] == 0
    assert BltForCausalLM.from_pretrained(tmp_path / "hf").config.patching_threshold == 1.4

    code, _, err = convert("--to-hf", tmp_path / "run", "--out", tmp_path / "hf", "--threshold", 1.2)
    assert code == 2 and "--force" in err
    assert convert("--to-hf", tmp_path / "run", "--out", tmp_path / "hf", "--threshold", 1.2, "--force")[0] == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["patching_threshold"] == 1.2

    code, _, err = convert("--to-hf", tmp_path / "run" / ENTROPY_SUBDIR, "--out", tmp_path / "x")
    assert code == 2 and "entropy-model run" in err
    code, _, err = convert("--to-hf", tmp_path / "run", "--out", tmp_path / "run", "--threshold", 1.4, "--force")
    assert code == 2 and "would replace the source" in err and (tmp_path / "run" / "model.safetensors").is_file()


# --- bad transformers checkpoints ----------------------------------------------------------------

def _edit_config(change):
    def apply(src: Path) -> None:
        config = json.loads((src / "config.json").read_text())
        change(config)
        (src / "config.json").write_text(json.dumps(config))
    return apply


def _edit_tensors(change):
    def apply(src: Path) -> None:
        tensors = load_file(src / "model.safetensors")
        change(tensors)
        save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    return apply


def _truncate(src: Path) -> None:
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])


def _shard_index_only(src: Path) -> None:
    names = load_file(src / "model.safetensors").keys()
    (src / "model.safetensors").unlink()
    index = {"weight_map": dict.fromkeys(names, "model-00001-of-00001.safetensors")}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))


BAD = {
    "missing directory": (lambda src: shutil.rmtree(src), "does not exist"),
    "no config.json": (lambda src: (src / "config.json").unlink(), "config.json does not exist"),
    "garbled config.json": (lambda src: (src / "config.json").write_text('{"model_type": "blt", '), "not valid JSON"),
    "config.json of another model": (_edit_config(lambda c: c.update(model_type="llama")), "model_type"),
    "config.json without encoder_config": (_edit_config(lambda c: c.pop("encoder_config")), "lacks 'encoder_config'"),
    "patch_in_forward without patcher tensors": (
        _edit_tensors(lambda t: [t.pop(k) for k in list(t) if k.startswith("model.patcher.")]), "missing"),
    "no weights": (lambda src: (src / "model.safetensors").unlink(), "neither model.safetensors"),
    "truncated safetensors": (_truncate, "truncated or corrupt"),
    "unknown tensor": (_edit_tensors(lambda t: t.update({"model.extra.weight": torch.zeros(2)})), "unknown tensor"),
    "missing tensor": (_edit_tensors(lambda t: t.pop("lm_head.weight")), "missing 1 tensor"),
    "shape mismatch": (_edit_config(lambda c: c.update(encoder_hash_byte_group_vocab=103)), "has shape"),
    "shard index naming a missing shard": (_shard_index_only, "names shard"),
}


@pytest.fixture(scope="module")
def saved_hf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "hf"
    hf_blt_with_patcher(small_config(), small_entropy_config(), threshold=1.5, seed=0).save_pretrained(path)
    return path


@pytest.mark.parametrize("name", list(BAD))
def test_bad_checkpoints_are_refused_with_one_line(name, saved_hf, tmp_path, convert):
    src = tmp_path / "src"
    shutil.copytree(saved_hf, src)
    corrupt, message = BAD[name]
    corrupt(src)
    code, _, err = convert("--from-hf", src, "--out", tmp_path / "run")
    assert code == 2
    assert err.startswith("blt convert: error:") and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["src"] if src.exists() else [])
