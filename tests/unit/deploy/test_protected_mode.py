"""Protected mode: the serving config refuses a host reachable from other machines while API
keys are off, unless serving.http.allow_unauthenticated_remote says so on purpose; the
opt-out is logged loudly when Ray starts."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from tiergate.runtime import warn_if_unprotected
from tiergate.serving.config import ServingConfig, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    """127.0.0.0/8, ::1 and localhost are loopback."""
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.0.2.2", "gateway.example", ""])
def test_other_hosts_are_not_loopback(host):
    """Any other address or name (wildcards, LAN addresses, hostnames) counts as remote."""
    assert not is_loopback(host)


def test_a_remote_host_without_keys_is_refused_with_the_way_out():
    """0.0.0.0 with keys off fails validation; the message names the host, how to turn keys
    on and the opt-out setting."""
    with pytest.raises(ValidationError) as raised:
        ServingConfig(http={"host": "0.0.0.0"})
    message = str(raised.value)
    for needle in ("'0.0.0.0'", "serving.auth.enabled: true", "serving.auth.keys_file", "$TIERGATE_API_KEYS",
                   "serving.http.allow_unauthenticated_remote: true"):  # fmt: skip
        assert needle in message


@pytest.mark.parametrize(
    "serving",
    [
        {"http": {"host": "127.0.0.1"}},
        {"http": {"host": "0.0.0.0"}, "auth": {"enabled": True}},
        {"http": {"host": "0.0.0.0", "allow_unauthenticated_remote": True}},
    ],
    ids=["loopback", "keys-on", "opted-out"],
)
def test_loopback_keys_or_the_opt_out_are_accepted(serving):
    """Loopback without keys, any host with keys, and a remote host with the explicit opt-out validate."""
    assert ServingConfig.model_validate(serving)


def test_the_opt_out_is_logged_as_a_warning_naming_the_setting(caplog):
    """An opted-out remote host without keys logs one WARNING naming the setting; a protected
    config logs nothing."""
    with caplog.at_level(logging.INFO, logger="tiergate.runtime"):
        warn_if_unprotected(ServingConfig(http={"host": "127.0.0.1"}))
        warn_if_unprotected(ServingConfig(http={"host": "0.0.0.0"}, auth={"enabled": True}))
        assert caplog.records == []
        warn_if_unprotected(ServingConfig(http={"host": "0.0.0.0", "allow_unauthenticated_remote": True}))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "serving.http.allow_unauthenticated_remote" in record.getMessage()
