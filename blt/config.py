"""Configs: one dataclass per component, nested in `BLTConfig`; named presets; JSON round-trip.

Every config validates itself in ``__post_init__`` and raises `ConfigError` with a message that says
what to change. Presets are plain functions returning a config; `BLTConfig.preset("tiny")` picks one.

>>> cfg = BLTConfig.preset("tiny")
>>> BLTConfig.from_json(cfg.to_json()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blt.errors import ConfigError
from blt.tokenizer import VOCAB_SIZE

# Primes of the polynomial n-gram hash (docs/design.md §3), in the reference's order.
HASH_PRIMES = (
    1000000007, 5915587277, 1500450271, 3267000013, 5754853343, 4093082899,
    9576890767, 3628273133, 2860486313, 5463458053, 3367900313,
)

RELEASED_THRESHOLD = 1.335442066192627  # θ_g (nats) of the released BLT checkpoints and their patcher

PatchingMode = Literal["entropy", "monotonic", "combined", "static", "space", "bpe", "byte"]
PATCHING_MODES: tuple[str, ...] = typing.get_args(PatchingMode)


def swiglu_hidden_size(dim: int, multiple_of: int = 256) -> int:
    """The reference SwiGLU hidden size: ``multiple_of * ceil(int(8 * dim / 3) / multiple_of)``.

    >>> swiglu_hidden_size(2048), swiglu_hidden_size(1024)
    (5632, 2816)
    """
    return multiple_of * math.ceil(int(8 * dim / 3) / multiple_of)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class _JsonConfig:
    """JSON round-trip for (nested) config dataclasses; unknown keys are an error, not ignored."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], _prefix: str = ""):
        """The config of ``data`` (as `to_dict` writes it); a `ConfigError` naming the key for unknown keys and
        for values of the wrong type."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            sub = _config_class(hints[name])
            if sub is not None and isinstance(value, dict):
                value = sub.from_dict(value, f"{_prefix}{name}.")
            elif isinstance(value, list):
                value = tuple(value)
            if not _has_type(value, hints[name]):
                raise ConfigError(f"config value {_prefix}{name} ({cls.__name__}) must be {_type_name(hints[name])}, "
                                  f"got {json.dumps(value) if isinstance(value, (tuple, type(None), bool)) else repr(value)}")
            if not all(_in_range(v) for v in (value if isinstance(value, tuple) else (value,))):
                raise ConfigError(f"config value {_prefix}{name} ({cls.__name__}) is {value!r}: numbers must be finite "
                                  "and integers at most 2**63 - 1")
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return cls.from_json(path.read_text())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_overrides(self, overrides: dict[str, str] | list[str]):
        """Apply ``key.sub=value`` overrides (as from ``--set``); values are parsed as JSON when they can be."""
        if isinstance(overrides, list):
            pairs = {}
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"--set expects key=value, got {item!r}")
                key, value = item.split("=", 1)
                pairs[key.strip()] = value
            overrides = pairs
        data = self.to_dict()
        for key, raw in overrides.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"unknown config section {p!r} in {key!r}")
                node = node[p]
            if leaf not in node:
                raise ConfigError(f"unknown config key {key!r}; known here: {sorted(node)}")
            try:
                node[leaf] = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                node[leaf] = raw
        return type(self).from_dict(data)


def _in_range(value: Any) -> bool:
    """Whether a JSON-loaded number is one torch can hold: a finite float, an integer of at most 64 bits."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= 2**63 - 1
    return True


def _union_args(hint) -> tuple | None:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else None


def _has_type(value: Any, hint) -> bool:
    """Whether a JSON-loaded value fits a config field's type hint (an int passes for a float; a bool is not a
    number)."""
    if (options := _union_args(hint)) is not None:
        return any(_has_type(value, option) for option in options)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return isinstance(value, tuple) and (item is None or all(_has_type(v, item) for v in value))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint) -> str:
    if (options := _union_args(hint)) is not None:
        return " or ".join(_type_name(option) for option in options)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list, each item {_type_name(args[0])}" if len(args) == 2 and args[1] is Ellipsis else "a list"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, "an object" if _config_class(hint) else getattr(hint, "__name__", str(hint)))


def _config_class(hint) -> type | None:
    """The config dataclass inside a type hint like ``X`` or ``X | None``, if any."""
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, _JsonConfig):
            return c
    return None


