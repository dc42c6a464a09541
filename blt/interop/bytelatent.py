"""The reference `bytelatent` layout (github.com/facebookresearch/blt): tensor names and config translation.

Names and argument semantics come from the reference source (``bytelatent/model/blt.py``,
``model/local_models.py``, ``model/latent_transformer.py``, ``transformer.py``, ``entropy_model.py``,
``data/patcher.py``) and agree with transformers' ``convert_blt_weights_to_hf.py``:

- BLT: ``local_encoder.tok_embeddings``, ``encoder_hash_tok_embedding.{i}`` (one table per hash function
  and n-gram size, ``i = f * len(sizes) + n_index``, which we fuse into one table in that order),
  ``{local_encoder, global_transformer, local_decoder}.layers.N.<block>`` with our block names,
  ``{local_encoder, local_decoder}.cross_attn_layers.N.{cross_attn_norm_q, cross_attn_norm_kv, wq, wk, wv, wo}``,
  ``local_encoder.patch_embedding_projection``, ``global_transformer.token_embedding_projection``,
  ``local_decoder.{patch_embedding_projection, norm, output}``. RoPE tables are non-persistent buffers.
- Entropy model (an ``LMTransformer``): ``tok_embeddings``, ``layers.N.<block>``, ``norm``, ``output``.

Configs: the BLT's ``ByteLatentTransformerArgs`` (``config.json`` ``{"args": ...}`` of the Hub release,
or ``params.json`` ``{"model": ...}`` of a consolidated checkpoint) and the entropy model's
``params.json`` ``{"entropy_model": ..., "data": {"patcher_args": ...}}``. Only the released
architecture is accepted (cross-attention encoder and decoder initialised by max pooling, hash n-gram
embeddings, SwiGLU, RoPE, RMSNorm); anything else is refused by name.

The entropy model is built as the reference's ``load_entropy_model`` builds it, which reads only
``dim``, ``n_layers``, ``n_heads``, ``max_seqlen``, ``ffn_dim_multiplier`` and ``vocab_size`` from
params.json and fixes the rest: sliding window 512, document-aware (local block causal) attention,
RoPE θ 10000, RMSNorm eps 1e-5, SwiGLU multiple_of 256, no grouped KV. transformers' converter instead
reads ``rope_theta``/``norm_eps``/``n_kv_heads``/``multiple_of`` from params.json (defaults 10000, 1e-5,
none, 256), so the two agree whenever params.json holds those defaults.

Patching (``PatcherArgs``): the global threshold is the same rule as ours. In monotonic mode
(``monotonicity``) and combined mode (``threshold_add``) the reference always starts a patch at byte 2
(it has no entropy difference to test there) and, in combined mode only, never lets the rule start one
at byte 3; we apply the rule from byte 3 on in both modes (docs/design.md §2). Converted runs patch with our rule.
"""

from __future__ import annotations

import math
from typing import Any

from blt.config import (
    RELEASED_THRESHOLD,
    BLTConfig,
    EntropyModelConfig,
    GlobalConfig,
    HashEmbeddingConfig,
    LocalDecoderConfig,
    LocalEncoderConfig,
    PatchingConfig,
)
from blt.errors import CheckpointError
from blt.interop._errors import foreign_config
from blt.interop.names import BLOCK_NAMES, NameTable
from blt.tokenizer import VOCAB_SIZE

_STAGES = {"encoder": "local_encoder", "global_model": "global_transformer", "decoder": "local_decoder"}
_CROSS = {
    "query_norm.weight": "cross_attn_norm_q.weight",
    "kv_norm.weight": "cross_attn_norm_kv.weight",
    "wq.weight": "wq.weight",
    "wk.weight": "wk.weight",
    "wv.weight": "wv.weight",
    "wo.weight": "wo.weight",
}
_SINGLE = {
    "byte_embedding.weight": "local_encoder.tok_embeddings.weight",
    "encoder.patch_query_projection.weight": "local_encoder.patch_embedding_projection.weight",
    "global_model.input_projection.weight": "global_transformer.token_embedding_projection.weight",
    "decoder.patch_projection.weight": "local_decoder.patch_embedding_projection.weight",
    "decoder.norm.weight": "local_decoder.norm.weight",
    "decoder.output.weight": "local_decoder.output.weight",
}
_ENTROPY_SINGLE = {"embedding.weight": "tok_embeddings.weight", "norm.weight": "norm.weight", "output.weight": "output.weight"}
HASH_TABLE = "hash_embedding.table.weight"

