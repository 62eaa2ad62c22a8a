"""The Ray cluster tiergate starts (runtime.start_cluster) runs with Ray's token
authentication: its node agent's HTTP API refuses a request without the token (401) or with
a wrong one (403) and lets one with the cluster's token through."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def cluster_token() -> str:
    """The token the cluster was started with, from where Ray reads it (tiergate.serving.ray_env)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip()


def test_the_node_agent_refuses_requests_without_the_token(serve_cluster):
    """A job-agent request to the node's dashboard agent gets 401 with no token, 403 with a
    wrong one, and passes authentication (neither) with the cluster's token."""
    import ray

    assert os.environ["RAY_AUTH_MODE"] == "token"
    port = ray._private.worker.global_worker.node.dashboard_agent_listen_port
    url = f"http://127.0.0.1:{port}/api/job_agent/jobs/"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer " + "0" * 64}, timeout=10).status_code == 403
    answer = httpx.get(url, headers={"Authorization": f"Bearer {cluster_token()}"}, timeout=10)
    assert answer.status_code not in (401, 403)
