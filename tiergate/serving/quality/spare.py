"""Whether a replica has room for a shadow run now: shadow runs use spare capacity only,
never while the replica sheds load or is above its utilisation threshold.

    spare = SpareCapacity(serving, admission, backlog_ms=..., lateness=gateway.lateness)
    spare.busy()     # None: room for a shadow run; else why not, in words

Three signals the replica keeps anyway: requests in flight against its capacity (HAProxy's
``ingress_max_in_flight`` per replica, else ``max_in_flight``), the run time queued on its
run slots plus its event loop's lag, and whether the front door would refuse a request now
because queued work makes any answer late (``Gateway.lateness``: load shedding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tiergate.profiles.tiers import Tier
from tiergate.serving.admission import Admission
from tiergate.serving.config import ServingConfig


def capacity(serving: ServingConfig) -> int:
    """Requests a replica is meant to hold at once: what HAProxy sends it, else what it admits."""
    admission = serving.admission
    if serving.ray.ingress == "haproxy" and admission.ingress_max_in_flight > 0:
        return admission.ingress_max_in_flight
    return admission.max_in_flight


def loosest_floor(tiers: Mapping[str, Tier], reference_quality: float | None) -> float | None:
    """The lowest accuracy floor of the tiers (a variant below it qualifies for none); None
    when no tier has a floor or the reference is not measured."""
    if reference_quality is None:
        return None
    floors = [f for tier in tiers.values() if (f := tier.floor(reference_quality)) is not None]
    return min(floors, default=None)


class SpareCapacity:
    def __init__(
        self,
        serving: ServingConfig,
        admission: Admission,
        backlog_ms: Callable[[], float | None],
        lateness: Callable[[float], str | None],
    ) -> None:
        self.config, self.admission = serving.shadow, admission
        self.max_in_flight = self.config.max_utilisation * capacity(serving)
        self.backlog_ms, self.lateness = backlog_ms, lateness

    def busy(self) -> str | None:
        """Why a shadow run may not start now; None when it may."""
        in_flight = self.admission.in_flight
        if in_flight > self.max_in_flight:
            return f"{in_flight} requests in flight (more than {self.max_in_flight:g})"
        backlog_ms = (self.backlog_ms() or 0.0) + 1000 * self.admission.lag.overdue_s()
        if backlog_ms > self.config.max_backlog_ms:
            return f"{backlog_ms:.1f} ms of queued work and loop lag"
        late = self.lateness(0.0)
        if late is not None:
            return f"shedding: {late}"
        return None
