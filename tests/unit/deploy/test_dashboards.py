"""deploy/grafana: the dashboard is well-formed, uses the provisioned data source, refers only
to series that exist, and every query returns data for a healthy gateway's series."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.unit.deploy.dashboard import (
    DASHBOARD,
    EXPORTED_METRICS,
    ROOT,
    RULES,
    all_panels,
    dashboard_queries,
    load_dashboard,
    metric_names,
    recording_rules,
)

GRAFANA = ROOT / "deploy" / "grafana"
DS_VARIABLE = "${DS_PROMETHEUS}"
# series with a tier label: a dashboard query on them must honour the tier selector
TIER_SERIES = re.compile(
    r"(ray_tiergate_(?:requests_total|request_latency_ms_\w+|slo_requests_total|routing_decisions_total|"
    r"tier_\w+|in_bound_accuracy_total|feedback_(?:labelled|correct)_total)"
    r"|tiergate:(?!variant_(?:live|offline|shadow)_)[\w:]+)(\{[^}]*\})?"  # variant_*: by variant only
)

# A healthy gateway after a few minutes of traffic, as scraped (Ray's labels included): two
# tiers, two variants, every request served and within its SLO, so no outcome="missed" and
# no error codes exist, and labels fed back for some answers. One sample every 15s for 10 minutes.
RAY = 'application="tiergate", deployment="Gateway", replica="r1"'
FAST, BALANCED = 'tier="fast", variant="int8"', 'tier="balanced", variant="fp32"'


def series(name: str, labels: str = "") -> str:
    """A series as Ray's endpoint exports it: ``labels`` plus application/deployment/replica."""
    return f"{name}{{{labels + ', ' if labels else ''}{RAY}}}"


