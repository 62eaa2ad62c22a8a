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


MIN_MENU_KEY_CHARS = 16


def menu_key() -> bytes | None:
    """TIERGATE_MENU_KEY: the secret the build signs the menu (and seals the cache's
    records) with, and replicas check the menu against. Never logged. Every process that
    builds or serves needs the same value."""
    value = os.environ.get("TIERGATE_MENU_KEY")
    if not value:
        return None
    if len(value) < MIN_MENU_KEY_CHARS:
        raise ValueError(
            f"TIERGATE_MENU_KEY is {len(value)} characters; use at least {MIN_MENU_KEY_CHARS} random ones"
        )
    return value.encode()
