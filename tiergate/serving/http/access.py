"""Who may do what, and whether the replica can answer yet: the checks every route runs
before its own work.

    access = Access(replica)
    gateway = access.ready()                              # Unavailable (503) until fp32 serves
    routing = access.admit(request, {"tier": ..., "variant": ...})  # API keys, when on
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from tiergate.serving.errors import Unavailable
from tiergate.serving.gateway import Gateway
from tiergate.serving.replica import Replica

log = logging.getLogger(__name__)


class Access:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def ready(self) -> Gateway:
        if not self.replica.registry.ready():
            raise Unavailable("not ready: variants are still being built or profiled", retry_after_s=5)
        return self.replica.gateway

    def admit(self, request: Request, routing: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """With API keys on: Unauthenticated without a valid key; for a routed request
        (``routing`` has tier/variant), Forbidden outside the key's tiers and RateLimited
        over its rate. Returns the routing with the tier the key runs under."""
        ring = self.replica.keys
        if ring is None:
            return routing
        grant = ring.authenticate(request.headers.get("authorization"))
        if routing is None:
            return None
        tier = grant.allow(routing.get("tier"), routing.get("variant"), self.ready().default_tier)
        grant.take()
        return {**routing, "tier": tier}

    def admin(self, request: Request) -> Replica:
        """With API keys on, only an admin key passes; with them off, anyone who can reach
        the port (keep it on 127.0.0.1, or turn keys on)."""
        ring = self.replica.keys
        if ring is not None:
            grant = ring.authenticate_admin(request.headers.get("authorization"))
            log.info("admin %s by key %s", request.url.path, grant.name)
        self.ready()
        return self.replica
