"""FLOPs per byte and parameter counts (docs/design.md §6).

What is counted: matrix multiplications only, 2 FLOPs per multiply-add; norms, activations, softmax,
RoPE, residual adds and embedding lookups (byte and hash n-gram tables) count 0. Training ≈ 3 × forward
(the backward pass costs twice the forward). Every number is *forward FLOPs per byte* unless named
otherwise; the global model's per-patch cost is divided by the mean patch size p.

Two kinds of terms per component:

- **weights**: ``2 × (parameters of a weight matrix) × (times it is applied per byte)``. A matrix applied
  to every byte counts once per byte, one applied per patch ``1 / p`` times, one applied per patch slot
  (the k query slots of the encoder, the k key/value slots of the decoder) ``k / p`` times.
- **attention**: the two score matmuls of each attention layer, ``Q Kᵀ`` and ``softmax · V``:
  ``4 × n_heads × head_dim × c`` per query, c the number of keys it attends to. Self-attention over n
  positions with window w (None = full causal) gives query i ``min(i + 1, w)`` keys; c is the mean over
  the n queries, ``(n + 1) / 2`` without a window (see `mean_attended_keys`). Only the keys a query may
  see count, not the masked-out entries a dense kernel also computes, and a sequence is taken to be one
  document. The global model attends over ``P = T / p`` patches; an encoder query slot attends to the
  ≈ p bytes of its own patch; a decoder byte attends to the k slots of one patch.

A plain token model (the paper's BPE baselines) costs its per-token FLOPs divided by the mean bytes per
token of its tokenizer (`token_model_flops`); the byte baseline is the same model at 1 byte per token.

What a model costs to train and to run (`ModelCost`, from a config with `blt_cost` / `token_model_cost`
or from a run directory with `run_cost`): training FLOPs per byte are 3 × the model's forward; inference
FLOPs per byte are its forward plus, for an entropy-patched BLT, the entropy model's forward, which must
run on every byte to place the patches. The entropy model is not charged to BLT's training (its
entropies can be computed once ahead of training, `blt patch --data`), as `blt compare` budgets.

>>> f = blt_flops(BLTConfig.preset("1b"), patch_size=4.5, seq_len=8192)
>>> round(f.training / 1e9, 2)  # GFLOPs per byte
2.86
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from blt.baselines.model import TokenLM, TokenModelConfig, token_parameter_counts
from blt.config import BLTConfig, EntropyModelConfig, TransformerConfig
from blt.errors import ConfigError
from blt.model.byte_latent import ByteLatentTransformer, parameter_counts
from blt.patching.entropy_model import EntropyModel
from blt.run import ENTROPY_SUBDIR, read_run_config
from blt.train import read_metrics

TRAINING_MULTIPLIER = 3  # forward + backward ≈ 3 × forward
DEFAULT_PATCH_SIZE = 4.5  # bytes per patch of the paper's entropy-patched BLT models
DEFAULT_BYTES_PER_TOKEN = 4.4  # Llama 3's BPE on the paper's data (docs/design.md §6); measure ours with a BPE run


@dataclass(frozen=True)
class ComponentFlops:
    """Forward FLOPs per byte of one component: weight matmuls and attention-score matmuls."""

    weights: float
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.attention


@dataclass(frozen=True)
class FlopsPerByte:
    """Forward FLOPs per byte of a model, by component, for sequences of ``seq_len`` bytes.

    ``bytes_per_step`` is how many bytes one step of the main transformer covers: the mean patch size p
    for BLT, the mean bytes per token for a token model, 1 for a byte-level model.
    """

    model: str  # "blt", "entropy_model" or "token_model"
    seq_len: int  # bytes per sequence that the attention terms assume
    bytes_per_step: float
    components: dict[str, ComponentFlops] = field(default_factory=dict)

    @property
    def weights(self) -> float:
        return sum(c.weights for c in self.components.values())

    @property
    def attention(self) -> float:
        return sum(c.attention for c in self.components.values())

    @property
    def forward(self) -> float:
        return self.weights + self.attention

    @property
    def training(self) -> float:
        return TRAINING_MULTIPLIER * self.forward

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: every component's weights/attention/total, and the totals (all per byte)."""
        return {
            "model": self.model,
            "seq_len": self.seq_len,
            "bytes_per_step": self.bytes_per_step,
            "components": {
                name: {"weights": c.weights, "attention": c.attention, "total": c.total}
                for name, c in self.components.items()
            },
            "weights": self.weights,
            "attention": self.attention,
            "forward": self.forward,
            "training": self.training,
        }