# ByteLatentTransformerArgs that must hold for the released architecture, with the reference's defaults.
_REQUIRED: dict[str, tuple[Any, Any]] = {  # name: (required value, reference default when absent)
    "cross_attn_encoder": (True, False),
    "cross_attn_decoder": (True, False),
    "cross_attn_init_by_pooling": (True, False),
    "downsampling_by_pooling": ("max", None),
    "use_local_encoder_transformer": (True, False),
    "encoder_enable_byte_ngrams": (False, False),
    "encoder_ngram_to_size_str": (None, None),
    "cross_attn_window_encoder": (None, None),
    "cross_attn_window_decoder": (None, None),
    "dim_token": (None, None),
    "pm_size": (0, 0),
    "use_rope": (True, True),
    "non_linearity": ("swiglu", "swiglu"),
    "norm_type": ("rmsnorm", "rmsnorm"),
    "norm_affine": (True, True),
    "pre_norm": (True, True),
    "weight_tying": (False, False),
    "vocab_size": (VOCAB_SIZE, -1),
}


REFERENCE_NAMES = NameTable(
    layout="bytelatent", single=_SINGLE, stages=_STAGES, block={n: n for n in BLOCK_NAMES}, cross=_CROSS,
    entropy_single=_ENTROPY_SINGLE, entropy_layers="layers.",
)


def reference_name(name: str) -> str:
    """Our BLT parameter name -> the reference's (the fused hash table has several; see `hash_table_names`).

    >>> reference_name("decoder.cross_attn_layers.2.query_norm.weight")
    'local_decoder.cross_attn_layers.2.cross_attn_norm_q.weight'
    """
    return REFERENCE_NAMES.blt(name)


def hash_table_names(num_tables: int) -> tuple[str, ...]:
    """The reference's separate hash tables, in the order they are stacked into our fused table
    (table ``i = f * len(ngram_sizes) + n_index`` at rows ``i * rows : (i + 1) * rows``).

    >>> hash_table_names(2)
    ('encoder_hash_tok_embedding.0.weight', 'encoder_hash_tok_embedding.1.weight')
    """
    return tuple(f"encoder_hash_tok_embedding.{i}.weight" for i in range(num_tables))


def reference_sources(names: list[str], hash_config: HashEmbeddingConfig) -> dict[str, tuple[str, ...]]:
    """Our BLT parameter names -> the reference tensors that make each up (several only for the hash table)."""
    return {name: hash_table_names(hash_config.num_tables) if name == HASH_TABLE else (reference_name(name),)
            for name in names}


def reference_entropy_name(name: str) -> str:
    """Our entropy-model parameter name -> the reference LMTransformer's.

    >>> reference_entropy_name("embedding.weight"), reference_entropy_name("transformer.layers.0.ffn_norm.weight")
    ('tok_embeddings.weight', 'layers.0.ffn_norm.weight')
    """
    return REFERENCE_NAMES.entropy(name)


