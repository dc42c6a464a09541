"""The token model: the BLT preset's global blocks, causal within documents, JSON round trip; its objective
gives bits per byte over the same bytes as BLT's, with token NLL / (data bytes + EOS) / ln 2."""

from __future__ import annotations

import math

import pytest
import torch

from blt.baselines import ByteTokenizer, TokenLM, TokenModelConfig
from blt.config import BLTConfig
from blt.data import validation_batches
from blt.errors import ConfigError
from blt.model.byte_latent import next_byte_loss
from blt.model.layers import TransformerBlock
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, PAD_ID
from blt.train import LN2, Trainer, count_targets
from blt.train.objectives import TokenObjective
from tests.baselines.conftest import micro_token_config
from tests.train.conftest import micro_train_config


@pytest.mark.parametrize("name", ["tiny", "small", "1b"])
def test_presets_are_the_global_model_of_the_blt_preset(name):
    cfg, glob = TokenModelConfig.preset(name), BLTConfig.preset(name).global_model
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.hidden_dim, cfg.rope_theta, cfg.window) == \
        (glob.dim, glob.n_layers, glob.n_heads, glob.hidden_dim, glob.rope_theta, None)
    assert TokenModelConfig.from_json(cfg.to_json()) == cfg


def test_config_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="unknown baseline preset"):
        TokenModelConfig.preset("huge")
    with pytest.raises(ConfigError, match="vocab_size must be >= 260"):
        TokenModelConfig(vocab_size=100)


def test_model_is_built_from_blts_blocks():
    model = TokenLM(micro_token_config())
    assert all(isinstance(layer, TransformerBlock) for layer in model.transformer.layers)
    counts = model.parameter_counts()
    assert counts["embedding"] == 260 * 32 and counts["total"] == counts["embedding"] + counts["non_embedding"]


def test_logits_are_causal_and_documents_do_not_see_each_other():
    torch.manual_seed(0)
    model = TokenLM(micro_token_config(vocab_size=300)).init_weights(seed=0).eval()
    tokens = torch.randint(4, 300, (2, 12))
    tokens[:, 0] = BOS_ID
    logits = model(tokens)
    later = tokens.clone()
    later[:, 7:] = torch.randint(4, 300, (2, 5))
    assert torch.allclose(model(later)[:, :7], logits[:, :7], atol=1e-6)
    packed = tokens.clone()
    packed[:, 5], packed[:, 6] = EOS_ID, BOS_ID  # a second document from position 6
    alone = packed[:, 6:]
    assert torch.allclose(model(packed)[:, 6:], model(alone), atol=1e-5)


def test_byte_objective_is_next_byte_loss_of_the_model_on_the_ids(text_data):
    model = TokenLM(micro_token_config()).init_weights(seed=0)
    ids = next(iter(validation_batches(text_data, 64, 4)))
    loss, extras = TokenObjective(model, ByteTokenizer()).loss_sum(model, ids)
    assert torch.allclose(loss, next_byte_loss(model(ids), ids, reduction="sum"))
    assert extras["tokens"] == count_targets(ids)


def test_bpe_objective_sums_token_nll_over_the_same_rows(bpe, text_data):
    model = TokenLM(micro_token_config(bpe.vocab_size)).init_weights(seed=0)
    ids = next(iter(validation_batches(text_data, 64, 4)))
    expected, tokens = 0.0, 0
    with torch.no_grad():
        loss, extras = TokenObjective(model, bpe).loss_sum(model, ids)
    for row in ids:  # one row at a time, tokenized by hand: BOS, tokens of each document's bytes, EOS, BOS, ...
        row_tokens, data = [], []
        for i in row.tolist():
            if i >= OFFSET:
                data.append(i - OFFSET)
                continue
            row_tokens += bpe.encode(bytes(data)) + ([i] if i != PAD_ID else [])
            data = []
        row_tokens += bpe.encode(bytes(data))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([row_tokens]))[0].float(), -1)
        for n in range(1, len(row_tokens)):
            target = row_tokens[n]
            if target != BOS_ID and target > 0:
                expected -= float(logp[n - 1, target])
                tokens += 1
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert extras["tokens"] == tokens < count_targets(ids)


def test_trainer_bits_per_byte_is_token_nll_over_data_bytes(bpe, text_data, tmp_path):
    model = TokenLM(micro_token_config(bpe.vocab_size)).init_weights(seed=0)
    objective = TokenObjective(model, bpe)
    trainer = Trainer(objective, text_data, micro_train_config(), tmp_path / "run", progress=False)
    nll, data_bytes = 0.0, 0
    with torch.no_grad():
        for ids in list(validation_batches(text_data, 64, 4))[:2]:
            nll += float(objective.loss_sum(model, ids)[0])
            data_bytes += count_targets(ids)
    assert trainer.evaluate(2) == pytest.approx(nll / data_bytes / LN2, rel=1e-6)
    assert nll / data_bytes / math.log(2) > 0


def test_a_few_steps_lower_the_loss(bpe, text_data, tmp_path):
    model = TokenLM(micro_token_config(bpe.vocab_size)).init_weights(seed=0)
    trainer = Trainer(TokenObjective(model, bpe), text_data, micro_train_config(steps=8, eval_every=0, checkpoint_every=0, lr=1e-2),
                      tmp_path / "run", progress=False)
    first = trainer.evaluate(2)
    trainer.fit()
    assert trainer.evaluate(2) < first - 0.3