def mean_attended_keys(num_positions: float, window: int | None) -> float:
    """Mean number of keys per query of causal self-attention over n positions with a sliding window.

    Query i (0-based) sees ``min(i + 1, w)`` keys; the mean over the n queries is ``(n + 1) / 2`` without
    a window (or when w >= n) and ``(w (w + 1) / 2 + (n - w) w) / n`` otherwise. n may be fractional
    (the mean number of patches T / p).

    >>> mean_attended_keys(8, None), mean_attended_keys(8, 4)
    (4.5, 3.25)
    """
    n = num_positions
    if window is None or window >= n:
        return (n + 1) / 2
    return (window * (window + 1) / 2 + (n - window) * window) / n


def _attention_width(cfg: TransformerConfig) -> int:
    return cfg.n_heads * cfg.head_dim


def block_weight_flops(cfg: TransformerConfig) -> float:
    """Forward FLOPs of the weight matmuls of all blocks of a stack, per position.

    Per block: q and o projections ``D × H·hd`` each, k and v ``D × H_kv·hd`` each, SwiGLU ``3 × D × F``.
    """
    q_o = 2 * cfg.dim * _attention_width(cfg)
    k_v = 2 * cfg.dim * cfg.kv_heads * cfg.head_dim
    ffn = 3 * cfg.dim * cfg.hidden_dim
    return cfg.n_layers * 2 * (q_o + k_v + ffn)


def block_attention_flops(cfg: TransformerConfig, num_positions: float) -> float:
    """Forward FLOPs of ``Q Kᵀ`` and ``softmax · V`` of all blocks, per position, over n positions."""
    return cfg.n_layers * 4 * _attention_width(cfg) * mean_attended_keys(num_positions, cfg.window)


def _check_sizes(bytes_per_step: float, seq_len: int, step: str) -> None:
    if not bytes_per_step >= 1:
        raise ConfigError(f"{step} must be >= 1 byte (e.g. 4.5, 6 or 8), got {bytes_per_step}")
    if seq_len < 1:
        raise ConfigError(f"sequence length must be >= 1, got {seq_len}")


def default_patch_size(cfg: BLTConfig) -> float:
    """Mean patch size the config aims at: its static or byte patch size, else its calibration target, else 4.5."""
    patching = cfg.patching
    if patching.mode == "static":  # a preset's calibration target does not apply to static patches
        return float(patching.patch_size)
    if patching.mode == "byte":
        return 1.0
    if patching.target_patch_size is not None:
        return patching.target_patch_size
    return DEFAULT_PATCH_SIZE


def blt_flops(cfg: BLTConfig, patch_size: float | None = None, seq_len: int | None = None) -> FlopsPerByte:
    """Forward FLOPs per byte of a BLT with mean patch size p over sequences of T bytes (module docstring).

    ``patch_size`` defaults to `default_patch_size`, ``seq_len`` to ``cfg.max_seq_len``. Components:
    ``local_encoder``, ``encoder_cross_attention`` (patch query projection and cross-attention),
    ``global`` (input projection and blocks, per patch / p), ``decoder_cross_attention`` (projection of
    the global states to k slots and cross-attention), ``local_decoder`` and ``lm_head``.
    """
    p = default_patch_size(cfg) if patch_size is None else float(patch_size)
    T = cfg.max_seq_len if seq_len is None else int(seq_len)
    _check_sizes(p, T, "patch size")
    k, enc, glob, dec = cfg.cross_attn_k, cfg.encoder, cfg.global_model, cfg.decoder
    D_e, D_g, D_d = enc.dim, glob.dim, dec.dim

    n_enc_cross = enc.n_layers if enc.cross_attn_all_layers else min(1, enc.n_layers)
    enc_cross_per_layer = (
        (k / p) * 2 * 2 * D_e * _attention_width(enc)  # q and o on the k query slots of each patch
        + 2 * 2 * D_e * enc.kv_heads * enc.head_dim  # k and v on every byte
    )
    encoder_cross = ComponentFlops(
        weights=2 * D_e * k * D_e / p + n_enc_cross * enc_cross_per_layer,  # pooled patch -> k query slots
        attention=n_enc_cross * (k / p) * 4 * _attention_width(enc) * p,  # each slot sees its own ≈ p bytes
    )

    input_projection = 2 * k * D_e * D_g if k * D_e != D_g else 0
    global_ = ComponentFlops(
        weights=(input_projection + block_weight_flops(glob)) / p,
        attention=block_attention_flops(glob, T / p) / p,
    )

    n_dec_cross = dec.n_layers if dec.cross_attn_all_layers else min(1, dec.n_layers)
    dec_cross_per_layer = (
        2 * 2 * D_d * _attention_width(dec)  # q and o on every byte
        + (k / p) * 2 * 2 * D_d * dec.kv_heads * dec.head_dim  # k and v on the k slots of each patch
    )
    decoder_cross = ComponentFlops(
        weights=2 * D_g * k * D_d / p + n_dec_cross * dec_cross_per_layer,  # global state -> k slots
        attention=n_dec_cross * 4 * _attention_width(dec) * k,  # each byte sees the k slots of one patch
    )

    return FlopsPerByte(
        model="blt",
        seq_len=T,
        bytes_per_step=p,
        components={
            "local_encoder": ComponentFlops(block_weight_flops(enc), block_attention_flops(enc, T)),
            "encoder_cross_attention": encoder_cross,
            "global": global_,
            "decoder_cross_attention": decoder_cross,
            "local_decoder": ComponentFlops(block_weight_flops(dec), block_attention_flops(dec, T)),
            "lm_head": ComponentFlops(2 * D_d * cfg.vocab_size),
        },
    )


