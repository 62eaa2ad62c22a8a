"""The per_variant topology on Ray Serve over real HTTP: the ingress routes, each variant
runs in its own deployment, and a variant whose replica dies is routed around."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.conftest import deployed

pytestmark = pytest.mark.integration

PREFIX = "/pv"


@pytest.fixture(scope="module")
def client(digits_config):
    for url in deployed(digits_config(topology="per_variant"), "tiergate-pv", PREFIX):
        with httpx.Client(base_url=url, timeout=30) as http:
            yield http


def _replica_actors(deployment: str):
    import ray

    return [
        ray.get_actor(actor["name"], namespace=actor["namespace"])
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::tiergate-pv#{deployment}#")
    ]


def test_every_variant_deployment_serves_with_in_replica_timings(client, digits):
    """Each tier and each pinned variant is answered through its own deployment, and the
    catalog carries latency timed inside the variant's replica."""
    variants = client.get("/v1/variants").json()["variants"]
    assert {v["name"] for v in variants} == {"fp32", "int8", "distilled"}
    assert all(v["ready"] and v["live"]["serving_p95_ms"]["1"] > 0 for v in variants)
    for pin in ("fp32", "int8", "distilled"):
        response = client.post("/v1/predict", json={"inputs": digits.test.x[:3].tolist(), "variant": pin})
        assert response.status_code == 200, response.text
        assert response.json()["variant"] == pin and len(response.json()["predictions"]) == 3
    for tier in ("fast", "accurate"):
        response = client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "tier": tier})
        assert response.status_code == 200 and response.json()["tier"] == tier


def test_dead_variant_replica_is_routed_around_then_restarted(client, digits):
    """Killing the replica of the variant a tier routes to: the next request is served by
    the next-best variant (retried_from names the dead one, reached by error or timeout);
    Serve restarts the replica and the variant serves again."""
    import ray

    chosen = client.post("/v1/route", json={"tier": "lenient", "batch_size": 2}).json()["variant"]
    replicas = _replica_actors(f"variant-{chosen.replace('+', '-')}")
    assert replicas, f"no replica actor found for {chosen}"
    for actor in replicas:
        ray.kill(actor, no_restart=True)
    for actor in replicas:  # wait until Ray reports each one dead
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.__ray_ready__.remote(), timeout=30)
    response = client.post("/v1/predict", json={"inputs": digits.test.x[:2].tolist(), "tier": "lenient"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["variant"] != chosen and body["retried_from"] == chosen
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pinned = client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "variant": chosen})
        if pinned.status_code == 200:
            break
        time.sleep(1)
    assert pinned.status_code == 200, pinned.text
