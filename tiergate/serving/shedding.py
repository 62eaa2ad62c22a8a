"""What routing aims for under load, and the bound the front door holds requests to.

routing = aim(constraints, waited_ms, headroom=0.5, late_grace=0.5)
loosest = LoosestBound(clock); loosest.saw(15.0); loosest.ms()   # 15.0 for a second
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from tiergate.profiles.policy import Constraints

SHED_MEMORY_S = 1.0  # how long a bound a request was routed with holds the front door to it


def sheddable_bound(constraints: Constraints, late_grace: float | None) -> float | None:
    """The latency bound a request may be shed for: None with no bound, no grace (shedding
    off), for a strict request (refused as it is) or a pin (never shed)."""
    bound = constraints.max_latency_ms
    if bound is None or late_grace is None or constraints.strict or constraints.variant is not None:
        return None
    return bound


def aim(constraints: Constraints, waited_ms: float, headroom: float, late_grace: float | None) -> Constraints:
    """What routing aims for: the part of the bound left after ``waited_ms``, scaled by the
    headroom, and (for a sheddable request) the lateness past which it is shed."""
    bound = constraints.max_latency_ms
    if bound is None:
        return constraints
    sheddable = sheddable_bound(constraints, late_grace)
    shed_after = None if sheddable is None else (1 + late_grace) * sheddable
    return replace(
        constraints,
        max_latency_ms=bound * headroom - waited_ms,
        shed_after_ms=shed_after,
        waited_ms=waited_ms,
    )


class LoosestBound:
    """The loosest sheddable bound requests were routed with in the last ``SHED_MEMORY_S``
    (inf while one that is never shed came)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._ms, self._at = math.inf, -math.inf

    def saw(self, bound_ms: float | None) -> None:
        """A request routed with this bound (None: it is never shed)."""
        bound = math.inf if bound_ms is None else bound_ms
        now = self.clock()
        if bound >= self._ms or now - self._at > SHED_MEMORY_S:
            self._ms, self._at = bound, now

    def ms(self) -> float:
        return self._ms if self.clock() - self._at <= SHED_MEMORY_S else math.inf
