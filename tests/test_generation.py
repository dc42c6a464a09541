"""The cached generation engine produces what the full-recompute reference path produces (docs/design.md §5)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from blt.bench import torch_threads
from blt.cli import main
from blt.config import (
    PatchingConfig,
)
from blt.errors import ConfigError
from blt.generation import (
    Engine,
    generate,
    next_byte_logits,
    stream_full_recompute,
)
from blt.model import ByteLatentTransformer
from blt.patching.entropy_model import EntropyModel
from blt.patching.patcher import Patcher
from blt.patching.patchers import IncrementalStarts
from blt.run import write_run_config
from blt.tokenizer import BOS_ID, EOS_ID, OFFSET, encode
from blt.train.checkpoint import save_tensors
from tests.helpers import micro_config, other_layout, random_ids, scaled_entropy_model

OTHER_LAYOUT = other_layout()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Thousands of tiny forwards: one intra-op thread is much faster, and steady on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def model() -> ByteLatentTransformer:
    return ByteLatentTransformer(micro_config()).init_weights(seed=0).eval()


@pytest.fixture(scope="module")
def entropy_model() -> EntropyModel:
    return scaled_entropy_model()


@pytest.fixture(scope="module")
def entropy_range(entropy_model) -> tuple[float, float, float]:
    """Quantiles (25%, 50%, 85%) of the entropy model's entropies on random bytes."""
    H = entropy_model.entropies(random_ids(4, 64, torch.Generator().manual_seed(5)))[:, 1:].flatten()
    q = torch.quantile(H, torch.tensor([0.25, 0.5, 0.85]))
    return tuple(float(v) + 1e-3 for v in q)  # off the sampled values, so no entropy sits on a threshold


PATCHINGS = {
    "entropy, small patches": lambda q: PatchingConfig(mode="entropy", threshold=q[0]),
    "entropy, large patches": lambda q: PatchingConfig(mode="entropy", threshold=q[2]),
    "entropy, max length 3": lambda q: PatchingConfig(mode="entropy", threshold=q[2], max_patch_length=3),
    "monotonic": lambda q: PatchingConfig(mode="monotonic", threshold=0.25),
    "combined": lambda q: PatchingConfig(mode="combined", threshold=q[1], relative_threshold=0.1),
    "static": lambda q: PatchingConfig(mode="static", patch_size=3),
    "space, max length 4": lambda q: PatchingConfig(mode="space", max_patch_length=4),
    "byte": lambda q: PatchingConfig(mode="byte"),
}

PROMPTS = {
    "empty (BOS only)": b"",
    "one byte": b"a",
    "longer than the windows": b"The quick brown fox, jumping over lazy dogs: 0123!",
    "binary": bytes([0, 255, 7, 0, 128, 255, 10, 0, 0, 255, 193, 4]),
}


def patcher_for(name, entropy_model, entropy_range) -> Patcher:
    return Patcher(PATCHINGS[name](entropy_range), entropy_model)


@pytest.mark.parametrize("index, patching", list(enumerate(PATCHINGS)))
def test_greedy_output_equals_full_recompute(model, entropy_model, entropy_range, index, patching):
    patcher = patcher_for(patching, entropy_model, entropy_range)
    engine = Engine(model, patcher)
    prompts = list(PROMPTS.values())
    for prompt in (prompts[index % 4], prompts[(index + 1) % 4]):  # every prompt in every other mode
        expected = bytes(stream_full_recompute(model, patcher, prompt, max_bytes=12))
        got = engine.generate([prompt], max_bytes=12)[0]
        assert got == expected, (patching, prompt)


@pytest.mark.parametrize("patching", list(PATCHINGS))
def test_step_logits_equal_next_byte_logits(model, entropy_model, entropy_range, patching):
    """Teacher-forced through packed documents (EOS, then a new BOS): every prefix, whether it ends at a
    patch boundary or inside a patch, gives the reference's logits."""
    patcher = patcher_for(patching, entropy_model, entropy_range)
    engine = Engine(model, patcher)
    gen = torch.Generator().manual_seed(3)
    ids = random_ids(1, 28, gen)[0]
    ids[15], ids[16] = EOS_ID, BOS_ID
    ends = set()
    for prompt_len in (1, 10):
        state = engine.prefill(ids[:prompt_len])
        torch.testing.assert_close(state.logits, next_byte_logits(model, patcher, ids[None, :prompt_len]), atol=1e-4, rtol=0)
        for t in range(prompt_len, len(ids)):
            ends.add(state.next_starts)
            engine.step(state, int(ids[t]))
            torch.testing.assert_close(state.logits, next_byte_logits(model, patcher, ids[None, : t + 1]), atol=1e-4, rtol=0)
    assert len(state.ids) == len(ids)
    if patching != "byte":
        assert ends == {True, False}, "prefixes should end both inside a patch and at its end"


