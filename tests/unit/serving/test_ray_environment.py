"""The Ray feature flags ``tiergate serve`` sets before Ray starts (pure logic on os.environ)."""

from __future__ import annotations

import os

import pytest

from tiergate.settings import prepare_ray_environment

FLAGS = (
    "RAY_EXPORT_COUNTER_AS_GAUGE",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD",
    "RAY_SERVE_ENABLE_HA_PROXY",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH",
)


@pytest.fixture
def clean_environment(monkeypatch):
    for flag in FLAGS:
        monkeypatch.delenv(flag, raising=False)  # restored after the test


@pytest.mark.parametrize(("ingress_metrics", "expected"), [(False, "0"), (True, "1")])
def test_haproxy_metrics_follow_serving_ingress_metrics(clean_environment, ingress_metrics, expected):
    """In HAProxy mode, Ray's per-request HAProxy metrics are on only with ingress_metrics."""
    prepare_ray_environment("haproxy", ingress_metrics)
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == expected


def test_an_operator_setting_wins_and_proxy_mode_sets_no_haproxy_flags(clean_environment, monkeypatch):
    """A flag already in the environment is kept; the proxy ingress sets no HAProxy flag."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")
    prepare_ray_environment("haproxy", ingress_metrics=False)
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1"
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY")
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_ENABLED")
    prepare_ray_environment("proxy")
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ
    assert "RAY_SERVE_HAPROXY_METRICS_ENABLED" not in os.environ
