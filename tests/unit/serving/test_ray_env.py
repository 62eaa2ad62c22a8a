"""The Ray feature flags ``tiergate serve`` sets before Ray starts: explicit config settings
win over the environment, inherited values are kept where the config leaves them open, and
where each value came from is reported (pure logic on os.environ, restored after each test)."""

from __future__ import annotations

import logging
import os

import pytest

from tiergate.serving.config import ServingConfig
from tiergate.serving.ray_env import (
    HAPROXY_WRAPPER,
    RAY_FLAGS,
    prepare_ray_environment,
    prepare_ray_token,
    ray_flag_sources,
    ray_flags,
)

HAPROXY = {
    "RAY_AUTH_MODE": "token",
    "RAY_EXPORT_COUNTER_AS_GAUGE": "0",
    "RAY_worker_niceness": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": "5",
    "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER),
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "tiergate.serving.frontdoor:middlewares",
    "TIERGATE_HAPROXY_SERVER_MAXCONN": "32",
    "TIERGATE_HAPROXY_QUEUE_MS": "500",
}


@pytest.fixture
def clean_environment(monkeypatch):
    """None of the flags set; whatever a test sets is undone after it."""
    for name in [flag.name for flag in RAY_FLAGS] + ["TIERGATE_HAPROXY_BINARY"]:
        monkeypatch.setenv(name, "")  # so that monkeypatch removes what the test sets afterwards
        monkeypatch.delenv(name)


def installed(path: str) -> bool:
    """Every program the flags name counts as installed (tiergate-haproxy, whether or not pip put it here)."""
    return True


def test_the_table_yields_every_flag_for_each_ingress():
    """HAProxy ingress: all twelve flags; the proxy ingress: no HAProxy flag, HAProxy off, the
    front door (which checks request ids) in the proxy, and token authentication with either."""
    assert ray_flags(ServingConfig()) == HAPROXY
    assert ray_flags(ServingConfig(ray={"ingress": "proxy"})) == {
        "RAY_AUTH_MODE": "token",
        "RAY_EXPORT_COUNTER_AS_GAUGE": "0",
        "RAY_worker_niceness": "0",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "tiergate.serving.frontdoor:middlewares",
    }


@pytest.mark.parametrize(("ingress_metrics", "expected"), [(False, "0"), (True, "1")])
def test_haproxy_metrics_follow_serving_ray_ingress_metrics(clean_environment, ingress_metrics, expected):
    """In HAProxy mode, Ray's per-request HAProxy metrics are on only with ingress_metrics."""
    sources = prepare_ray_environment(ServingConfig(ray={"ingress_metrics": ingress_metrics}), installed)
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
    sources = prepare_ray_environment(
        ServingConfig(ray={"ingress": "haproxy", "ingress_metrics": False}), installed
    )
    assert os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    assert sources["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == ("0", "config: serving.ray.ingress_metrics")


def test_a_variable_the_config_leaves_open_is_kept_and_logged_once(clean_environment, monkeypatch, caplog):
    """An inherited value for a flag the config does not decide (tiergate's own choice, or a
    field left at its default) is kept, reported as environment and logged in one line."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S", "30")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")
    monkeypatch.setenv("RAY_EXPORT_COUNTER_AS_GAUGE", "0")  # agrees with tiergate: not inherited
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig(), installed)
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


def test_an_inherited_variable_cannot_turn_ray_token_auth_off(clean_environment, monkeypatch, caplog):
    """RAY_AUTH_MODE=disabled left in the environment is overridden with token, reported as
    required by tiergate and warned about, unlike other flags the config leaves open."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig(), installed)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert sources["RAY_AUTH_MODE"] == ("token", "tiergate: required")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "RAY_AUTH_MODE=disabled" in record.getMessage()


def test_haproxy_ingress_runs_haproxy_through_the_loopback_wrapper(clean_environment, caplog):
    """HAProxy ingress: Ray's HAProxy binary is tiergate-haproxy (tiergate's choice), which runs
    the binary Ray would have run (no TIERGATE_HAPROXY_BINARY), and nothing is logged."""
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig(), installed)
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WRAPPER)
    assert sources["RAY_SERVE_HAPROXY_BINARY_PATH"] == (str(HAPROXY_WRAPPER), "tiergate")
    assert "TIERGATE_HAPROXY_BINARY" not in os.environ and "TIERGATE_HAPROXY_BINARY" not in sources
    assert caplog.records == []