def test_other_layout_and_prompt_ending_in_eos(entropy_model, entropy_range):
    model = ByteLatentTransformer(OTHER_LAYOUT).init_weights(seed=2).eval()
    patcher = patcher_for("entropy, small patches", entropy_model, entropy_range)
    engine = Engine(model, patcher)
    ids = torch.cat([encode(b"abc def"), torch.tensor([EOS_ID])])
    state = engine.prefill(ids)
    for t, token in enumerate([BOS_ID, 80, 81, 82, 83, 84], start=len(ids)):
        engine.step(state, token)
        ids = torch.cat([ids, torch.tensor([token])])
        torch.testing.assert_close(state.logits, next_byte_logits(model, patcher, ids[None]), atol=1e-4, rtol=0)
    prompt = PROMPTS["longer than the windows"]
    assert engine.generate([prompt], max_bytes=16)[0] == bytes(stream_full_recompute(model, patcher, prompt, 16))
    # Without windows the step caches grow: 70 bytes, each its own patch, outgrow their first 64 slots.
    patcher = Patcher(PatchingConfig(mode="byte"))
    engine = Engine(model, patcher)
    ids = random_ids(1, 72, torch.Generator().manual_seed(9))[0]
    state = engine.prefill(ids[:2])
    for token in ids[2:].tolist():
        engine.step(state, token)
    assert state.num_patches == 72
    torch.testing.assert_close(state.logits, next_byte_logits(model, patcher, ids[None]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("patching", list(PATCHINGS))
def test_start_rule_equals_patcher(entropy_model, entropy_range, patching):
    """One position at a time, the rule decides what the patcher decides for the whole row."""
    config = PATCHINGS[patching](entropy_range)
    patcher = Patcher(config, entropy_model)
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        ids = random_ids(1, 60, gen)
        ids[0, 20], ids[0, 21], ids[0, 40], ids[0, 41] = EOS_ID, BOS_ID, EOS_ID, BOS_ID
        ids[0, 5:15] = ids[0, 5:15] % 2 + ord(" ") + OFFSET  # runs of spacelike bytes for space patching
        entropies = torch.rand(1, 60, generator=gen) * 5
        expected = patcher.start_mask(ids, entropies)[0].tolist()
        rule = IncrementalStarts(config)
        got = [True] + [rule.starts(p, ids[0, max(0, p - 2) : p].tolist(), list(entropies[0, max(0, p - 2) : p].numpy()))
                        for p in range(1, 60)]
        assert got == expected


def test_hash_rows_equal_table_indices(model):
    engine = Engine(model, Patcher(PatchingConfig(mode="byte")))
    gen = torch.Generator().manual_seed(6)
    ids = random_ids(1, 30, gen)
    ids[0, 3:6] = torch.tensor([0, 255 + OFFSET, 255 + OFFSET])
    expected = model.hash_embedding.table_indices(ids)[0]  # (T, tables)
    for t in range(30):
        assert engine._hash_rows([ids[0, max(0, t - 7) : t + 1].tolist()])[0].tolist() == expected[t].tolist()


def test_sampling_is_reproducible_under_a_seed(model, entropy_model, entropy_range):
    patcher = patcher_for("entropy, small patches", entropy_model, entropy_range)
    engine = Engine(model, patcher)
    options = {"max_bytes": 24, "temperature": 0.9, "top_k": 50, "top_p": 0.95}
    a = engine.generate([b"Hello"], seed=7, **options)[0]
    assert a == engine.generate([b"Hello"], seed=7, **options)[0]
    assert a == bytes(stream_full_recompute(model, patcher, b"Hello", seed=7, **options))
    assert a != engine.generate([b"Hello"], seed=8, **options)[0]


def test_batch_of_prompts_equals_each_alone(model, entropy_model, entropy_range):
    patcher = patcher_for("entropy, small patches", entropy_model, entropy_range)
    engine = Engine(model, patcher)
    prompts = [b"", b"x", PROMPTS["longer than the windows"], PROMPTS["binary"]]
    assert engine.generate(prompts, max_bytes=12) == [engine.generate([p], max_bytes=12)[0] for p in prompts]
    # Rows that stop early leave the batch; the others go on as they would alone.
    stop = engine.generate([prompts[1]], max_bytes=12)[0][3:5]
    alone = [engine.generate([p], max_bytes=12, stop=[stop])[0] for p in prompts]
    assert len(alone[1]) == 5 and engine.generate(prompts, max_bytes=12, stop=[stop]) == alone
    sampled = engine.generate(prompts, max_bytes=12, temperature=1.0, seed=3)
    assert sampled == [engine.generate([p], max_bytes=12, temperature=1.0, seed=3 + i)[0] for i, p in enumerate(prompts)]
    # Bytes stream as they come, round-robin over the rows still running.
    events = list(engine.stream(prompts, max_bytes=3))
    assert [row for row, _ in events[:4]] == [0, 1, 2, 3]
    assert [bytes(b for r, b in events if r == i) for i in range(4)] == engine.generate(prompts, max_bytes=3)


@pytest.mark.parametrize("patching", ["entropy, max length 3", "monotonic", "byte"])  # byte: the global caches grow
def test_batched_steps_equal_single_row_steps(model, entropy_model, entropy_range, patching):
    """Rows stepped together (one batched step per byte, global steps of the rows closing a patch batched)
    give every row the logits and patches it has alone: rows at different lengths, a row starting a new
    document, rows leaving the batch."""
    engine = Engine(model, patcher_for(patching, entropy_model, entropy_range))
    prompts = [b"", PROMPTS["longer than the windows"], b"ab", PROMPTS["binary"]]
    singles = [engine.prefill(p) for p in prompts]
    batch = engine._batch([engine.prefill(p) for p in prompts])
    gen = torch.Generator().manual_seed(0)
    for step in range(72):
        tokens = (torch.randint(OFFSET, OFFSET + 256, (len(singles),), generator=gen)).tolist()
        if step == 20:
            tokens[2] = EOS_ID  # row 2 ends its document; its next byte starts a new one
        elif step == 21:
            tokens[2] = BOS_ID
        for state, token in zip(singles, tokens):
            engine.step(state, token)
        engine._step_batch(batch, tokens)
        for row, state in zip(batch.rows, singles):
            assert row.num_patches == state.num_patches and row.next_starts == state.next_starts
        torch.testing.assert_close(batch.logits, torch.stack([state.logits for state in singles]), atol=1e-5, rtol=0)
        if step == 30:  # row 1 finishes
            batch.select([0, 2, 3])
            singles.pop(1)


def test_stop_strings_max_bytes_and_eos(model, entropy_model, entropy_range):
    patcher = patcher_for("entropy, large patches", entropy_model, entropy_range)
    engine = Engine(model, patcher)
    full = engine.generate([b"ab"], max_bytes=30)[0]
    assert len(full) >= 8
    stop = full[4:6]
    stopped = engine.generate([b"ab"], max_bytes=30, stop=[b"\x00never", stop])[0]
    assert stopped == full[: full.index(stop) + len(stop)]
    assert engine.generate([b"ab"], max_bytes=0) == [b""]
    # A model whose EOS logit beats the byte it would pick at the 6th step stops there (or earlier).
    eos_model = ByteLatentTransformer(micro_config()).eval()
    eos_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        row = eos_model.decoder.output.weight
        row[EOS_ID] = row[full[5] + OFFSET] * 1.01
    eos_engine = Engine(eos_model, patcher)
    out = eos_engine.generate([b"ab"], max_bytes=30)[0]
    assert len(out) <= 5 and full.startswith(out)
    assert out == bytes(stream_full_recompute(eos_model, patcher, b"ab", max_bytes=30))


def test_global_steps_follow_the_patches(model):
    engine = Engine(model, Patcher(PatchingConfig(mode="static", patch_size=3)))
    state = engine.prefill(b"abcd")  # BOS | abc | d...
    assert state.num_patches == 2 and not state.next_starts
    for token in b"efghij":
        engine.step(state, token + OFFSET)
    assert state.global_steps == 2 and state.num_patches == 4  # d e f | g h i close; j opens a patch
    engine = Engine(model, Patcher(PatchingConfig(mode="byte")))
    state = engine.prefill(b"ab")
    for token in b"cdef":
        engine.step(state, token + OFFSET)
    assert state.global_steps == 4


def test_bpe_patching_is_refused_by_the_engine():
    with pytest.raises(ConfigError, match="full_recompute"):
        IncrementalStarts(PatchingConfig(mode="bpe"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model, entropy_model, entropy_range):
    root = tmp_path_factory.mktemp("gen_run")
    cfg = micro_config(patching=PatchingConfig(mode="entropy", threshold=entropy_range[0]))
    write_run_config(root, "blt", cfg)
    save_tensors(root / "model.safetensors", model.state_dict())
    write_run_config(root / "entropy_model", "entropy_model", entropy_model.cfg)
    save_tensors(root / "entropy_model" / "model.safetensors", entropy_model.state_dict())
    return root


def test_generate_api_uses_engine_and_matches_reference(run_dir):
    import blt.run

    run = blt.run.load(run_dir)
    engine_out = generate(run, b"Hello", max_bytes=16)
    assert engine_out == generate(run, b"Hello", max_bytes=16, full_recompute=True)
    assert generate(run, [b"Hello", b""], max_bytes=16) == [engine_out, generate(run, b"", max_bytes=16)]


def test_cli_streams_text_and_writes_raw_bytes(run_dir, tmp_path, capsys):
    import blt.run

    expected = generate(blt.run.load(run_dir), PROMPTS["binary"], max_bytes=12)
    (tmp_path / "prompt.bin").write_bytes(PROMPTS["binary"])
    out = tmp_path / "out.bin"
    assert main(["generate", str(run_dir), "--prompt-file", str(tmp_path / "prompt.bin"), "--max-bytes", "12",
                 "--out", str(out)]) == 0
    assert out.read_bytes() == expected
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt-file", str(tmp_path / "prompt.bin"), "--max-bytes", "12"]) == 0
    assert capsys.readouterr().out == expected.decode("utf-8", errors="replace") + "\n"
    assert main(["generate", str(run_dir), "--prompt", "x", "--top-p", "2"]) == 2
    capsys.readouterr()
    # Several samples are drawn as one batch; sample i is what seed + i gives alone.
    assert main(["generate", str(run_dir), "--prompt", "ab", "--max-bytes", "8", "--samples", "3",
                 "--temperature", "1", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    for i in range(3):
        alone = generate(blt.run.load(run_dir), b"ab", max_bytes=8, temperature=1.0, seed=4 + i)
        assert f"--- sample {i + 1} of 3 ---\n{alone.decode('utf-8', errors='replace')}\n" in printed
    assert main(["generate", str(run_dir), "--prompt", "x", "--samples", "2"]) == 2  # greedy: identical samples
    assert json.loads((run_dir / "config.json").read_text())["kind"] == "blt"


def _naive_greedy(model, ids: list[int], n: int) -> list[int]:
    """A full forward per new id: the reference for `stream_tokens`."""
    out = []
    for _ in range(n):
        with torch.no_grad():
            token = int(model(torch.tensor([ids + out]))[0, -1].argmax())
        out.append(token)
    return out


def test_every_kind_of_run_generates_with_blt_generate():
    """Entropy-model and token-model runs step their own blocks over KV caches: the same ids as a full
    forward per id; bytes come out whole per token, cut at max_bytes or after a stop string."""
    from blt.baselines.model import TokenLM, TokenModelConfig
    from blt.baselines.tokenization import ByteTokenizer
    from blt.generation import stream_tokens
    from blt.run import Run

    em = scaled_entropy_model(seed=4)
    prompt = b"The quick brown fox"
    ids = encode(prompt).tolist()
    cached = stream_tokens(em, ids)
    assert [next(cached) for _ in range(20)] == _naive_greedy(em, ids, 20)  # past the window of 5
    token = TokenLM(TokenModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=260)).init_weights(seed=5).eval()
    with torch.no_grad():
        token.output.weight.mul_(8.0)  # confident enough that greedy rarely picks a special id
    runs = [Run(path=Path("em"), kind="entropy_model", config=em.cfg, model=em),
            Run(path=Path("tok"), kind="token_model", config=token.cfg, model=token, tokenizer=ByteTokenizer())]
    for run in runs:
        full = generate(run, prompt, max_bytes=30)
        reference = bytes(t - OFFSET for t in itertools.takewhile(lambda t: t >= OFFSET, _naive_greedy(run.model, ids, 30)))
        assert full == reference
        assert generate(run, prompt, max_bytes=7) == full[:7]
        if len(full) >= 6:
            stop = full[3:5]
            assert generate(run, prompt, max_bytes=30, stop=[stop]) == full[: full.index(stop) + 2]
        a, b = generate(run, [prompt, b"x"], max_bytes=12, temperature=1.0, seed=2)
        assert a == generate(run, prompt, max_bytes=12, temperature=1.0, seed=2)
        assert b == generate(run, b"x", max_bytes=12, temperature=1.0, seed=3)
