"""Interoperability with other BLT implementations' checkpoints."""