@dataclass(frozen=True)
class TransformerConfig(_JsonConfig):
    """A stack of Llama-style pre-norm blocks (RMSNorm, RoPE on adjacent pairs, SwiGLU, grouped KV)."""

    dim: int = 256  # model width D
    n_layers: int = 2  # number of blocks
    n_heads: int = 4  # attention heads; head size is dim / n_heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None = n_heads
    ffn_dim: int | None = None  # SwiGLU hidden size; None = 256 * ceil(int(8 dim / 3) / 256)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 500000.0  # RoPE base
    window: int | None = None  # sliding attention window in positions; None = full causal

    def __post_init__(self):
        name = type(self).__name__
        _require(self.dim > 0 and self.n_layers >= 0 and self.n_heads > 0, f"{name}: dim, n_heads must be > 0 and n_layers >= 0")
        _require(self.dim % self.n_heads == 0, f"{name}: dim {self.dim} must be divisible by n_heads {self.n_heads}")
        _require((self.dim // self.n_heads) % 2 == 0, f"{name}: head size dim/n_heads = {self.dim // self.n_heads} must be even for RoPE")
        kv = self.kv_heads
        _require(kv > 0 and self.n_heads % kv == 0, f"{name}: n_heads {self.n_heads} must be a multiple of n_kv_heads {kv}")
        _require(self.ffn_dim is None or self.ffn_dim > 0, f"{name}: ffn_dim must be positive or null")
        _require(self.window is None or self.window > 0, f"{name}: window must be positive or null (full causal)")
        _require(self.rope_theta > 0 and self.norm_eps > 0, f"{name}: rope_theta and norm_eps must be positive")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_dim or swiglu_hidden_size(self.dim)


@dataclass(frozen=True)
class LocalEncoderConfig(TransformerConfig):
    """The light byte-level encoder; its patch queries cross-attend to their own patch's bytes."""

    dim: int = 128
    n_layers: int = 1
    window: int | None = 512
    cross_attn_all_layers: bool = False  # cross-attend after every layer (True) or only after the last


@dataclass(frozen=True)
class GlobalConfig(TransformerConfig):
    """The large latent transformer over patches (causal over patches, no final norm)."""

    dim: int = 256
    n_layers: int = 4


@dataclass(frozen=True)
class LocalDecoderConfig(TransformerConfig):
    """The light byte-level decoder; bytes cross-attend to the global state of the last complete patch."""

    dim: int = 128
    n_layers: int = 2
    window: int | None = 512
    cross_attn_all_layers: bool = True  # cross-attend before every layer (True) or only before the first


@dataclass(frozen=True)
class HashEmbeddingConfig(_JsonConfig):
    """Hashed byte n-gram embeddings added to the byte embeddings of the encoder."""

    ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)  # n of the byte n-grams ending at each byte
    num_functions: int = 1  # hash functions per n (each uses the next prime of HASH_PRIMES)
    rows: int = 500002  # rows per (function, n) table; released checkpoints use 500002

    def __post_init__(self):
        object.__setattr__(self, "ngram_sizes", tuple(self.ngram_sizes))
        _require(all(isinstance(n, int) and n >= 1 for n in self.ngram_sizes), "hash.ngram_sizes must be positive ints")
        _require(len(set(self.ngram_sizes)) == len(self.ngram_sizes), "hash.ngram_sizes must not repeat")
        _require(0 <= self.num_functions <= len(HASH_PRIMES), f"hash.num_functions must be in [0, {len(HASH_PRIMES)}]")
        _require(self.rows >= 1, "hash.rows must be >= 1")

    @property
    def num_tables(self) -> int:
        return self.num_functions * len(self.ngram_sizes)


@dataclass(frozen=True)
class PatchingConfig(_JsonConfig):
    """How bytes are grouped into patches (docs/design.md §2). One source of truth for the threshold."""

    mode: PatchingMode = "entropy"  # entropy | monotonic | combined | static | space | bpe | byte
    threshold: float | None = None  # θ_g (nats) for entropy/combined; θ_r for monotonic
    relative_threshold: float | None = None  # θ_r for combined mode
    target_patch_size: float | None = None  # calibrate θ on data to reach this mean patch size
    max_patch_length: int | None = None  # split longer patches; None = no limit
    patch_size: int = 4  # k for static patching

    def __post_init__(self):
        _require(self.mode in PATCHING_MODES, f"patching.mode {self.mode!r} is not one of {list(PATCHING_MODES)}")
        _require(self.max_patch_length is None or self.max_patch_length >= 1, "patching.max_patch_length must be >= 1 or null")
        _require(self.patch_size >= 1, "patching.patch_size must be >= 1")
        _require(self.target_patch_size is None or self.target_patch_size >= 1.0,
                 "patching.target_patch_size must be >= 1 byte (e.g. 4.5, 6 or 8)")
        for name in ("threshold", "relative_threshold"):
            value = getattr(self, name)
            _require(value is None or math.isfinite(value), f"patching.{name} must be a finite number of nats or null")
        if self.mode in ("entropy", "monotonic", "combined"):
            _require(self.threshold is not None or self.target_patch_size is not None,
                     f"patching.mode={self.mode} needs a threshold (e.g. threshold=1.335) or a target_patch_size (e.g. 6)")
        if self.mode == "combined":  # θ_g is given or calibrated to target_patch_size; θ_r is always given
            _require(self.relative_threshold is not None,
                     "patching.mode=combined needs relative_threshold (θ_r, e.g. 0.35) as well as a threshold or a "
                     "target_patch_size (θ_g is calibrated to it with θ_r fixed)")

    @property
    def uses_entropy_model(self) -> bool:
        return self.mode in ("entropy", "monotonic", "combined")


@dataclass(frozen=True)
class BLTConfig(_JsonConfig):
    """The whole Byte Latent Transformer (docs/design.md §3)."""

    encoder: LocalEncoderConfig = field(default_factory=LocalEncoderConfig)
    global_model: GlobalConfig = field(default_factory=GlobalConfig)
    decoder: LocalDecoderConfig = field(default_factory=LocalDecoderConfig)
    hash: HashEmbeddingConfig = field(default_factory=lambda: HashEmbeddingConfig(rows=8192))
    patching: PatchingConfig = field(default_factory=lambda: PatchingConfig(mode="entropy", target_patch_size=4.5))
    cross_attn_k: int = 2  # query slots per patch in the encoder; key/value slots per patch in the decoder
    vocab_size: int = VOCAB_SIZE  # 260: bytes + 4 specials
    max_seq_len: int = 512  # bytes per training sequence
    max_patches: int | None = None  # patches per sequence; None = max_seq_len
    init_std_factor: float = 1.0  # scales every init std (1.0 = the reference's d^-0.5)

    def __post_init__(self):
        _require(self.cross_attn_k >= 1, "cross_attn_k must be >= 1")
        _require(self.vocab_size == VOCAB_SIZE, f"vocab_size must be {VOCAB_SIZE} (bytes + 4 specials)")
        _require(self.max_seq_len >= 2, "max_seq_len must be >= 2 (BOS and one byte)")
        _require(self.max_patches is None or self.max_patches >= 1, "max_patches must be >= 1 or null")
        enc, dec = self.encoder, self.decoder
        _require(enc.dim % enc.n_heads == 0 and dec.dim % dec.n_heads == 0, "encoder/decoder dims must divide by n_heads")
        _require(enc.dim == dec.dim, f"encoder.dim ({enc.dim}) must equal decoder.dim ({dec.dim}): the decoder starts "
                                     "from the encoder's byte states")

    @classmethod
    def preset(cls, name: str) -> BLTConfig:
        if name not in BLT_PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(BLT_PRESETS)}")
        return BLT_PRESETS[name]()

    @staticmethod
    def preset_names() -> list[str]:
        return sorted(BLT_PRESETS)


