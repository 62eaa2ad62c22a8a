"""Answer requests over the live menu: engines (ONNX Runtime sessions with dynamic
batching), the live-menu registry, the gateway core (routing, retries, deadlines), the
HTTP layer (/v1, v2, admin) and thin Ray Serve deployments around them.

Layers, each importing only from those before it:
``engines``, ``registry``, ``inputs``, ``errors`` → ``gateway`` → ``replica`` → ``http`` →
``deployments``. The core imports neither FastAPI nor Starlette (Ray only in the remote
engine); ``http.errors`` alone maps errors to statuses.

    replica = Replica.build(ReplicaSpec(serving=..., tiers=..., preprocess=..., menu=menu))
    response = await replica.gateway.predict(PredictRequest(inputs=x, tier="fast"), request_id)
"""

from tiergate._lazy import lazy_exports

_EXPORTS = {
    "ServingConfig": ".config",
    **dict.fromkeys(["Gateway", "Outcome", "RoutingSettings"], ".gateway"),
    **dict.fromkeys(["MenuInfo", "MenuRegistry", "Variant", "VariantState", "drain"], ".registry"),
    **dict.fromkeys(["Replica", "ReplicaSpec"], ".replica"),
    **dict.fromkeys(["Ingress", "IngressReplica", "VariantReplica", "VariantServer"], ".deployments"),
    "create_app": ".http",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
