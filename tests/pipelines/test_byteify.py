"""Byteifying: the BLT's global transformer is the token model's blocks, computing what they compute."""

from __future__ import annotations

import json

import pytest
import torch

from blt.baselines.model import TokenLM, TokenModelConfig
from blt.config import BLTConfig
from blt.errors import BLTError
from blt.model.attention import CausalMask
from blt.model.byte_latent import PatchLayout
from blt.pipelines.byteify import byteified_config, byteify, read_token_source
from blt.pipelines.recipes import RunOptions, train_token_model
from blt.tokenizer import BOS_ID, PAD_ID
from tests.baselines.conftest import MICRO_TRAIN_SET

transformers = pytest.importorskip("transformers")

BASE = BLTConfig.preset("tiny").with_overrides(["encoder.dim=32", "encoder.n_heads=2", "decoder.dim=32",
                                                 "decoder.n_heads=2", "hash.rows=97", "max_seq_len=64"])


def blocks_output(stack, h: torch.Tensor) -> torch.Tensor:
    """A token model's blocks over states h (1, P, D), one document, causal."""
    rope = stack.rope(torch.arange(h.shape[1]))
    mask = CausalMask(torch.zeros(1, h.shape[1], dtype=torch.long), None)
    for layer in stack.layers:
        h = layer(h, rope, mask)
    return h


def check_global_model_is_the_token_model(source):
    model = byteify(source, BASE, seed=3).eval()
    assert model.cfg.global_model.dim == source.config.dim and model.cfg.encoder == BASE.encoder
    token = TokenLM(source.config).eval()
    token.transformer.load_state_dict(source.blocks)
    P = 10
    ids = torch.full((1, P), 70)
    ids[0, 0] = BOS_ID
    layout = PatchLayout.build(ids, torch.ones(1, P, dtype=torch.long))  # one byte per patch: P patches
    patches = torch.randn(1, P, model.global_model.input_projection.in_features
                          if model.global_model.input_projection is not None else source.config.dim)
    with torch.no_grad():
        h = model.global_model.input_projection(patches) if model.global_model.input_projection is not None else patches
        torch.testing.assert_close(model.global_model(patches, layout), blocks_output(token.transformer, h),
                                   atol=1e-6, rtol=1e-6)


def test_from_a_llama_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=96, vocab_size=300, rope_theta=10000.0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path, safe_serialization=True)
    source = read_token_source(tmp_path)
    assert source.kind == "llama" and source.config.rope_theta == 10000.0 and source.config.n_kv_heads == 2
    assert byteified_config(source, BASE).global_model.ffn_dim == 96
    check_global_model_is_the_token_model(source)


def test_from_a_blt_token_model_run(text_data, tmp_path):
    out = tmp_path / "byte"
    train_token_model(RunOptions(data=text_data.path, out=out, model_overrides=["dim=32", "n_layers=1", "n_heads=2"],
                                 train_overrides=MICRO_TRAIN_SET, steps=2, progress=False), "byte")
    source = read_token_source(out)
    assert source.kind == "token_model" and isinstance(source.config, TokenModelConfig)
    check_global_model_is_the_token_model(source)


def test_what_is_not_a_token_model_is_refused(tmp_path, entropy_run):
    with pytest.raises(BLTError, match="neither a blt token-model run"):
        read_token_source(tmp_path)
    with pytest.raises(BLTError, match="token-model"):
        read_token_source(entropy_run)


# --- the two stages -----------------------------------------------------------------------------------

LOCAL_SET = ["encoder.dim=32", "encoder.n_heads=2", "decoder.dim=32", "decoder.n_heads=2", "hash.rows=97",
             "max_seq_len=64"]