def token_model_flops(
    cfg: TransformerConfig, vocab_size: int, bytes_per_token: float, seq_len: int, *, model: str = "token_model"
) -> FlopsPerByte:
    """Forward FLOPs per byte of a plain Llama-style LM over tokens: per-token FLOPs / bytes per token.

    ``cfg`` is the transformer stack (e.g. a `GlobalConfig`), ``seq_len`` the context in tokens (the
    attention term uses ``cfg.window``). Components: ``transformer`` and ``lm_head`` (``2 × D × V``); the
    input embedding is a lookup and costs 0.
    """
    _check_sizes(bytes_per_token, seq_len, "bytes per token")
    b = float(bytes_per_token)
    return FlopsPerByte(
        model=model,
        seq_len=round(seq_len * b),
        bytes_per_step=b,
        components={
            "transformer": ComponentFlops(block_weight_flops(cfg) / b, block_attention_flops(cfg, seq_len) / b),
            "lm_head": ComponentFlops(2 * cfg.dim * vocab_size / b),
        },
    )


def entropy_model_flops(cfg: EntropyModelConfig, seq_len: int | None = None) -> FlopsPerByte:
    """Forward FLOPs per byte of the entropy model (a byte-level LM: one token per byte)."""
    T = cfg.max_seq_len if seq_len is None else seq_len
    return token_model_flops(cfg, cfg.vocab_size, 1.0, T, model="entropy_model")


def blt_parameter_counts(cfg: BLTConfig) -> dict[str, int]:
    """`ByteLatentTransformer.parameter_counts()` of a config, built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = ByteLatentTransformer(cfg)
    return model.parameter_counts()


def entropy_model_parameter_counts(cfg: EntropyModelConfig) -> dict[str, int]:
    """Parameter counts of an entropy model (same keys as BLT's), built on the meta device."""
    with torch.device("meta"):
        model = EntropyModel(cfg)
    return parameter_counts(model)


def token_model_parameter_counts(cfg: TokenModelConfig) -> dict[str, int]:
    """`TokenLM.parameter_counts()` of a config (``total``, ``embedding``, ``non_embedding``), on the meta device."""
    with torch.device("meta"):
        model = TokenLM(cfg)
    return token_parameter_counts(model)


@dataclass(frozen=True)
class ModelCost:
    """What a model costs per byte (module docstring): its forward FLOPs by component, the forward of the
    entropy model that patches it (BLT with entropy patching; inference only), and its parameters."""

    name: str  # "blt", "entropy_model", "bpe" or "byte"
    flops: FlopsPerByte
    parameters: dict[str, int]
    patcher: FlopsPerByte | None = None

    @property
    def training(self) -> float:
        """Training FLOPs per byte: 3 × the model's forward."""
        return self.flops.training

    @property
    def inference(self) -> float:
        """Inference FLOPs per byte: the model's forward and its entropy model's."""
        return self.flops.forward + (self.patcher.forward if self.patcher is not None else 0.0)

    @property
    def bytes_per_step(self) -> float:
        return self.flops.bytes_per_step

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "training": self.training, "inference": self.inference,
                "bytes_per_step": self.bytes_per_step, "flops": self.flops.to_dict(), "parameters": self.parameters,
                "patcher": self.patcher.to_dict() if self.patcher is not None else None}


def blt_cost(cfg: BLTConfig, patch_size: float | None = None, seq_len: int | None = None,
             entropy_config: EntropyModelConfig | None = None) -> ModelCost:
    """`ModelCost` of a BLT (`blt_flops` arguments); ``entropy_config`` is counted at inference when the
    patching mode uses an entropy model."""
    flops = blt_flops(cfg, patch_size, seq_len)
    patcher = None
    if entropy_config is not None and cfg.patching.uses_entropy_model:
        patcher = entropy_model_flops(entropy_config, seq_len=flops.seq_len)
    return ModelCost("blt", flops, blt_parameter_counts(cfg), patcher)


