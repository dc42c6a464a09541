"""Outputs of seeded models that a refactor must leave bit-identical: BLT logits under every patching scheme,
entropies, the token models' logits, and greedy generations (cached and sampled) of BLT, the entropy model
and the byte and BPE baselines.

    python -m tests.golden --write     # record tests/data/golden.safetensors and golden.json

Stored: the sha256 of every tensor, a few random projections of it (`summary`) and every generation.
`tests/test_golden.py` recomputes them and compares: the digests, bit for bit, on the kind of CPU they were
recorded on (same torch, vector capability and CPU model: `machine`); elsewhere, where other kernels run,
the projections within float tolerance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path

import torch

from blt.baselines.model import TokenLM, TokenModelConfig
from blt.baselines.tokenization import BPETokenizer, ByteTokenizer
from blt.config import (
    PatchingConfig,
)
from blt.evaluate.scoring import EntropyModelScorer
from blt.evaluate.token_scoring import token_greedy
from blt.generation import generate
from blt.model import ByteLatentTransformer
from blt.patching.patcher import Patcher
from blt.run import Run
from tests.helpers import micro_config, other_layout, scaled_entropy_model

FIXTURES = Path(__file__).parent / "fixtures"
SUMMARIES = FIXTURES / "golden.safetensors"
RECORD = FIXTURES / "golden.json"
PROBES = 4  # random projections of a tensor's last axis kept as its summary

PROMPTS = [b"", b"def main():\n    ", "Grüße, 世界! 0123".encode(), bytes([0, 255, 7, 0, 128, 255, 10])]


def machine() -> dict:
    """What decides the kernels: torch, its vector capability, and the CPU itself (two AVX-512 CPUs, one with
    AMX and one without, round differently)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU's model name and its AMX flag (Linux: /proc/cpuinfo; elsewhere `platform.processor()`)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    return f"{name}{' AMX' if 'amx_tile' in info.split() else ''}"


PATCHINGS = {
    "entropy": PatchingConfig(mode="entropy", threshold=1.6001),
    "entropy_max3": PatchingConfig(mode="entropy", threshold=2.7001, max_patch_length=3),
    "monotonic": PatchingConfig(mode="monotonic", threshold=0.6001),
    "combined": PatchingConfig(mode="combined", threshold=1.6001, relative_threshold=0.1001),
    "static": PatchingConfig(mode="static", patch_size=3),
    "space": PatchingConfig(mode="space", max_patch_length=4),
    "byte": PatchingConfig(mode="byte"),
}


def ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Random byte ids with BOS first and a document boundary (EOS, BOS) in the middle of row 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(4, 260, (batch, length), generator=gen)
    x[:, 0] = 1
    x[0, length // 2], x[0, length // 2 + 1] = 2, 1
    return x


def compute() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, generations as hex) of every case."""
    tensors: dict[str, torch.Tensor] = {}
    texts: dict[str, str] = {}
    em = scaled_entropy_model()
    x = ids(3, 48, seed=7)
    with torch.no_grad():
        tensors["entropy_model/entropies"] = em.entropies(x)
        tensors["entropy_model/logits"] = em(x)
    for layout, cfg in (("main", micro_config()), ("other", other_layout())):
        model = ByteLatentTransformer(cfg).init_weights(seed=0).eval()
        for name, patching in PATCHINGS.items():
            patcher = Patcher(patching, em)
            with torch.no_grad():
                lengths = patcher(x, em.entropies(x) if patching.mode in ("entropy", "monotonic", "combined") else None)
                tensors[f"blt/{layout}/{name}/patch_lengths"] = lengths
                tensors[f"blt/{layout}/{name}/logits"] = model(x, lengths)
            run = Run(path=Path("golden"), kind="blt", config=cfg.replace(patching=patching), model=model, entropy_model=em)
            for i, prompt in enumerate(PROMPTS):
                texts[f"blt/{layout}/{name}/greedy/{i}"] = generate(run, prompt, max_bytes=12).hex()
            texts[f"blt/{layout}/{name}/sampled"] = b"|".join(
                generate(run, PROMPTS[:2], max_bytes=10, temperature=0.9, top_k=40, seed=3)).hex()
    em_scorer = EntropyModelScorer(Run(path=Path("golden"), kind="entropy_model", config=em.cfg, model=em))
    for i, prompt in enumerate(PROMPTS):
        texts[f"entropy_model/greedy/{i}"] = em_scorer.greedy(prompt, 12).hex()
    token_cfg = TokenModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=260)
    byte_model = TokenLM(token_cfg).init_weights(seed=2).eval()
    with torch.no_grad():
        tensors["byte/logits"] = byte_model(x)
    byte_run = Run(path=Path("golden"), kind="token_model", config=token_cfg, model=byte_model, tokenizer=ByteTokenizer())
    for i, prompt in enumerate(PROMPTS):
        texts[f"byte/greedy/{i}"] = token_greedy(byte_run, prompt, 12).hex()
    tokenizer = BPETokenizer.train([b"def main():\n    return 0\n" * 20, "Grüße, 世界! ".encode() * 20], 300)
    bpe_cfg = token_cfg.replace(vocab_size=tokenizer.vocab_size)
    bpe_model = TokenLM(bpe_cfg).init_weights(seed=4).eval()
    token_ids = torch.tensor([tokenizer.encode(PROMPTS[1] + PROMPTS[2])])
    with torch.no_grad():
        tensors["bpe/logits"] = bpe_model(token_ids)
    bpe_run = Run(path=Path("golden"), kind="token_model", config=bpe_cfg, model=bpe_model, tokenizer=tokenizer)
    for i, prompt in enumerate(PROMPTS):
        texts[f"bpe/greedy/{i}"] = token_greedy(bpe_run, prompt, 12).hex()
    return {k: v.contiguous() for k, v in tensors.items()}, texts


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def summary(t: torch.Tensor) -> torch.Tensor:
    """A float tensor small enough to store: ``PROBES`` fixed random projections of the last axis (float64),
    or the values themselves for integer tensors."""
    if not t.is_floating_point():
        return t
    probes = torch.randn(t.shape[-1], PROBES, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return t.double() @ probes


def write() -> None:
    from safetensors.torch import save_file

    tensors, texts = compute()
    FIXTURES.mkdir(exist_ok=True)
    save_file({k: summary(v).contiguous() for k, v in tensors.items()}, str(SUMMARIES))
    record = {"machine": machine(), "digests": {k: digest(v) for k, v in tensors.items()}, "generations": texts}
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{len(tensors)} tensors, {len(texts)} generations -> {SUMMARIES}, {RECORD}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="record the golden outputs")
    p.add_argument("--write", action="store_true", required=True)
    p.parse_args()
    with torch.inference_mode(False):
        torch.set_num_threads(1)
        write()
