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


def api_keys() -> str | None:
    """TIERGATE_API_KEYS: the API keys as YAML/JSON text, when serving.auth.keys_file is unset."""
    return os.environ.get("TIERGATE_API_KEYS")


def prepare_ray_environment(ingress: str, ingress_metrics: bool = False) -> None:
    """Ray reads its feature flags from the environment of every process it starts, so
    they are set before Ray starts any."""
    os.environ.setdefault("RAY_EXPORT_COUNTER_AS_GAUGE", "0")  # counters once, as *_total
    # Ray runs replica code on a second event loop in its own thread by default, shielding
    # Ray's loop from user code that blocks; tiergate's blocks at most for one short model
    # run (serving.batching.inline_run_max_ms; longer runs and image decoding are in worker
    # threads), and the hop between the loops costs each request
    # CPU: measured, refusals 1.7x and answers ~1.15x cheaper on the replica's own loop
    os.environ.setdefault("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "0")
    mode = ingress
    if mode == "haproxy":
        os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
        # Ray's defaults drain for 30 s and let HAProxy linger 120 s at shutdown; a single
        # gateway drains its in-flight requests in far less
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
        os.environ.setdefault("RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S", "5")
        # HAProxy logs each request to a socket that Ray parses in Python for its
        # ray_serve_num_http_requests_* series: measured ~0.3 ms of a request at concurrency 1
        os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1" if ingress_metrics else "0")
        # admission ahead of Serve's per-request work in the replica (serving.frontdoor)
        os.environ.setdefault(
            "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "tiergate.serving.frontdoor:middlewares"
        )
