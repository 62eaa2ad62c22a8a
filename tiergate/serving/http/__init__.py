"""The HTTP surface of a serving replica: /v1, label feedback, the Open Inference Protocol
(v2), admin routes and the probes, over a ``Replica``. Everything it decides comes from
the gateway; ``errors`` is the one place that turns the gateway's errors into statuses.

    app = create_app(replica)   # an ASGI app: RequestContext around FastAPI
"""

from __future__ import annotations

from fastapi import FastAPI

from tiergate import __version__
from tiergate.serving.http.access import Access
from tiergate.serving.http.admin import add_admin_routes
from tiergate.serving.http.direct import DirectRoutes
from tiergate.serving.http.errors import install_error_handlers
from tiergate.serving.http.feedback import add_feedback_routes
from tiergate.serving.http.middleware import FastJSONRoute, RequestContext
from tiergate.serving.http.openapi import document
from tiergate.serving.http.v1 import VARIANT_HEADER, add_v1_routes
from tiergate.serving.http.v2 import add_v2_routes
from tiergate.serving.replica import Replica

__all__ = ["VARIANT_HEADER", "create_app"]


def create_app(replica: Replica) -> RequestContext:
    """The FastAPI app inside ``RequestContext``: outermost, so that a refusal at the front
    door skips FastAPI's own middleware stack too."""
    app = FastAPI(
        title="tiergate", version=__version__, description="Routes each request to a compressed variant"
    )
    app.router.route_class = FastJSONRoute
    install_error_handlers(app)
    access = Access(replica)
    direct = DirectRoutes()  # the hot routes, also served without FastAPI
    add_v1_routes(app, access, direct)
    add_feedback_routes(app, access)
    add_admin_routes(app, access)
    add_v2_routes(app, access, direct)
    document(app)
    return RequestContext(app, replica, direct)