ENTROPY_PRECISIONS = ("fp32", "bf16")  # what `EntropyModel.entropies` may compute in


@dataclass(frozen=True)
class EntropyModelConfig(TransformerConfig):
    """The small causal byte LM whose next-byte entropies place patch boundaries (docs/design.md §2)."""

    dim: int = 128
    n_layers: int = 2
    window: int | None = 512
    vocab_size: int = VOCAB_SIZE
    max_seq_len: int = 512  # bytes per training sequence
    chunk_len: int = 2048  # entropies() processes long inputs in chunks of this many bytes
    precision: str = "fp32"  # what entropies() computes in: fp32, or bf16 (`blt patch --data --precision bf16`)

    def __post_init__(self):
        super().__post_init__()
        _require(self.vocab_size == VOCAB_SIZE, f"vocab_size must be {VOCAB_SIZE}")
        _require(self.precision in ENTROPY_PRECISIONS,
                 f"the entropy model's precision must be one of {list(ENTROPY_PRECISIONS)}, got {self.precision!r}")
        _require(self.chunk_len >= 2 and self.max_seq_len >= 2, "chunk_len and max_seq_len must be >= 2")

    @classmethod
    def preset(cls, name: str) -> EntropyModelConfig:
        if name not in ENTROPY_PRESETS:
            raise ConfigError(f"unknown entropy-model preset {name!r}; choose one of {sorted(ENTROPY_PRESETS)}")
        return ENTROPY_PRESETS[name]()

    @staticmethod
    def preset_names() -> list[str]:
        return sorted(ENTROPY_PRESETS)


# --- presets -------------------------------------------------------------------------------------

