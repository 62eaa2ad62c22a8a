"""The /v1 API and the health probes: predict, dry-run routing, the live catalog and tiers.

add_v1_routes(app, access)
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tiergate.serving import schemas
from tiergate.serving.auth import Target
from tiergate.serving.building import build_row, build_summary, require_complete
from tiergate.serving.http.access import Access
from tiergate.serving.http.bodies import json_body
from tiergate.serving.http.direct import DirectRoutes
from tiergate.serving.registry import Variant
from tiergate.serving.schemas import error_responses as errors

VARIANT_HEADER = "X-Tiergate-Variant"
RouteBody = TypeVar("RouteBody", bound=schemas.RouteRequest)


def add_v1_routes(app: FastAPI, access: Access, direct: DirectRoutes) -> None:
    """The /v1 routes and probes on ``app``; the hot one also on ``direct``."""
    registry = access.replica.registry

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", responses=errors(503))
    async def readyz():
        """200 once the reference variant serves; with serving.http.ready_when all, only once
        the whole menu is built and loaded (503 with Retry-After until then)."""
        access.ready()
        if access.replica.spec.serving.http.ready_when == "all":
            require_complete(registry)
        return {"status": "ready", "variants": sorted(registry.loaded())}

    @app.post("/v1/predict", response_model=schemas.PredictResponse,
              responses=errors(400, 401, 403, 404, 408, 413, 422, 429, 503))  # fmt: skip
    async def predict(request: Request):
        """The body (``PredictRequest``, documented in ``openapi``) is read here, not by
        FastAPI, so that ``RequestContext`` can serve this route without FastAPI's
        per-request machinery (``direct``)."""
        content_type = request.headers.get("content-type")
        body = json_body(schemas.PredictRequest, await request.body(), content_type)
        body = _admitted(access, request, body)
        response = await access.ready().predict(body, request.state.request_id, request.state.trace)
        access.replica.served(
            response.request_id, request.state.trace, [p.index for p in response.predictions]
        )
        # serialized by pydantic-core in one pass (not model_dump, then the json module)
        return Response(response.model_dump_json(), media_type="application/json",
                        headers={VARIANT_HEADER: response.variant})  # fmt: skip

    direct.add("/v1/predict", predict)

    @app.post("/v1/route", response_model=schemas.Decision,
              responses=errors(400, 401, 403, 404, 408, 413, 422, 429, 503))  # fmt: skip
    async def route(body: schemas.RouteRequest, request: Request):
        body = _admitted(access, request, body)
        return access.ready().route(body)

    @app.get("/v1/variants", responses=errors(401, 503))
    async def variants(request: Request):
        access.key(request)
        gateway = access.ready()
        routed_on = {profile.name: profile.latency_ms for profile in gateway.catalog()}
        info, shadow = registry.info, access.replica.shadow
        rows = [
            {
                **_row(variant, routed_on.get(variant.name)),
                "build": build_row(registry, variant.name),
                "shadow": shadow.describe(variant.name) if shadow is not None else None,
            }
            for variant in registry
        ]
        return {
            "model": info.model, "quality_metric": info.quality_metric, "variants": rows,
            "build": build_summary(registry),
        }  # fmt: skip

    @app.get("/v1/tiers", responses=errors(401, 503))
    async def tiers(request: Request):
        access.key(request)
        gateway = access.ready()
        decisions = {name: gateway.route(schemas.RouteRequest(tier=name)) for name in gateway.tiers}
        return {
            name: {**tier.model_dump(), "variant": decisions[name].variant, "reason": decisions[name].reason,
                   "explanation": decisions[name].explanation}
            for name, tier in gateway.tiers.items()
        }  # fmt: skip


def _admitted(access: Access, request: Request, body: RouteBody) -> RouteBody:
    """The body with the tier and variant it was authorized for, which is what then runs."""
    target = access.admit(request, lambda default: Target.named(body.tier, body.variant, default))
    return body.model_copy(update=target.routing())


def _row(variant: Variant, routed_on: dict[int, float] | None) -> dict[str, Any]:
    """One variant of the catalog: its measured profile, its state and its live figures."""
    engine = variant.engine
    live = None
    if engine is not None:
        live = {
            "in_flight": engine.stats.in_flight, "recent_ms": engine.stats.ewma_ms,
            "replicas": engine.replicas, "hop_ms": engine.stats.hop_ms,
            # false while a remote variant is down, until a live replica re-times it
            "available": engine.available, "reprofiles": engine.reprofiles,
            # what routing predicts from: p95 timed inside the serving replica
            "serving_p95_ms": {str(b): ms for b, ms in (routed_on or {}).items()},
        }  # fmt: skip
    profile = (
        variant.entry.model_dump(mode="json", exclude={"path"}) if variant.entry else {"name": variant.name}
    )
    return {
        **profile, "state": variant.state.value, "state_reason": variant.reason or None,
        "ready": variant.loaded, "routed": variant.routable, "live": live,
        "live_quality": variant.live_quality,  # routing's quality for it, when live traffic put it lower
    }  # fmt: skip