def reference_ffn_dim(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """The reference FeedForward's hidden size for a block of width ``dim``.

    >>> reference_ffn_dim(768), reference_ffn_dim(2048)
    (2048, 5632)
    """
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


def _ngram_sizes(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):  # the reference also accepts "3,4,5"
        return tuple(int(x) for x in value.split(",") if x)
    return tuple(value)


def blt_config_from_reference(args: dict[str, Any], patcher_args: dict[str, Any]) -> BLTConfig:
    """``ByteLatentTransformerArgs`` (dict) and ``PatcherArgs`` (dict) -> our BLTConfig."""
    with foreign_config("bytelatent config"):
        for key, (required, default) in _REQUIRED.items():
            if args.get(key, default) != required:
                raise CheckpointError(f"bytelatent config has {key} = {args.get(key, default)!r}; blt implements only "
                                      f"the released architecture ({key} = {required!r})")
        if args.get("encoder_hash_byte_group_size") is None:
            raise CheckpointError("bytelatent config has no encoder_hash_byte_group_size; blt needs hash n-gram embeddings")
        heads = args.get("cross_attn_nheads")
        for stage in ("encoder", "decoder"):
            if heads != args.get(f"n_heads_local_{stage}", 8):
                raise CheckpointError(f"bytelatent config has cross_attn_nheads = {heads} and n_heads_local_{stage} = "
                                      f"{args.get(f'n_heads_local_{stage}', 8)}; blt's cross-attention uses the local "
                                      "model's heads")
        if args.get("head_dim") is not None:
            raise CheckpointError("bytelatent config sets head_dim; blt derives it as dim / n_heads")
        multiple_of, multiplier = args.get("multiple_of", 256), args.get("ffn_dim_multiplier", 1.0)
        common = {"norm_eps": args.get("norm_eps", 1e-5), "rope_theta": args.get("rope_theta", 10000.0)}
        window = args.get("local_attention_window_len")

        def local(stage: str) -> dict[str, Any]:
            dim = args.get(f"dim_local_{stage}", 512)
            return {"dim": dim, "n_layers": args.get(f"n_layers_local_{stage}", 8),
                    "n_heads": args.get(f"n_heads_local_{stage}", 8), "n_kv_heads": args.get("n_kv_heads"),
                    "ffn_dim": reference_ffn_dim(dim, multiple_of, multiplier), "window": window,
                    "cross_attn_all_layers": args.get(f"cross_attn_all_layers_{stage}", False), **common}

        global_dim = args.get("dim_global", 512)
        return BLTConfig(
            encoder=LocalEncoderConfig(**local("encoder")),
            global_model=GlobalConfig(dim=global_dim, n_layers=args.get("n_layers_global", 8),
                                      n_heads=args.get("n_heads_global", 8), n_kv_heads=args.get("n_kv_heads_global"),
                                      ffn_dim=reference_ffn_dim(global_dim, multiple_of, multiplier), **common),
            decoder=LocalDecoderConfig(**local("decoder")),
            hash=HashEmbeddingConfig(ngram_sizes=_ngram_sizes(args["encoder_hash_byte_group_size"]),
                                     num_functions=args.get("encoder_hash_byte_group_nb_functions", 3),
                                     rows=args.get("encoder_hash_byte_group_vocab", 30000)),
            patching=patching_from_reference(patcher_args),
            cross_attn_k=args["cross_attn_k"],
            max_seq_len=args.get("max_encoder_seq_length") or args.get("max_seqlen", 1024),
            max_patches=args.get("max_seqlen", 1024),
        )


def patching_from_reference(patcher_args: dict[str, Any]) -> PatchingConfig:
    """``PatcherArgs`` -> our patching config: entropy mode with ``threshold`` (global), ``monotonicity``
    (monotonic, the threshold is θ_r) or ``threshold_add`` (combined, θ_r); or space patching."""
    mode = patcher_args.get("patching_mode", "entropy")
    max_patch_length = patcher_args.get("max_patch_length")
    if mode == "space":
        return PatchingConfig(mode="space", max_patch_length=max_patch_length)
    if mode != "entropy":
        raise CheckpointError(f"bytelatent patching_mode {mode!r} has no blt counterpart; blt reads entropy and space")
    threshold = patcher_args.get("threshold", RELEASED_THRESHOLD)
    if threshold is None:
        raise CheckpointError("bytelatent patcher_args has no threshold (top-k patching); blt patches by threshold")
    if patcher_args.get("monotonicity", False):
        return PatchingConfig(mode="monotonic", threshold=threshold, max_patch_length=max_patch_length)
    if patcher_args.get("threshold_add") is not None:
        return PatchingConfig(mode="combined", threshold=threshold, relative_threshold=patcher_args["threshold_add"],
                              max_patch_length=max_patch_length)
    return PatchingConfig(mode="entropy", threshold=threshold, max_patch_length=max_patch_length)


def entropy_config_from_reference(params: dict[str, Any]) -> EntropyModelConfig:
    """The ``entropy_model`` section of the reference's params.json -> our EntropyModelConfig, built as
    the reference's ``load_entropy_model`` builds it (see the module notes)."""
    with foreign_config("bytelatent entropy-model params"):
        if params.get("vocab_size") != VOCAB_SIZE:
            raise CheckpointError(f"bytelatent entropy model has vocab_size {params.get('vocab_size')}; BLT uses {VOCAB_SIZE}")
        dim = params["dim"]
        return EntropyModelConfig(dim=dim, n_layers=params["n_layers"], n_heads=params["n_heads"],
                                  ffn_dim=reference_ffn_dim(dim, 256, params.get("ffn_dim_multiplier")),
                                  norm_eps=1e-5, rope_theta=10000.0, window=512, max_seq_len=params["max_seqlen"])
