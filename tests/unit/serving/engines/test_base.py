"""Notifier: how engines built before the gateway tell it of changes."""

from __future__ import annotations

from tiergate.serving.engines import Notifier


def test_a_notifier_calls_every_subscriber_in_order():
    """A Notifier given to engines at construction calls what subscribed later, in order."""
    changes, calls = Notifier(), []
    changes()  # nobody subscribed yet: nothing happens
    changes.subscribe(lambda: calls.append("gateway"))
    changes.subscribe(lambda: calls.append("metrics"))
    changes()
    assert calls == ["gateway", "metrics"]
