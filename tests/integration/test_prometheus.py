"""Metrics end to end: a real Prometheus (Debian's package) on loopback scrapes Ray's
metrics endpoint while traffic flows to every tier; every recording rule in deploy/ and
every query of the Grafana dashboard must then return data."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import _free_port, deployed
from tests.support.prometheus import query, running_prometheus
from tests.unit.deploy.dashboard import dashboard_queries

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tiergate-slo.json"


@pytest.fixture(scope="module")
def gateway(digits_config):
    yield from deployed(digits_config(), "tiergate-metrics", "/m")


@pytest.fixture(scope="module")
def prometheus(serve_cluster, tmp_path_factory):
    """A Prometheus scraping this session's Ray metrics port every second, with deploy/'s rules."""
    serving = serve_cluster
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copy(RULES, folder / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{serving.http.metrics_port}"]}]}
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    with running_prometheus(folder, _free_port()) as url:
        yield url


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _recording_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]


def test_rules_and_dashboard_queries_return_data(gateway, prometheus, digits):
    """After traffic to every tier, each answer labelled by feedback (and one refused
    request), every recording rule and every dashboard query returns at least one series,
    and the tiergate series carry Serve's labels."""
    body, labels = {"inputs": digits.test.x[:2].tolist()}, digits.test.y[:2].tolist()
    with httpx.Client(base_url=gateway, timeout=30) as client:
        tiers = list(client.get("/v1/tiers").json())
        deadline = time.monotonic() + 15  # several scrapes, so rate() has two samples per series
        while time.monotonic() < deadline:
            for tier in tiers:
                answer = client.post("/v1/predict", json={**body, "tier": tier})
                assert answer.status_code == 200
                label = {"request_id": answer.json()["request_id"], "label": labels}
                assert client.post("/v1/feedback", json=label).json()["accepted"] == 1
            assert client.post("/v1/predict", json={**body, "variant": "int8"}).status_code == 200
            refused = client.post("/v1/predict", json={**body, "slo": {"min_accuracy": 1.0}})
            assert refused.status_code == 422 and refused.json()["reason"] == "rejected"
            time.sleep(0.2)

    series = _wait(
        lambda: query(prometheus, 'ray_tiergate_requests_total{code="200"}'), 60, "tiergate series"
    )
    assert {"application", "deployment", "replica", "tier", "variant"} <= set(series[0]["metric"])
    assert query(prometheus, "ray_serve_deployment_request_counter_total"), "Ray Serve's own are exported"
    bounds = {s["metric"]["le"] for s in query(prometheus, "ray_tiergate_request_latency_ms_bucket")}
    for tier in query(prometheus, "ray_tiergate_tier_max_latency_ms"):
        assert any(float(le) == float(tier["value"][1]) for le in bounds if le != "+Inf")

    labelled = _wait(lambda: query(prometheus, "ray_tiergate_feedback_labelled_total"), 30, "feedback series")
    assert {"tier", "variant", "bound"} <= set(labelled[0]["metric"])
    assert {s["metric"]["tier"] for s in query(prometheus, "ray_tiergate_tier_accuracy_objective")} == set(
        tiers
    )
    empty = []
    for expr in [*_recording_rules(), *dashboard_queries(DASHBOARD)]:
        if not _wait_for_data(prometheus, expr):
            empty.append(expr)
    assert not empty, "queries without data:\n" + "\n".join(empty)


def _wait_for_data(prometheus: str, expr: str, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if query(prometheus, expr):
            return True
        time.sleep(1)
    return False
