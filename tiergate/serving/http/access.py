"""Who may do what, and whether the replica can answer yet: the checks every route runs
before its own work.

    access = Access(replica)
    gateway = access.ready()                               # Unavailable (503) until fp32 serves
    target = access.admit(request, lambda default: Target.named(tier, variant, default))
    body = body.model_copy(update=target.routing())        # route exactly what was checked

With API keys on, a request's key is checked once: ``authenticate_scope`` (called by
``RequestContext`` before the body is read) answers 401 or leaves the key's grant in the
request's state, where ``Access.key`` finds it. Precedence: 401 (no valid key,
before the body is read) → 400/413/422 for a body that does not parse → 403 for a target
outside the key's tiers → 404/422 for names or values the gateway does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Request
from starlette.responses import Response

from tiergate.serving.auth import Grant, KeyRing, Target
from tiergate.serving.errors import Unauthenticated, Unavailable
from tiergate.serving.gateway import Gateway
from tiergate.serving.http.errors import answer
from tiergate.serving.replica import Replica

log = logging.getLogger(__name__)

GRANT = "grant"  # request.state: the key's grant, found before the body was read
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2", "/openapi.json", "/docs", "/redoc"})
OPEN_PREFIXES = ("/v2/health/", "/docs/")  # every other path needs a key when keys are on


def authenticate_scope(scope, keys: KeyRing | None) -> Response | None:
    """With API keys on, the 401 answer for a request without a valid key to any route but
    the probes and docs, given before its body is read or parsed; otherwise None, and the
    key's grant goes on in the scope's state."""
    if keys is None or _is_open(route_path(scope)):
        return None
    authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    try:
        scope.setdefault("state", {})[GRANT] = keys.authenticate(authorization or None)
    except Unauthenticated as error:
        return answer(error)
    return None


def route_path(scope) -> str:
    """The path as the app routes it: without the prefix it is mounted under (Serve's route_prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(f"{root}/") else path


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class Access:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def ready(self) -> Gateway:
        if not self.replica.registry.ready():
            raise Unavailable("not ready: variants are still being built or profiled", retry_after_s=5)
        return self.replica.gateway

    def key(self, request: Request) -> Grant | None:
        """With API keys on, the request's grant (Unauthenticated without a valid key): the one
        ``authenticate_scope`` found, else checked here. None with keys off."""
        ring = self.replica.keys
        if ring is None:
            return None
        grant = getattr(request.state, GRANT, None)
        return grant if grant is not None else ring.authenticate(request.headers.get("authorization"))

    def authorize(self, request: Request, resolve: Callable[[str], Target]) -> Target:
        """What the request reaches, checked: ``resolve`` builds the target given the tier a
        request that names none runs under (the key's, with keys on); Forbidden when the key
        may not reach it. The one authorization check of every route that names a target."""
        return self._checked(request, resolve)[1]

    def admit(self, request: Request, resolve: Callable[[str], Target]) -> Target:
        """``authorize``, then one request from the key's rate (RateLimited over it)."""
        grant, target = self._checked(request, resolve)
        if grant is not None:
            grant.take()
        return target

    def _checked(self, request: Request, resolve: Callable[[str], Target]) -> tuple[Grant | None, Target]:
        grant, default = self.key(request), self.ready().default_tier
        target = resolve(default if grant is None else grant.default_tier(default))
        if grant is not None:
            grant.authorize(target)
        return grant, target

    def admin(self, request: Request) -> Replica:
        """With API keys on, only an admin key passes (401 without a key, 403 for another);
        with them off, anyone who can reach the port (keep it on 127.0.0.1, or turn keys on)."""
        grant = self.key(request)
        if grant is not None:
            grant.check_admin()
            log.info("admin %s by key %s", request.url.path, grant.name)
        self.ready()
        return self.replica