HEALTHY = {
    series("ray_tiergate_requests_total", f'{FAST}, code="200"'): "0+30x40",
    series("ray_tiergate_requests_total", f'{BALANCED}, code="200"'): "0+20x40",
    series("ray_tiergate_slo_requests_total", 'tier="fast", outcome="met"'): "0+30x40",
    series("ray_tiergate_slo_requests_total", 'tier="balanced", outcome="met"'): "0+20x40",
    series("ray_tiergate_routing_decisions_total", f'{FAST}, reason="best"'): "0+30x40",
    series("ray_tiergate_routing_decisions_total", f'{BALANCED}, reason="best"'): "0+20x40",
    series("ray_tiergate_request_latency_ms_bucket", f'{FAST}, le="5.0"'): "0+30x40",
    series("ray_tiergate_request_latency_ms_bucket", f'{FAST}, le="+Inf"'): "0+30x40",
    series("ray_tiergate_request_latency_ms_bucket", f'{BALANCED}, le="15.0"'): "0+20x40",
    series("ray_tiergate_request_latency_ms_bucket", f'{BALANCED}, le="+Inf"'): "0+20x40",
    series("ray_tiergate_batch_size_bucket", 'variant="int8", le="1.0"'): "0+10x40",
    series("ray_tiergate_batch_size_bucket", 'variant="int8", le="+Inf"'): "0+12x40",
    series("ray_tiergate_tier_slo_target", 'tier="fast"'): "0.99+0x40",
    series("ray_tiergate_tier_slo_target", 'tier="balanced"'): "0.99+0x40",
    series("ray_tiergate_tier_max_latency_ms", 'tier="fast"'): "5+0x40",
    series("ray_tiergate_tier_max_latency_ms", 'tier="balanced"'): "15+0x40",
    series("ray_tiergate_tier_accuracy_objective", 'tier="fast"'): "0.889+0x40",
    series("ray_tiergate_tier_accuracy_objective", 'tier="balanced"'): "0.909+0x40",
    series("ray_tiergate_tier_accuracy_floor", 'tier="fast"'): "0.898+0x40",
    series("ray_tiergate_tier_accuracy_floor", 'tier="balanced"'): "0.918+0x40",
    series("ray_tiergate_in_bound_accuracy_total", FAST): "0+27.6x40",
    series("ray_tiergate_in_bound_accuracy_total", BALANCED): "0+18.6x40",
    # labels fed back for some answers: right or wrong, all in bound (no bound="missed")
    series("ray_tiergate_feedback_labelled_total", f'{FAST}, bound="met"'): "0+10x40",
    series("ray_tiergate_feedback_correct_total", f'{FAST}, bound="met"'): "0+9x40",
    series("ray_tiergate_feedback_labelled_total", f'{BALANCED}, bound="met"'): "0+5x40",
    series("ray_tiergate_feedback_correct_total", f'{BALANCED}, bound="met"'): "0+5x40",
    series("ray_tiergate_feedback_items_total", 'outcome="accepted"'): "0+15x40",
    # shadow sampling: 2% of int8's answers run again on fp32, all agreeing; nothing demoted
    series("ray_tiergate_shadow_requests_total", 'variant="int8", outcome="shadowed"'): "0+1x40",
    series("ray_tiergate_shadow_requests_total", 'variant="int8", outcome="not_sampled"'): "0+49x40",
    series("ray_tiergate_shadow_compared_total", 'variant="int8"'): "0+1x40",
    series("ray_tiergate_shadow_agreed_total", 'variant="int8"'): "0+1x40",
    series("ray_tiergate_variant_state", 'variant="int8", state="demoted"'): "0+0x40",
    **{
        series(gauge, f'variant="{variant}"'): "1+0x40"
        for gauge in EXPORTED_METRICS
        if gauge.startswith("ray_tiergate_variant_") and gauge != "ray_tiergate_variant_state"
        for variant in ("int8", "fp32")
    },
    'ray_serve_num_http_requests_total{route="/", application="tiergate", status_code="200"}': "0+50x40",
    'ray_serve_num_ongoing_http_requests{node_id="n1", node_ip_address="10.0.0.1"}': "0+0x40",
    series("ray_serve_deployment_request_counter_total", 'route="/"'): "0+50x40",
    series("ray_serve_deployment_processing_latency_ms_bucket", 'route="/", le="10.0"'): "0+50x40",
    series("ray_serve_deployment_processing_latency_ms_bucket", 'route="/", le="+Inf"'): "0+50x40",
    series("ray_serve_replica_processing_queries"): "0+0x40",
    series("ray_serve_deployment_replica_healthy"): "1+0x40",
    'ray_serve_deployment_queued_queries{deployment="Gateway", application="tiergate"}': "0+0x40",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    """The dashboard JSON, parsed once."""
    return load_dashboard()


def targets(dashboard: dict) -> list[dict]:
    return [target for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def variable(dashboard: dict, name: str) -> dict:
    (found,) = [var for var in dashboard["templating"]["list"] if var["name"] == name]
    return found


def test_dashboard_identity(dashboard):
    """The dashboard has a fixed uid, a title and a Grafana 10/11 schema version."""
    assert dashboard["uid"] == "tiergate-slo"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41


def test_panels_have_unique_ids_and_grid_positions(dashboard):
    """Every panel has its own id and a gridPos that fits Grafana's 24-column grid."""
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) and len(panels) > 10
    for panel in panels:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]


def test_every_target_has_expr_and_unique_ref_id(dashboard):
    """Each non-row panel has targets, each with a PromQL expr and a refId unique in its panel."""
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_data_source_is_the_provisioned_prometheus(dashboard):
    """Panels and targets use the DS_PROMETHEUS variable, which defaults to the provisioned uid."""
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    ds = variable(dashboard, "DS_PROMETHEUS")
    assert ds["type"] == "datasource" and ds["query"] == source["type"]
    assert ds["current"]["value"] == source["uid"]
    for item in [*all_panels(dashboard), *targets(dashboard)]:
        if "datasource" in item:
            assert item["datasource"] == {"type": "prometheus", "uid": DS_VARIABLE}, item.get("title")


def test_dashboards_provider_reads_the_mounted_folder():
    """The file provider reads /var/lib/grafana/dashboards, where compose mounts the JSON."""
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tiergate.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose["services"]["grafana"]["volumes"]


