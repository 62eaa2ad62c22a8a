"""Helpers for shadow sampling tests: request ids that are (or are not) sampled, and a
variant whose artifact is broken on purpose.

    ids = sampled_ids(100)                       # each shadowed at the default rate
    entry = broken_variant(menu.variants[2], tmp_path)   # its weights spoiled, its figures kept
"""

from __future__ import annotations

import hashlib
from itertools import count
from pathlib import Path

import numpy as np

from tiergate.profiles.menu import MenuEntry
from tiergate.serving.config import ShadowConfig
from tiergate.serving.quality import sampled

DEFAULT_RATE = ShadowConfig().rate


def sampled_ids(
    how_many: int, rate: float = DEFAULT_RATE, prefix: str = "req", chosen: bool = True
) -> list[str]:
    """The first ``how_many`` ids ``{prefix}-{n}`` that shadow sampling picks at ``rate``
    (``chosen=False``: that it passes over)."""
    ids = (f"{prefix}-{n}" for n in count())
    return [i for i, _ in zip((i for i in ids if sampled(i, rate) is chosen), range(how_many), strict=False)]


def broken_variant(entry: MenuEntry, folder: Path, noise: float = 1.5, seed: int = 0) -> MenuEntry:
    """``entry`` with its ONNX file broken: Gaussian noise (``noise`` x each float weight
    tensor's spread) added to its weights, saved under ``folder``. The entry keeps its offline
    figures: what the menu measured before the file broke."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(entry.path)
    rng = np.random.default_rng(seed)
    for tensor in model.graph.initializer:
        weights = numpy_helper.to_array(tensor)
        if weights.dtype == np.float32 and weights.size > 1:
            spread = noise * (weights.std() or 1.0)
            spoiled = weights + rng.normal(0, spread, weights.shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(spoiled, tensor.name))
    path = folder / f"{entry.name}-broken-{seed}.onnx"
    onnx.save(model, path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return entry.model_copy(update={"path": str(path), "sha256": sha256})