def test_an_inherited_haproxy_binary_is_run_by_the_wrapper(clean_environment, monkeypatch, caplog):
    """A user's own RAY_SERVE_HAPROXY_BINARY_PATH is handed on to the wrapper in
    TIERGATE_HAPROXY_BINARY (so it is still what runs, with the side ports on loopback),
    reported as from the environment and logged."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/opt/haproxy/sbin/haproxy")
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig(), installed)
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WRAPPER)
    assert os.environ["TIERGATE_HAPROXY_BINARY"] == "/opt/haproxy/sbin/haproxy"
    assert sources["TIERGATE_HAPROXY_BINARY"] == (
        "/opt/haproxy/sbin/haproxy",
        "environment: RAY_SERVE_HAPROXY_BINARY_PATH",
    )
    (record,) = caplog.records
    assert "TIERGATE_HAPROXY_BINARY=/opt/haproxy/sbin/haproxy" in record.getMessage()


def test_the_wrapper_inherited_is_not_handed_to_itself(clean_environment, monkeypatch):
    """RAY_SERVE_HAPROXY_BINARY_PATH already naming the wrapper (an earlier `tiergate ray-env`)
    is not taken for the user's own binary: the wrapper would exec itself."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(HAPROXY_WRAPPER))
    sources = prepare_ray_environment(ServingConfig(), installed)
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WRAPPER)
    assert "TIERGATE_HAPROXY_BINARY" not in os.environ and "TIERGATE_HAPROXY_BINARY" not in sources


def test_without_the_wrapper_ray_runs_its_own_haproxy_and_a_warning_says_so(clean_environment, caplog):
    """tiergate-haproxy not installed: RAY_SERVE_HAPROXY_BINARY_PATH is left unset (pointing
    Ray at a missing program would stop HAProxy from starting) and a warning names both."""
    with caplog.at_level(logging.INFO, logger="tiergate.serving.ray_env"):
        sources = prepare_ray_environment(ServingConfig(), installed=lambda path: False)
    assert (
        "RAY_SERVE_HAPROXY_BINARY_PATH" not in os.environ and "RAY_SERVE_HAPROXY_BINARY_PATH" not in sources
    )
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert (
        "RAY_SERVE_HAPROXY_BINARY_PATH" in record.getMessage() and str(HAPROXY_WRAPPER) in record.getMessage()
    )


def test_a_local_cluster_gets_a_fresh_random_token_when_none_is_given(tmp_path):
    """No token in the environment or Ray's default file: a 256-bit random one is put in the
    environment, different each start, and what is returned names no token."""
    first, second = {}, {}
    assert prepare_ray_token(first, home=tmp_path) == "a random one for this start"
    prepare_ray_token(second, home=tmp_path)
    assert len(first["RAY_AUTH_TOKEN"]) == 64 and int(first["RAY_AUTH_TOKEN"], 16)
    assert first["RAY_AUTH_TOKEN"] != second["RAY_AUTH_TOKEN"]
    assert not (tmp_path / ".ray").exists()


@pytest.mark.parametrize(
    ("environ", "default_file", "source"),
    [
        ({"RAY_AUTH_TOKEN": "given"}, False, "$RAY_AUTH_TOKEN"),
        ({"RAY_AUTH_TOKEN_PATH": "/run/token"}, False, "$RAY_AUTH_TOKEN_PATH (/run/token)"),
        ({}, True, "default"),
    ],
)
def test_a_given_token_is_kept(tmp_path, environ, default_file, source):
    """A token in $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token is used as it is:
    the environment is left unchanged and the source is named."""
    if default_file:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
        source = str(tmp_path / ".ray" / "auth_token")
    before = dict(environ)
    assert prepare_ray_token(environ, home=tmp_path) == source
    assert environ == before
