"""/v1/admin/*: operations on this replica (each replica answers for itself).

add_admin_routes(app, access)
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from tiergate.serving.http.access import Access
from tiergate.serving.schemas import error_responses as errors


def add_admin_routes(app: FastAPI, access: Access) -> None:
    @app.post("/v1/admin/reprofile", responses=errors(401, 403, 408, 413, 429, 503))
    async def reprofile(request: Request):
        """Time every variant again on this replica, as it runs now, and route on that: one at
        a time and at most once per serving.admission.reprofile_min_interval_s (429), and only
        while the replica is quiet (503 and the old profile stays; Retry-After on both)."""
        # admission admitted this call (RequestContext or FrontDoor): it is one of those in flight
        timings = await access.admin(request).reprofile(own_in_flight=1)
        return {"variants": {name: {str(b): ms for b, ms in p95.items()} for name, p95 in timings.items()}}

    @app.post("/v1/admin/reload-keys", responses=errors(401, 403, 408, 409, 413, 503))
    async def reload_keys(request: Request):
        """Read the API keys again (rotation without a restart); rate-limit buckets carry over."""
        return {"keys": access.admin(request).reload_keys()}
