"""The Ray feature flags ``tiergate serve`` sets before Ray starts: explicit config settings
win over the environment, inherited values are kept where the config leaves them open, and
where each value came from is reported (pure logic on os.environ, restored after each test)."""

from __future__ import annotations

import logging
import os

import pytest

from tiergate.serving.config import ServingConfig
from tiergate.serving.ray_env import RAY_FLAGS, prepare_ray_environment, ray_flag_sources, ray_flags

HAPROXY = {
    "RAY_EXPORT_COUNTER_AS_GAUGE": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": "5",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "tiergate.serving.frontdoor:middlewares",
}


@pytest.fixture
def clean_environment(monkeypatch):
    """None of the flags set; whatever a test sets is undone after it."""
    for flag in RAY_FLAGS:
        monkeypatch.delenv(flag.name, raising=False)


def test_the_table_yields_every_flag_for_each_ingress():
    """HAProxy ingress: all seven flags; the proxy ingress: no HAProxy flag, HAProxy off, and the
    front door (which checks request ids) in the proxy."""
    assert ray_flags(ServingConfig()) == HAPROXY
    assert ray_flags(ServingConfig(ray={"ingress": "proxy"})) == {
        "RAY_EXPORT_COUNTER_AS_GAUGE": "0",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "tiergate.serving.frontdoor:middlewares",
    }


@pytest.mark.parametrize(("ingress_metrics", "expected"), [(False, "0"), (True, "1")])
def test_haproxy_metrics_follow_serving_ray_ingress_metrics(clean_environment, ingress_metrics, expected):
    """In HAProxy mode, Ray's per-request HAProxy metrics are on only with ingress_metrics."""
    sources = prepare_ray_environment(ServingConfig(ray={"ingress_metrics": ingress_metrics}))
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == expected
    assert sources["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == (expected, "config: serving.ray.ingress_metrics")
    assert sources["RAY_SERVE_ENABLE_HA_PROXY"] == ("1", "default: serving.ray.ingress")


def test_a_stale_variable_loses_to_an_explicit_setting(clean_environment, monkeypatch, caplog):
    """A variable left in the shell that contradicts what the config sets is overridden,
    and the provenance says the config; nothing is reported as inherited."""
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig(ray={"ingress": "proxy"}))
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert sources["RAY_SERVE_ENABLE_HA_PROXY"] == ("0", "config: serving.ray.ingress")
    # the proxy ingress leaves the HAProxy flags alone: not tiergate's to set or report
    assert "RAY_SERVE_HAPROXY_METRICS_ENABLED" not in sources
    assert caplog.records == []

    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")
    sources = prepare_ray_environment(ServingConfig(ray={"ingress": "haproxy", "ingress_metrics": False}))
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    assert sources["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == ("0", "config: serving.ray.ingress_metrics")


def test_a_variable_the_config_leaves_open_is_kept_and_logged_once(clean_environment, monkeypatch, caplog):
    """An inherited value for a flag the config does not decide (tiergate's own choice, or a
    field left at its default) is kept, reported as environment and logged in one line."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S", "30")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")
    monkeypatch.setenv("RAY_EXPORT_COUNTER_AS_GAUGE", "0")  # agrees with tiergate: not inherited
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig())
    assert os.environ["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"] == "30"
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1"
    assert sources["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"] == ("30", "environment")
    assert sources["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == ("1", "environment")
    assert sources["RAY_EXPORT_COUNTER_AS_GAUGE"] == ("0", "tiergate")
    assert sources["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == ("2", "tiergate")
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S=30 (from the environment)" in record.getMessage()
    assert "RAY_SERVE_HAPROXY_METRICS_ENABLED=1 (from the environment)" in record.getMessage()
    assert "RAY_EXPORT_COUNTER_AS_GAUGE" not in record.getMessage()


def test_sources_are_read_without_touching_the_environment(clean_environment):
    """ray_flag_sources only reads: what `tiergate serve` prints before it starts Ray."""
    environ = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    sources = ray_flag_sources(ServingConfig(), environ)
    assert sources["RAY_SERVE_ENABLE_HA_PROXY"] == ("0", "environment")
    assert not any(flag.name in os.environ for flag in RAY_FLAGS)
