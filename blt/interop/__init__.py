"""Interoperability with other BLT implementations' checkpoints.

- `blt.interop.hf`: transformers' BltForCausalLM layout (names, configs, documented differences).
- `blt.interop.bytelatent`: the reference bytelatent layout (names, configs).
- `blt.interop.convert`: whole-directory conversions, used by `blt convert`.
- `blt.interop.tensorfile`: lazy tensor readers, conversion plans and a streaming safetensors writer.
"""