def token_model_cost(cfg: TokenModelConfig, bytes_per_token: float, seq_len: int, name: str = "bpe") -> ModelCost:
    """`ModelCost` of a token baseline over sequences of ``seq_len`` *bytes* (``seq_len / bytes_per_token``
    tokens), as BLT is counted; ``bytes_per_token`` is 1 for the byte model."""
    _check_sizes(bytes_per_token, seq_len, "bytes per token")
    tokens = max(1.0, seq_len / bytes_per_token)
    flops = token_model_flops(cfg, cfg.vocab_size, bytes_per_token, tokens, model="token_model")
    return ModelCost(name, flops, token_model_parameter_counts(cfg))


def _measured_patch_size(run_dir: Path) -> float | None:
    """Bytes per patch over all the training steps a run logged: the ratio of the summed counts of the
    logging windows (``window_targets`` / ``window_patches``), or, for runs logged before those existed, the
    mean of the logged ``mean_patch_size`` values."""
    targets = patches = 0.0
    for record in read_metrics(run_dir / "metrics.jsonl"):  # a last line a kill cut short is left out
        targets += record.get("window_targets", 0.0)
        patches += record.get("window_patches", 0.0)
    return targets / patches if patches else _mean_metric(run_dir, "mean_patch_size")


def _mean_metric(run_dir: Path, key: str) -> float | None:
    values = [float(record[key]) for record in read_metrics(run_dir / "metrics.jsonl") if key in record]
    return sum(values) / len(values) if values else None


def run_cost(run_dir: str | Path, bytes_per_step: float | None = None, seq_len: int | None = None) -> ModelCost:
    """`ModelCost` of a run directory, from its config.json (no weights are read).

    ``seq_len`` defaults to the run's training sequence length in bytes. ``bytes_per_step`` defaults to
    what the run measured: a BLT's bytes per patch over its logged training steps (else its config's
    `default_patch_size`), a BPE model's validation bytes per token (config.json), 1 for the byte model.
    """
    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    T = seq_len or record.get("train", {}).get("seq_len")
    if record["kind"] == "blt":
        cfg = BLTConfig.from_dict(record["model"])
        entropy_dir = run_dir / ENTROPY_SUBDIR
        entropy_config = (EntropyModelConfig.from_dict(read_run_config(entropy_dir)["model"])
                          if (entropy_dir / "config.json").is_file() else None)
        p = bytes_per_step or _measured_patch_size(run_dir) or default_patch_size(cfg)
        return blt_cost(cfg, p, T, entropy_config)
    if record["kind"] == "token_model":
        cfg = TokenModelConfig.from_dict(record["model"])
        tokenizer = record.get("tokenizer", {})
        b = bytes_per_step or (tokenizer.get("val_bytes_per_token") if tokenizer.get("kind") == "bpe" else 1.0)
        return token_model_cost(cfg, b, T or record["train"]["seq_len"], name=tokenizer.get("kind", "bpe"))
    cfg = EntropyModelConfig.from_dict(record["model"])
    return ModelCost("entropy_model", entropy_model_flops(cfg, T), entropy_model_parameter_counts(cfg))


def format_flops(x: float) -> str:
    """Compact SI form: ``format_flops(2.5e9) == '2.50G'``."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f}{suffix}"
    return f"{x:.0f}"


def flops_table(flops: FlopsPerByte) -> str:
    """A plain-text table of forward FLOPs per byte by component, with the totals and training FLOPs."""
    rows = [(name.replace("_", " "), c.weights, c.attention, c.total) for name, c in flops.components.items()]
    rows.append(("total forward", flops.weights, flops.attention, flops.forward))
    forward = flops.forward or 1.0
    lines = [f"{'component':<26}{'weights':>10}{'attention':>11}{'total':>10}{'share':>8}"]
    for name, weights, attention, total in rows:
        lines.append(
            f"{name:<26}{format_flops(weights):>10}{format_flops(attention):>11}{format_flops(total):>10}"
            f"{100 * total / forward:>7.1f}%"
        )
    lines.append(f"{'training (3x forward)':<26}{'':>21}{format_flops(flops.training):>10}")
    return "\n".join(lines)


def cost_table(costs: list[ModelCost]) -> str:
    """A plain-text table comparing models per byte: bytes per step of the main transformer, non-embedding
    parameters, forward, training and inference FLOPs."""
    lines = [f"{'model':<10}{'bytes/step':>11}{'params (non-emb)':>18}{'forward':>10}{'training':>10}{'inference':>11}"]
    for c in costs:
        lines.append(f"{c.name:<10}{c.bytes_per_step:>11.2f}{c.parameters['non_embedding']:>18,}"
                     f"{format_flops(c.flops.forward):>10}{format_flops(c.training):>10}{format_flops(c.inference):>11}")
    return "\n".join(lines)
