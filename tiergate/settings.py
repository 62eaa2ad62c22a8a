"""The only place that reads (or, for Ray's feature flags, sets) environment variables."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


def config_path() -> Path:
    """TIERGATE_CONFIG, else the shipped Fashion-MNIST default."""
    return Path(os.environ.get("TIERGATE_CONFIG", DEFAULT_CONFIG))


def cache_dir_override() -> Path | None:
    """TIERGATE_CACHE_DIR replaces compress.cache_dir (e.g. a shared volume)."""
    value = os.environ.get("TIERGATE_CACHE_DIR")
    return Path(value) if value else None


def select_ray_ingress(mode: str) -> None:
    """Ray reads its ingress feature flags from the environment of every process it
    starts, so they must be set before ``import ray`` in the driver."""
    if mode == "haproxy":
        os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
