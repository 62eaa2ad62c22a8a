"""What the deploy/ observability files share with their tests: the gateway's metrics
contract, and the Grafana dashboard's queries with its variables filled in.

    from tests.unit.deploy.dashboard import dashboard_queries
    for expr in dashboard_queries(DASHBOARD): ...  # plain PromQL, ready for /api/v1/query
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tiergate-slo.json"

# Grafana's variables, as a query against Prometheus sees them with "All" selected
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "5m",
    "$tier": ".*",
    "$variant": ".*",
}

# Series the gateway and Ray Serve export, as Prometheus names them (Ray adds "ray_")
EXPORTED_METRICS = frozenset(
    {
        "ray_tiergate_requests_total",
        "ray_tiergate_request_latency_ms_bucket",
        "ray_tiergate_request_latency_ms_sum",
        "ray_tiergate_request_latency_ms_count",
        "ray_tiergate_slo_requests_total",
        "ray_tiergate_routing_decisions_total",
        "ray_tiergate_variant_accuracy",
        "ray_tiergate_variant_fidelity",
        "ray_tiergate_variant_fidelity_low",
        "ray_tiergate_variant_routed_quality",
        "ray_tiergate_variant_state",
        "ray_tiergate_variant_p95_latency_ms",
        "ray_tiergate_variant_size_bytes",
        "ray_tiergate_variant_in_flight",
        "ray_tiergate_variant_build_seconds",
        "ray_tiergate_variant_cache_hit",
        "ray_tiergate_variant_profile_seconds",
        "ray_tiergate_batch_size_bucket",
        "ray_tiergate_tier_slo_target",
        "ray_tiergate_tier_max_latency_ms",
        "ray_tiergate_tier_accuracy_objective",
        "ray_tiergate_tier_accuracy_floor",
        "ray_tiergate_in_bound_accuracy_total",
        "ray_tiergate_feedback_labelled_total",
        "ray_tiergate_feedback_correct_total",
        "ray_tiergate_feedback_items_total",
        "ray_tiergate_shadow_requests_total",
        "ray_tiergate_shadow_compared_total",
        "ray_tiergate_shadow_agreed_total",
        "ray_tiergate_shadow_demotions_total",
        # Ray Serve 2.60's own, emitted for an HTTP application
        "ray_serve_num_http_requests_total",
        "ray_serve_num_ongoing_http_requests",
        "ray_serve_deployment_request_counter_total",
        "ray_serve_deployment_processing_latency_ms_bucket",
        "ray_serve_replica_processing_queries",
        "ray_serve_deployment_replica_healthy",
        "ray_serve_deployment_queued_queries",
    }
)

# recording rules have two colons (level:metric:operation)
METRIC_NAME = re.compile(r"ray_tiergate_\w+|tiergate:[\w:]+|ray_serve_\w+")


def load_dashboard(path: Path = DASHBOARD) -> dict:
    """The dashboard JSON as a dict."""
    return json.loads(Path(path).read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows and the panels inside collapsed rows included."""
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(all_panels(panel))
    return panels


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables, plain ($tier) or braced (${tier}), replaced."""
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace("${" + name[1:] + "}", SUBSTITUTIONS[name])
        expr = expr.replace(name, SUBSTITUTIONS[name])
    return expr


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    """Every target expression in the dashboard, variables substituted, in panel order."""
    return [
        substitute(target["expr"])
        for panel in all_panels(load_dashboard(path))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def recording_rules(path: Path = RULES) -> set[str]:
    """Names of the series that rules.yml records."""
    groups = yaml.safe_load(Path(path).read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """tiergate and Ray Serve series names that a PromQL expression refers to."""
    return set(METRIC_NAME.findall(expr))