def test_tier_and_variant_variables(dashboard):
    """tier lists the tiers with SLO traffic, variant the menu; both allow All as '.*'."""
    tier, menu = variable(dashboard, "tier"), variable(dashboard, "variant")
    assert tier["definition"] == "label_values(ray_tiergate_slo_requests_total, tier)"
    assert menu["definition"] == "label_values(ray_tiergate_variant_accuracy, variant)"
    for var in (tier, menu):
        assert var["query"]["query"] == var["definition"]
        assert var["includeAll"] and var["allValue"] == ".*"


def test_tier_series_are_filtered_by_the_tier_variable(dashboard):
    """Every selector on a series with a tier label carries tier=~"$tier"."""
    for target in targets(dashboard):
        for name, matchers in TIER_SERIES.findall(target["expr"]):
            assert 'tier=~"$tier"' in matchers, f"{name} in {target['expr']}"


def test_dashboard_refers_only_to_known_series(dashboard):
    """Every series named in a query or variable is in the metrics contract or recorded in rules.yml."""
    known = EXPORTED_METRICS | recording_rules()
    exprs = [target["expr"] for target in targets(dashboard)]
    exprs += [var["definition"] for var in dashboard["templating"]["list"] if var["type"] == "query"]
    unknown = {name for expr in exprs for name in metric_names(expr)} - known
    assert not unknown
    assert any(name.startswith("tiergate:") for expr in exprs for name in metric_names(expr))


def test_dashboard_queries_fill_in_every_variable(dashboard):
    """dashboard_queries returns one plain PromQL query per target, with no Grafana variable left."""
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) == len(targets(dashboard))
    assert not [query for query in queries if "$" in query]
    assert any('tier=~".*"' in query and "[1m]" in query for query in queries)


def test_every_query_and_recorded_series_has_data_for_a_healthy_gateway(tmp_path):
    """Under promtool, with rules.yml loaded and only healthy traffic (no misses, no errors),
    every dashboard query and every recording rule returns at least one series."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    queries = [*dashboard_queries(DASHBOARD), *sorted(recording_rules())]
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": series, "values": values} for series, values in HEALTHY.items()],
                "promql_expr_test": [
                    {
                        "expr": f"count({query}) > bool 0",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for query in queries
                ],
            }
        ],
    }
    (tmp_path / "queries_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", "queries_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _panel_exprs(dashboard: dict, title: str) -> str:
    (panel,) = [panel for panel in all_panels(dashboard) if panel["title"] == title]
    return "\n".join(target["expr"] for target in panel["targets"])


def test_accuracy_panels_set_each_sli_against_its_target(dashboard):
    """Per tier, effective accuracy (offline-weighted and from labels) is drawn against the
    tier's objective and floor; per variant, live accuracy with both Wilson bounds against
    the offline figure."""
    tiers = _panel_exprs(dashboard, "Effective accuracy vs objective")
    for series in ("tiergate:effective_accuracy:", "tiergate:live_effective_accuracy:",
                   "tiergate:accuracy_objective{", "tiergate:accuracy_floor{"):  # fmt: skip
        assert series in tiers
    variants = _panel_exprs(dashboard, "Live accuracy by variant")
    for series in ("tiergate:variant_live_accuracy:ratio_rate", "wilson_lower_rate", "wilson_upper_rate",
                   "tiergate:variant_offline_accuracy{"):  # fmt: skip
        assert series in variants


def test_shadow_panel_sets_live_fidelity_against_the_offline_interval(dashboard):
    """Per variant, live fidelity from shadow runs with both Wilson bounds, against the
    offline fidelity and the lower bound the alert compares with."""
    variants = _panel_exprs(dashboard, "Live fidelity by variant (shadow)")
    for series in ("tiergate:variant_shadow_fidelity:ratio_rate", "variant_shadow_fidelity:wilson_lower_rate",
                   "variant_shadow_fidelity:wilson_upper_rate", "tiergate:variant_offline_fidelity{",
                   "tiergate:variant_offline_fidelity_low{"):  # fmt: skip
        assert series in variants
    assert "tiergate:variant_shadow_sampled:ratio_rate1h" in _panel_exprs(dashboard, "Shadow sampling")
