"""deploy/prometheus: the configs and rules pass promtool, the rules' unit tests pass, and
the rules only use series the gateway exports."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.unit.deploy.dashboard import EXPORTED_METRICS, PROMETHEUS, RULES, metric_names, recording_rules

CONFIGS = sorted(PROMETHEUS.glob("prometheus*.yml"))
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
TARGETS = {  # config file -> where it scrapes Ray's metrics endpoint
    "prometheus.yml": ["127.0.0.1:8080"],
    "prometheus-compose.yml": ["gateway:8080"],
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool in deploy/prometheus, or skip when it is not installed."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def rules() -> list[dict]:
    """Every rule of rules.yml, recording and alerting."""
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_promtool_checks_config(config):
    """promtool accepts the config, including the rules file it loads."""
    result = promtool("check", "config", config.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_scrapes_ray_every_5s_with_the_rules(config):
    """Each config loads rules.yml and scrapes job ray every 5s at its documented target."""
    raw = yaml.safe_load(config.read_text())
    assert raw["rule_files"] == ["rules.yml"]
    assert raw["global"]["scrape_interval"] == "5s"
    (job,) = raw["scrape_configs"]
    assert job["job_name"] == "ray"
    if config.name in TARGETS:
        assert job["static_configs"] == [{"targets": TARGETS[config.name]}]
    else:
        assert job["file_sd_configs"] == [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"]}]


def test_three_configs_exist():
    """Single node, cluster (file_sd) and compose configs are all there."""
    assert [path.name for path in CONFIGS] == [
        "prometheus-cluster.yml",
        "prometheus-compose.yml",
        "prometheus.yml",
    ]


def test_promtool_checks_rules():
    """promtool accepts rules.yml."""
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    """rules_test.yml passes: fast burns page, slow burns ticket, in-budget traffic is quiet,
    for the latency SLO and for accuracy (from offline figures and from labels)."""
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_use_only_exported_or_recorded_series():
    """Every series name in a rule expression is in the metrics contract or recorded here."""
    known = EXPORTED_METRICS | recording_rules()
    unknown = {name for rule in rules() for name in metric_names(rule["expr"])} - known
    assert not unknown


def test_every_window_has_error_ratio_sli_and_burn_rate():
    """Each SLO window records the error ratio, the SLI and the burn rate under one naming scheme."""
    recorded = recording_rules()
    for window in WINDOWS:
        for family in (
            "tiergate:slo_errors:ratio_rate",
            "tiergate:sli:ratio_rate",
            "tiergate:slo_burn_rate:ratio_rate",
        ):
            assert f"{family}{window}" in recorded
    assert {"tiergate:slo_target", "tiergate:slo_budget_remaining:ratio_rate3d"} <= recorded


def test_every_window_has_the_accuracy_slis_burn_rates_and_live_accuracy():
    """Each SLO window records the effective accuracy (offline-weighted and from labels), its
    errors and burn rate per tier, and each variant's live accuracy with its Wilson interval."""
    recorded = recording_rules()
    for window in WINDOWS:
        for family in (
            "tiergate:effective_accuracy:ratio_rate", "tiergate:accuracy_errors:ratio_rate",
            "tiergate:accuracy_burn_rate:ratio_rate", "tiergate:live_effective_accuracy:ratio_rate",
            "tiergate:live_accuracy_errors:ratio_rate", "tiergate:live_accuracy_burn_rate:ratio_rate",
            "tiergate:feedback_labelled:increase", "tiergate:variant_live_accuracy:ratio_rate",
            "tiergate:variant_live_labelled:increase", "tiergate:variant_live_accuracy:wilson_lower_rate",
            "tiergate:variant_live_accuracy:wilson_upper_rate",
        ):  # fmt: skip
            assert f"{family}{window}" in recorded
    assert {
        "tiergate:accuracy_objective", "tiergate:accuracy_floor", "tiergate:variant_offline_accuracy",
        "tiergate:accuracy_budget_remaining:ratio_rate3d",
    } <= recorded  # fmt: skip


@pytest.mark.parametrize("prefix", ["TiergateSLO", "TiergateAccuracy", "TiergateLiveAccuracy"])
def test_alerts_are_page_and_ticket_and_name_the_tier(prefix):
    """Each family of burn-rate alerts (latency SLO, accuracy from offline figures, accuracy
    from labels) is one page and one ticket alert, annotated with the tier."""
    alerts = {
        rule["alert"]: rule
        for rule in rules()
        if rule.get("alert", "").startswith(prefix) and rule["alert"].endswith("Burn")
    }
    assert {name: rule["labels"]["severity"] for name, rule in alerts.items()} == {
        f"{prefix}PageBurn": "page",
        f"{prefix}TicketBurn": "ticket",
    }
    for rule in alerts.values():
        assert "{{ $labels.tier }}" in rule["annotations"]["summary"]
        assert "{{ $labels.tier }}" in rule["annotations"]["description"]
        assert "on (tier)" in rule["expr"]
