"""What one inference request turned into, filled in as the gateway decides and read by
the metrics when the answer goes out.

    trace = Trace()
    await gateway.predict(request, request_id, trace)
    metrics.request(trace, status_code=200)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Trace:
    tier: str | None = None
    variant: str | None = None
    reason: str | None = None
    latency_ms: float | None = None
    slo_met: bool | None = None
    shed: bool = False  # refused because no variant was predicted within the bound (in time)
    # perf_counter time the request reached the replica, less how far behind the event loop
    # ran then (the time it most likely waited unread); None: when the gateway first saw it
    arrived: float | None = None
    # the input the answer was computed from, until shadow sampling takes it (``Shadow.offer``)
    inputs: np.ndarray | None = None
