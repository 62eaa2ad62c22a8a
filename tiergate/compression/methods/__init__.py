"""Handlers, one module per compression method; importing this package registers them."""

from tiergate.compression.methods import distill, lowrank, prune, quantize

__all__ = ["distill", "lowrank", "prune", "quantize"]
