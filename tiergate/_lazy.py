"""Lazy public names for a package's ``__init__`` (PEP 562), so that importing one light
module of a package (``tiergate.compression.cache`` in a serving replica) does not import
its heavy siblings (torch, torch-pruning, onnx).

    __getattr__, __dir__ = lazy_exports(__name__, {"Builder": ".pipeline", ...})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``name`` from its module
    (relative to ``package``) on first use."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
