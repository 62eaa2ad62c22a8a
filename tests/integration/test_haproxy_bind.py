"""HAProxy on a real Ray Serve cluster in tiergate's HAProxy ingress, run by Ray through
tiergate-haproxy: its stats and metrics ports listen on 127.0.0.1 only, the serving port
where Ray put it, and the wrapper found what it expected in Ray's config (no warning)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.support.haproxy import listening

pytestmark = pytest.mark.integration


def test_haproxy_side_ports_listen_on_loopback_only(serve_cluster):
    """Once HAProxy listens, its stats and metrics ports are bound to 127.0.0.1 alone, its
    serving frontend answers on serving.http.host:port, and HAProxy's stderr logs (where Ray
    keeps them) hold no warning from the wrapper."""
    if not os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        pytest.skip("Ray runs its own HAProxy: the console script tiergate-haproxy is not installed")
    stats, metrics = (int(os.environ[f"RAY_SERVE_HAPROXY_{port}_PORT"]) for port in ("STATS", "METRICS"))
    deadline = time.monotonic() + 60
    while not (listening(stats) and listening(metrics)):
        assert time.monotonic() < deadline, "HAProxy's stats and metrics ports never listened"
        time.sleep(0.5)
    assert listening(stats) == listening(metrics) == {"127.0.0.1"}
    http = serve_cluster.http
    assert httpx.get(f"http://{http.host}:{http.port}/-/healthz", timeout=10).status_code in (200, 503)
    logs = Path(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]).parent.rglob("*.stderr.log")
    assert not [line for log in logs for line in log.read_text().splitlines() if "tiergate-haproxy" in line]
