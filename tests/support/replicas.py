"""Helpers for serving tests that build a replica in-process (real ORT sessions, no Ray)."""

from __future__ import annotations

from tiergate.profiles.menu import Menu
from tiergate.serving.config import ServingConfig
from tiergate.serving.inputs import Preprocess
from tiergate.serving.replica import Replica, ReplicaSpec


def replica_for(menu: Menu, tiers, variants: list[str] | None = None, serving: ServingConfig | None = None):
    """A replica serving ``variants`` of ``menu`` (all of them by default)."""
    if variants is not None:
        menu = menu.model_copy(update={"variants": [e for e in menu.variants if e.name in variants]})
    spec = ReplicaSpec(serving=serving or ServingConfig(), tiers=tiers, preprocess=Preprocess(), menu=menu)
    return Replica.build(spec)