def _tiny() -> BLTConfig:
    """Trains in minutes on 2 CPU cores; used by the demo, CI and docs."""
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=128, n_layers=1, n_heads=4, window=256),
        global_model=GlobalConfig(dim=256, n_layers=4, n_heads=4),
        decoder=LocalDecoderConfig(dim=128, n_layers=2, n_heads=4, window=256),
        hash=HashEmbeddingConfig(rows=8192),
        cross_attn_k=2,
        max_seq_len=512,
    )


def _small() -> BLTConfig:
    """About 56M parameters (30M of them hash embeddings); an hour-scale CPU model."""
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=256, n_layers=1, n_heads=4, window=512),
        global_model=GlobalConfig(dim=512, n_layers=6, n_heads=8),
        decoder=LocalDecoderConfig(dim=256, n_layers=3, n_heads=4, window=512),
        hash=HashEmbeddingConfig(rows=20000),
        cross_attn_k=2,
        max_seq_len=1024,
    )


def _paper_xs() -> BLTConfig:
    """Shaped like the paper's models at CPU scale: the global model is 73% of the forward FLOPs per byte at
    6 bytes per patch and 67% at 8 (the released 1B: 67% at 4.5), with a one-layer encoder and a deeper
    decoder. Training costs 7.2M FLOPs per byte at 6 bytes per patch (`tiny`: 10.2M); for the scaling runs
    of `blt compare`."""
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=64, n_layers=1, n_heads=2, window=256),
        global_model=GlobalConfig(dim=256, n_layers=6, n_heads=4),
        decoder=LocalDecoderConfig(dim=64, n_layers=2, n_heads=2, window=256),
        hash=HashEmbeddingConfig(rows=8192),
        cross_attn_k=2,
        max_seq_len=512,
    )


def _paper_s() -> BLTConfig:
    """The next size of the `paper-xs` family: the global model is 74% of the forward FLOPs per byte at 6
    bytes per patch and 68% at 8, over 1,024-byte sequences; a GPU-hour model."""
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=128, n_layers=1, n_heads=4, window=512),
        global_model=GlobalConfig(dim=512, n_layers=8, n_heads=8),
        decoder=LocalDecoderConfig(dim=128, n_layers=3, n_heads=4, window=512),
        hash=HashEmbeddingConfig(rows=20000),
        cross_attn_k=2,
        max_seq_len=1024,
    )


def _blt_1b() -> BLTConfig:
    """The released BLT-1B layout (docs/design.md §3)."""
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=1024, n_layers=1, n_heads=16, window=512, cross_attn_all_layers=False),
        global_model=GlobalConfig(dim=2048, n_layers=25, n_heads=16, ffn_dim=5632),
        decoder=LocalDecoderConfig(dim=1024, n_layers=9, n_heads=16, window=512, cross_attn_all_layers=True),
        hash=HashEmbeddingConfig(rows=500002, num_functions=1),
        patching=PatchingConfig(mode="entropy", threshold=RELEASED_THRESHOLD),
        cross_attn_k=2,
        max_seq_len=24576,
        max_patches=4096,
    )


def _blt_8b() -> BLTConfig:
    """The BLT-8B layout of the paper (docs/design.md §3)."""
    return BLTConfig(
        encoder=LocalEncoderConfig(dim=1280, n_layers=1, n_heads=20, window=512, cross_attn_all_layers=False),
        global_model=GlobalConfig(dim=4096, n_layers=32, n_heads=32),
        decoder=LocalDecoderConfig(dim=1280, n_layers=6, n_heads=20, window=512, cross_attn_all_layers=True),
        hash=HashEmbeddingConfig(rows=500002, num_functions=1),
        patching=PatchingConfig(mode="entropy", threshold=RELEASED_THRESHOLD),
        cross_attn_k=4,
        max_seq_len=24576,
        max_patches=4096,
    )


BLT_PRESETS = {"tiny": _tiny, "small": _small, "paper-xs": _paper_xs, "paper-s": _paper_s, "1b": _blt_1b, "8b": _blt_8b}

ENTROPY_PRESETS = {
    # Trains in a few minutes on 2 CPU cores.
    "tiny": lambda: EntropyModelConfig(dim=128, n_layers=2, n_heads=4, window=256, max_seq_len=512),
    "small": lambda: EntropyModelConfig(dim=256, n_layers=4, n_heads=4, window=512, max_seq_len=1024),
    # The paper's ~100M entropy model and the released patcher.
    # The reference loads its entropy models with RoPE θ = 10000 (its default), not the global model's 500000.
    "100m": lambda: EntropyModelConfig(dim=512, n_layers=14, n_heads=8, window=512, rope_theta=10000.0, max_seq_len=8192),
    "released": lambda: EntropyModelConfig(dim=768, n_layers=14, n_heads=12, window=512, ffn_dim=2048, rope_theta=10000.0,
                                           max_seq_len=8192),
}
