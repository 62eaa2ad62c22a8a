"""Ray and Serve, started once per test session; each module deploys its own application
(on its own route prefix) from a small digits config."""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

# the tiny digits menu (tests/conftest.py) served with small limits and three tiers
SERVE_OVERRIDES = {
    "tiers": {
        "fast": {"max_latency_ms": 50.0, "min_accuracy": 0.5},
        "accurate": {"max_latency_ms": 1000.0, "max_accuracy_drop": 0.0},
        "lenient": {"max_latency_ms": 60000.0, "min_accuracy": 0.5},  # the most accurate, whatever the load
    },
    "serving.batching": {"max_batch_size": 8},
    "serving.routing": {
        "default_tier": "accurate",
        "replica_profile_budget_s": 0.05,
        "variant_timeout_s": 0.5,
    },
    "serving.limits": {"max_batch_images": 8, "max_body_bytes": 200000},
}


def _free_port() -> int:
    """A port free now, below the kernel's ephemeral range and above Ray's worker ports
    (10002-19999). One the kernel picks (bind to port 0) comes from the ephemeral range,
    where it can go to one of the hundreds of sockets Ray opens before the server meant
    to have it binds it (seen: HAProxy failing with "Address already in use")."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(200):
        port = random.randrange(20000, max(20001, min(ephemeral, 32768)))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 20000 and {ephemeral}")


@pytest.fixture(scope="session")
def serve_cluster():
    """The serving config of a Ray cluster with Serve's ingress up, for the whole
    session; metrics are reported every second (Ray's default is 10 s)."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    # HAProxy's stats and metrics ports are fixed (8404, 9101) unless moved: free ones here
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(_free_port()))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(_free_port()))
    # HAProxy's config, admin socket and state live in /tmp/haproxy-serve unless moved: a
    # second cluster on the machine (another test run) would overwrite them
    # (a short folder: Ray adds a 56-character one below it, and a unix socket path must
    # fit in HAProxy's 97 characters)
    haproxy = Path(tempfile.mkdtemp(prefix="tg-haproxy-"))
    os.environ.setdefault("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", str(haproxy / "haproxy.cfg"))
    os.environ.setdefault("RAY_SERVE_HAPROXY_SOCKET_PATH", str(haproxy / "admin.sock"))
    os.environ.setdefault("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", str(haproxy))
    os.environ.setdefault("RAY_SERVE_HAPROXY_SERVER_STATE_FILE", str(haproxy / "server-state"))
    from tiergate import runtime
    from tiergate.serving.config import ServingConfig

    serving = ServingConfig(http={"port": _free_port(), "metrics_port": _free_port()})
    runtime.start_cluster(serving, num_cpus=2)
    try:
        yield serving
    finally:
        runtime.stop()
        shutil.rmtree(haproxy, ignore_errors=True)


@pytest.fixture(scope="session")
def digits_config(serve_cluster):
    """A factory: the tiny digits menu's serving config with ``serving`` fields overridden by
    group, e.g. ``make(admission={"max_in_flight": 1})`` sets serving.admission.max_in_flight."""
    from tests.conftest import tiny_config
    from tiergate.build import build_menu

    serving = serve_cluster
    base = {**SERVE_OVERRIDES, "serving.http": {"host": "127.0.0.1", "port": serving.http.port}}
    build_menu(tiny_config(overrides=base))  # once, in the driver; replicas then read the cache

    def make(**groups):
        overrides = {
            f"serving.{group}.{key}": value
            for group, fields in groups.items()
            for key, value in fields.items()
        }
        return tiny_config(overrides={**base, **overrides})

    return make


def deployed(config, name: str, route_prefix: str, **options):
    """Deploy ``config`` as application ``name`` (with the test hooks: ``set_fault``,
    ``modules``; ``options`` for ``runtime.deploy``); yields its base URL, deletes it after."""
    from ray import serve

    from tests.support.deployments import HOOKED
    from tiergate import runtime

    url = runtime.deploy(config, name=name, route_prefix=route_prefix, deployments=HOOKED, **options)
    try:
        yield url
    finally:
        serve.delete(name)
