"""The environment variables tiergate itself reads (Ray's feature flags, which tiergate
sets, are defined in ``tiergate.serving.ray_env``). Imports nothing from tiergate.

    path = config_path()        # $TIERGATE_CONFIG, else the shipped default
"""

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


def api_keys() -> str | None:
    """TIERGATE_API_KEYS: the API keys as YAML/JSON text, when serving.auth.keys_file is unset."""
    return os.environ.get("TIERGATE_API_KEYS")