def byteify_cli(capsys, *argv) -> tuple[int, str, str]:
    from blt.cli import main

    try:
        code = main(["byteify", *map(str, argv)])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def bpe_source(text_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe-source") / "bpe"
    train_token_model(RunOptions(data=text_data.path, out=out, model_overrides=["dim=32", "n_layers=2", "n_heads=2"],
                                 train_overrides=MICRO_TRAIN_SET, steps=4, progress=False), "bpe", vocab_size=300)
    return out


def stage_argv(source, data, out, *extra):
    sets = [a for item in LOCAL_SET + [f"train.{t}" for t in MICRO_TRAIN_SET] for a in ("--set", item)]
    return (source, "--data", data, "--out", out, "--preset", "tiny", "--stage1-steps", 3, "--stage2-steps", 2,
            "--quiet", *sets, *extra)


def test_byteify_trains_stage_one_frozen_then_stage_two_with_a_slower_global_model(capsys, bpe_source, text_data,
                                                                                   tmp_path):
    from blt.run import load

    code, out, err = byteify_cli(capsys, *stage_argv(bpe_source, text_data.path, tmp_path / "byteified"))
    assert code == 0, err
    assert f"-> {tmp_path / 'byteified' / 'stage2'}" in out
    source = read_token_source(bpe_source)
    stage1, stage2 = load(tmp_path / "byteified" / "stage1"), load(tmp_path / "byteified" / "stage2")
    assert stage1.config.patching.mode == "bpe" and stage2.config.patching.mode == "bpe"
    for name, tensor in source.blocks.items():  # frozen in stage 1: still the source's
        assert torch.equal(stage1.model.global_model.transformer.state_dict()[name], tensor), name
    moved = [n for n, t in source.blocks.items() if not torch.equal(stage2.model.global_model.transformer.state_dict()[n], t)]
    assert moved  # trained in stage 2
    fresh = byteify(source, BLTConfig.preset("tiny").with_overrides(LOCAL_SET), seed=0)
    assert not torch.equal(stage1.model.byte_embedding.weight, fresh.byte_embedding.weight)
    train2 = stage2.info["train"]
    assert train2["lr_scaled"] == ["global_model."] and train2["lr_scale"] == 0.1 and stage1.info["train"]["freeze"] == ["global_model."]
    record = json.loads((tmp_path / "byteified" / "byteify.json").read_text())
    assert set(record["stages"]) == {"stage1", "stage2"} and record["stages"]["stage1"]["steps"] == 3

    code, out, _ = byteify_cli(capsys, *stage_argv(bpe_source, text_data.path, tmp_path / "byteified"), "--resume")
    assert code == 0 and "stage 1," not in out  # both finished: nothing trains again


def test_a_frozen_prefix_is_not_trained_and_a_scaled_one_follows_its_share_of_the_schedule(text_data, tmp_path):
    from blt.config import PatchingConfig
    from blt.model.byte_latent import ByteLatentTransformer
    from blt.patching import Patcher
    from blt.train import TrainConfig, Trainer
    from blt.train.objectives import BLTObjective

    cfg = BLTConfig.preset("tiny").with_overrides(LOCAL_SET + ["global_model.dim=32", "global_model.n_layers=1",
                                                               "global_model.n_heads=2"])
    model = ByteLatentTransformer(cfg).init_weights(seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tcfg = TrainConfig(steps=2, batch_size=4, seq_len=64, warmup_steps=0, eval_every=0, checkpoint_every=0,
                       freeze=("global_model.",))
    trainer = Trainer(BLTObjective(model, Patcher(PatchingConfig(mode="static", patch_size=4))), text_data, tcfg,
                      tmp_path / "frozen", progress=False)
    trainer.train_step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("global_model."), n

    model = ByteLatentTransformer(cfg).init_weights(seed=0)
    tcfg = tcfg.replace(freeze=(), lr_scaled=("global_model.",), lr_scale=0.25)
    trainer = Trainer(BLTObjective(model, Patcher(PatchingConfig(mode="static", patch_size=4))), text_data, tcfg,
                      tmp_path / "scaled", progress=False)
    trainer.train_step()
    scaled = {id(p) for n, p in model.named_parameters() if n.startswith("global_model.")}
    for group in trainer.optimizer.param_groups:
        expected = tcfg.lr_at(0) * (0.25 if {id(p) for p in group["params"]} <= scaled and group["params"] else 1.0)
        assert group["lr"] == pytest.approx(expected)
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("case, message", [
    ("not a token model", "is neither a blt token-model run"),
    ("global override", "--set global_model.*: the global model is the source's blocks"),
    ("llama without tokenizer", "needs its BPE tokenizer; pass --tokenizer FILE"),
    ("entropy in stage 1", "argument --patching: invalid choice: 'entropy'"),
    ("stage 2 entropy without model", "--stage2-patching entropy needs --entropy-model RUN"),
    ("bad freeze", "train.freeze: no parameter name starts with 'nothing.'"),
])
def test_bad_input_is_one_line(capsys, bpe_source, text_data, tmp_path, case, message):
    llama = tmp_path / "llama"
    if case == "llama without tokenizer":
        cfg = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                       intermediate_size=48, vocab_size=300)
        transformers.LlamaForCausalLM(cfg).save_pretrained(llama, safe_serialization=True)
        capsys.readouterr()  # transformers' own progress bar
    source = {"not a token model": tmp_path, "llama without tokenizer": llama}.get(case, bpe_source)
    extra = {"global override": ("--set", "global_model.n_layers=3"), "entropy in stage 1": ("--patching", "entropy"),
             "stage 2 entropy without model": ("--stage2-patching", "entropy"),
             "bad freeze": ("--set", "train.freeze=[\"nothing.\"]")}.get(case, ())
    argv = stage_argv(source, text_data.path, tmp_path / "out", *extra)
    code, out, err = byteify_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("blt byteify: error: ") and err.count("\n") == 1 and message in err


def test_a_byteified_run_converts_to_transformers_with_the_same_logits(capsys, bpe_source, text_data, tmp_path):
    from transformers import BltForCausalLM

    from blt.cli import main
    from blt.run import load

    code, _, err = byteify_cli(capsys, *stage_argv(bpe_source, text_data.path, tmp_path / "byteified"))
    assert code == 0, err
    assert main(["convert", "--to-hf", str(tmp_path / "byteified" / "stage2"), "--out", str(tmp_path / "hf")]) == 0
    assert "pass patch_lengths" in capsys.readouterr().out  # BPE patching does not travel: say so
    run = load(tmp_path / "byteified" / "stage2")
    hf = BltForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([[BOS_ID, *[b + 4 for b in b"def byteify(source):\n    return blocks\n"]]])
    with torch.no_grad():
        lengths = run.patcher(ids)
        ours = run.model(ids, lengths)
        theirs = hf(input_ids=ids, patch_lengths=lengths, use_cache=False).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def _distill_objective(source_path, weight=1.0, loss="cosine"):
    from blt.baselines.tokenization import BPETokenizer
    from blt.config import PatchingConfig
    from blt.patching import Patcher
    from blt.train.objectives import EmbeddingDistillObjective

    source = read_token_source(source_path)
    tokenizer = BPETokenizer.load(source_path / "tokenizer.json")
    model = byteify(source, BLTConfig.preset("tiny").with_overrides(LOCAL_SET + ['patching.mode="bpe"']), seed=0)
    patcher = Patcher(PatchingConfig(mode="bpe"), tokenizer=tokenizer)
    return EmbeddingDistillObjective(model, patcher, source.embedding, tokenizer, weight, loss), source, tokenizer


def test_distillation_pulls_each_patch_toward_the_embedding_of_its_token(bpe_source, text_data):
    from blt.data import validation_batches
    from blt.train.objectives import BLTObjective

    objective, source, tokenizer = _distill_objective(bpe_source, weight=0.5)
    model = objective.model
    ids = next(iter(validation_batches(text_data, 64, 4)))
    lengths = objective.patcher(ids)
    tokens = tokenizer.tokenize_rows(ids)
    # BPE patching at the source tokenizer's starts: one patch per token, BOS and EOS included
    assert (lengths > 0).sum(1).tolist() == (tokens != PAD_ID).sum(1).tolist()
    exact = source.embedding[tokens[:, :lengths.shape[1]]]
    real = float((lengths > 0).sum())
    assert float(objective.distill_sum(exact, lengths, tokens)) == pytest.approx(0.0, abs=1e-4)
    assert float(objective.distill_sum(2 * exact, lengths, tokens)) == pytest.approx(0.0, abs=1e-4)  # direction only
    assert float(objective.distill_sum(-exact, lengths, tokens)) == pytest.approx(2 * real, rel=1e-5)
    mse, _, _ = _distill_objective(bpe_source, loss="mse")
    assert float(mse.distill_sum(exact, lengths, tokens)) == pytest.approx(0.0, abs=1e-6)
    doubled = mse.distill_sum(2 * exact, lengths, tokens)  # error = the embedding: about 1 per patch
    assert float(doubled) == pytest.approx(real * float(exact[:, :, :].pow(2).mean()) / mse.scale, rel=0.2)
    with pytest.raises(ValueError, match="loss must be one of"):
        _distill_objective(bpe_source, loss="kl")

    plain = BLTObjective(model, objective.patcher)
    model.train()
    total, stats = objective.loss_sum(model, ids)
    lm, _ = plain.loss_sum(model, ids)
    assert stats["distill"] > 0 and float(total.detach()) == pytest.approx(float(lm.detach()) + 0.5 * stats["distill"], rel=1e-5)
    total.backward()
    assert model.encoder.patch_query_projection.weight.grad is not None  # the encoder is what it moves
    model.eval()
    with torch.no_grad():  # evaluation: the plain next-byte loss
        assert float(objective.loss_sum(model, ids)[0]) == pytest.approx(float(plain.loss_sum(model, ids)[0]))
    with pytest.raises(ValueError, match="one patch per source token"):
        objective.distill_sum(exact, torch.ones_like(lengths), tokens)


def test_byteify_with_distillation_records_it_and_stays_frozen(capsys, bpe_source, text_data, tmp_path):
    from blt.run import load
    from blt.train import read_metrics

    out = tmp_path / "distilled"
    code, printed, err = byteify_cli(capsys, *stage_argv(bpe_source, text_data.path, out, "--distill", "1"))
    assert code == 0, err
    assert "distilling toward its token embeddings (cosine, weight 1)" in printed
    record = json.loads((out / "byteify.json").read_text())
    assert record["distill_weight"] == 1.0 and record["distill_loss"] == "cosine"
    assert all("distill" in m for m in read_metrics(out / "stage1" / "metrics.jsonl") if "loss" in m)
    stage1 = load(out / "stage1")
    for name, tensor in read_token_source(bpe_source).blocks.items():
        assert torch.equal(stage1.model.global_model.transformer.state_dict()[name], tensor), name


@pytest.mark.parametrize("extra, message", [
    (("--distill", "-1"), "--distill must be a finite number >= 0"),
    (("--distill", "nan"), "argument --distill: 'nan' is not a finite number"),
    (("--distill", "1", "--patching", "static"), "--distill needs stage 1 to patch at the source's own token starts"),
    (("--distill", "1", "--distill-loss", "kl"), "argument --distill-loss: invalid choice: 'kl'"),
])
def test_bad_distillation_is_one_line(capsys, bpe_source, text_data, tmp_path, extra, message):
    code, out, err = byteify_cli(capsys, *stage_argv(bpe_source, text_data.path, tmp_path / "out", *extra))
    assert code == 2, (out, err)
    assert err.startswith("blt byteify: error: ") and err.count("\n") == 1 and message in err
