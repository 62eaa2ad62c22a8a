"""The gateway's core, free of Ray and HTTP: route a request over the live menu with the
policy, run it on the chosen variant's engine, retry once on the next-best if that fails.

    gateway = Gateway(registry, tiers, decoder, routing)
    response = await gateway.predict(PredictRequest(inputs=..., tier="fast"), request_id)

Errors are the domain errors of ``tiergate.serving.errors``; the HTTP layer maps them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from tiergate.profiles.policy import Constraints, LiveStats, Reason, VariantProfile, choose
from tiergate.profiles.tiers import Tier, constraints_for
from tiergate.serving import schemas
from tiergate.serving.building import demotion_warning, explained, refuse_unready_pin
from tiergate.serving.engines import DeadlineExceeded, Ewma, QueueFull, RunSlots
from tiergate.serving.errors import (
    InvalidRequest,
    NotFound,
    Overloaded,
    Shed,
    Unavailable,
    Unsatisfiable,
    echo,
)
from tiergate.serving.inputs import InputDecoder
from tiergate.serving.menu_view import MenuView
from tiergate.serving.predictions import check_finite, predictions
from tiergate.serving.registry import MenuRegistry
from tiergate.serving.shedding import SHED_MEMORY_S, LoosestBound, aim, sheddable_bound
from tiergate.serving.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingSettings:
    """How the gateway routes (from the serving config's routing and admission groups)."""

    default_tier: str
    latency_headroom: float  # route within this fraction of a latency bound
    failure_cooldown_s: float  # a variant that failed sits out this long
    request_timeout_s: float  # the longest any request waits for its answer
    # a non-strict request predicted later than (1 + late_grace) x its bound, because of
    # load, is refused at once (503) instead of answered late; None: served late instead
    late_grace: float | None = None
    max_overhead_ms: float = 2.0  # cap on the measured overhead routing adds to every prediction


class _Superseded(RuntimeError):
    """The variant's engine was swapped or retired while the request was inside it."""


@dataclass(frozen=True)
class Outcome:
    variant: str
    decision: schemas.Decision
    logits: np.ndarray  # (N, K)
    latency_ms: float
    slo_met: bool
    retried_from: str | None


class Gateway:
    def __init__(
        self,
        registry: MenuRegistry,
        tiers: Mapping[str, Tier],
        decoder: InputDecoder,
        settings: RoutingSettings,
        run_slots: RunSlots | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.tiers, self.decoder, self.settings = registry, dict(tiers), decoder, settings
        self.default_tier = (
            settings.default_tier if settings.default_tier in self.tiers else next(iter(tiers))
        )
        self.run_slots, self.clock = run_slots, clock
        self._overhead_ms = Ewma(0.1, initial=0.0)  # recent time the gateway's own work takes per request
        self._avoid_until: dict[str, float] = {}  # variant -> clock time; set when it fails
        self._snapshot = MenuView.empty()
        self._loosest = LoosestBound(clock)  # what the front door holds every request to

    # -- the live menu, as routing sees it -----------------------------------------------------
    def view(self) -> MenuView:
        """What routing reads of the live menu, rebuilt only when the registry changed (every
        request reads it)."""
        if self._snapshot.version != self.registry.version:
            self._snapshot = MenuView.of(self.registry)
        return self._snapshot

    def catalog(self) -> list[VariantProfile]:
        """A profile per measured variant not retired; ``ready`` only for those routed to."""
        return self.view().catalog

    def live(self) -> dict[str, LiveStats]:
        return self.view().live(self._overhead_ms.value, self.run_slots)

    # -- routing ---------------------------------------------------------------------------------
    def tier_of(self, request: schemas.RouteRequest) -> str | None:
        """The tier a request is held to: its own, else the default unless it pins a variant."""
        return request.tier or (None if request.variant else self.default_tier)

    def known_tier(self, request: schemas.RouteRequest) -> str | None:
        tier = self.tier_of(request)
        return tier if tier in self.tiers else None  # never a client's string as a metric label

    def constraints(self, request: schemas.RouteRequest) -> tuple[str | None, Constraints]:
        known = self.view().quality
        if request.variant is not None and request.variant not in known:
            refuse_unready_pin(self.registry, request.variant)  # announced, not serving yet: 503
            raise NotFound(
                f"variant: unknown variant {echo(request.variant)}", field="variant", known=sorted(known)
            )
        tier_name = self.tier_of(request)
        if tier_name is not None and tier_name not in self.tiers:
            raise InvalidRequest(
                f"tier: unknown tier {echo(tier_name)}", field="tier", known=sorted(self.tiers)
            )
        tier = self.tiers[tier_name] if tier_name else Tier()
        reference = self.view().reference_quality
        if reference is None:
            raise Unavailable("not ready: the reference variant is not measured yet", retry_after_s=5)
        return tier_name, constraints_for(tier, reference, request.slo, request.variant, request.strict)

    def route(
        self, request: schemas.RouteRequest, exclude: frozenset[str] = frozenset(), waited_ms: float = 0.0
    ) -> schemas.Decision:
        """The variant for ``request``; ``waited_ms`` is how long it has waited already (its
        bound is for the whole answer, so what is left of it is less)."""
        limit = self.decoder.limits.max_batch_images
        if request.batch_size > limit:
            raise InvalidRequest(
                f"batch_size: {request.batch_size} exceeds the limit of {limit}", field="batch_size"
            )
        tier_name, constraints = self.constraints(request)
        routing = self._routing_constraints(constraints, waited_ms)
        now = self.clock()
        cooling = {name for name, until in self._avoid_until.items() if until > now}
        catalog = [p for p in self.catalog() if p.name not in exclude]
        if request.variant is not None:  # a pin reaches a demoted variant too
            catalog = [replace(p, ready=True) if self._pinnable(p) else p for p in catalog]
        live = self.live()
        if cooling and request.variant is None:
            # a variant that just failed sits out a cool-down, unless nothing else meets the floor
            healthy = [p for p in catalog if p.name not in cooling]
            if choose(healthy, routing, live, request.batch_size).variant is not None:
                catalog = healthy
        decision = choose(catalog, routing, live, request.batch_size)  # pins checked above
        return schemas.Decision(
            variant=decision.variant,
            tier=tier_name,
            reason=decision.reason.value,
            explanation=explained(self.registry, decision, request.variant),
            predicted_latency_ms=decision.predicted_latency_ms,
            max_latency_ms=constraints.max_latency_ms,
            min_accuracy=constraints.min_accuracy,
            slo_feasible=decision.slo_met,
        )

    def _routing_constraints(self, constraints: Constraints, waited_ms: float) -> Constraints:
        """What routing aims for (``shedding.aim``); notes the bound for ``lateness``."""
        late_grace = self.settings.late_grace
        self._loosest.saw(sheddable_bound(constraints, late_grace))
        return aim(constraints, waited_ms, self.settings.latency_headroom, late_grace)

    def lateness(self, waited_ms: float) -> str | None:
        """Why a request admitted now, having waited ``waited_ms`` unread, would be late
        whatever its tier: the run time already queued on this process's variants would
        make it later than the loosest bound a sheddable request was routed with in the
        last ``SHED_MEMORY_S`` (while a request with no bound, a pin or a strict one came:
        never). None when it might be in time. The front door refuses such a request
        before reading it; routing, which knows its tier, sheds past the bound's grace."""
        limit = self._loosest.ms()
        if math.isinf(limit):
            return None
        queued = self.view().shared_wait_ms(self.run_slots)
        if not queued or waited_ms + queued <= limit:  # nothing queued: refusing relieves nothing
            return None
        return (
            f"queued work would answer any request after {waited_ms + queued:.0f} ms, past the "
            f"{limit:g} ms bound of the loosest tier asked for in the last {SHED_MEMORY_S:g} s"
        )

    def _pinnable(self, profile: VariantProfile) -> bool:
        engine = self.view().engines.get(profile.name)
        return not profile.ready and engine is not None and engine.available

    def _quality(self, name: str) -> float:
        """The variant's quality as routing saw it (read before any await)."""
        return self.view().quality[name]

    def _decided(
        self, request: schemas.RouteRequest, trace: Trace, exclude: frozenset[str] = frozenset(),
        waited_ms: float = 0.0,
    ) -> schemas.Decision:  # fmt: skip
        decision = self.route(request, exclude, waited_ms)
        trace.variant, trace.reason = decision.variant, decision.reason
        # predicted over budget and refused: the service could not keep the SLO (load shed)
        trace.shed = decision.reason == Reason.SHED or (
            decision.reason == Reason.REJECTED and decision.predicted_latency_ms is not None
        )
        if decision.reason == Reason.SHED:
            raise Shed(decision.explanation, reason="shed", retry_after_s=1)
        if decision.reason == Reason.REJECTED:
            best = max((p.quality for p in self.catalog() if p.ready), default=None)
            raise Unsatisfiable(decision.explanation, best_accuracy=best, reason="rejected")
        return decision

    # -- inference -------------------------------------------------------------------------------
    async def predict(
        self, request: schemas.PredictRequest, request_id: str, trace: Trace | None = None
    ) -> schemas.PredictResponse:
        """Decode, route, run (retrying once elsewhere on failure) and label one request."""
        trace = trace if trace is not None else Trace()
        started = trace.arrived if trace.arrived is not None else time.perf_counter()
        trace.tier = self.known_tier(request)
        if request.image is not None:
            # decoding a large PNG takes tens of ms of CPU: off the event loop (on the decoder's
            # own threads, within its time budget), so one such request cannot stall the others
            x = await self.decoder.from_base64_off_loop(request.image)
        else:
            x = self.decoder.from_nested(request.inputs)
        outcome = await self.run(x, request, started, trace)
        return schemas.PredictResponse(
            variant=outcome.variant,
            tier=outcome.decision.tier,
            reason=outcome.decision.reason,
            explanation=outcome.decision.explanation,
            predictions=predictions(outcome.logits, request.top_k, self.registry.info.classes),
            latency_ms=outcome.latency_ms,
            slo_met=outcome.slo_met,
            request_id=request_id,
            retried_from=outcome.retried_from,
            warning=demotion_warning(self.registry, outcome.variant),
        )

    async def run(
        self,
        x: np.ndarray,
        request: schemas.RouteRequest,
        started: float | None = None,
        trace: Trace | None = None,
    ) -> Outcome:
        """Route ``x`` (N, C, H, W) and run it; the raw logits plus what happened (also
        written to ``trace`` as it is decided, so errors are recorded too)."""
        routing_started = time.perf_counter()  # decoding and parsing, the client's doing, are behind us
        trace = trace if trace is not None else Trace()
        if started is None:
            started = trace.arrived if trace.arrived is not None else routing_started
        trace.tier = self.known_tier(request)
        routed = request.model_copy(update={"batch_size": len(x)})
        decision = self._decided(routed, trace, waited_ms=(time.perf_counter() - started) * 1000)
        quality = self._quality(decision.variant)
        if self.run_slots is not None:
            self.run_slots.saw_bound(decision.max_latency_ms)
        infer_started = time.perf_counter()
        self._observe_overhead((infer_started - routing_started) * 1000)
        deadline = time.monotonic() + self.timeout_s(request) - (infer_started - started)
        failed: str | None = None
        try:
            logits = await self._infer(decision.variant, x, deadline)
        except (Overloaded, Unavailable):
            raise
        except Exception as error:
            failed = decision.variant
            decision, logits, quality = await self._retry(routed, x, deadline, failed, error, trace)
        check_finite(logits, request)
        latency_ms = (time.perf_counter() - started) * 1000
        slo_met = (decision.max_latency_ms is None or latency_ms <= decision.max_latency_ms) and (
            decision.min_accuracy is None or quality >= decision.min_accuracy
        )
        trace.latency_ms, trace.slo_met, trace.inputs = latency_ms, slo_met, x  # inputs: for shadowing
        return Outcome(decision.variant, decision, logits, latency_ms, slo_met, failed)

    async def _infer(self, name: str, x: np.ndarray, deadline: float, after: str = "") -> np.ndarray:
        """One run on ``name``'s engine; queue errors become the gateway's answers."""
        engine = self.view().engines.get(name)
        if engine is None:  # retired or failed between routing and here
            raise _Superseded(f"{name} left the menu")
        try:
            return await engine.infer(x, deadline)
        except QueueFull as error:
            raise Overloaded(f"{after}overloaded: {error}") from None
        except DeadlineExceeded as error:
            raise Unavailable(f"{after}timed out: {error}", retry_after_s=1) from None
        except Exception as error:
            if engine.closed:  # replaced or retired while the request was inside it
                raise _Superseded(f"{name}: {error}") from error
            raise

    async def _retry(
        self, request: schemas.RouteRequest, x: np.ndarray, deadline: float, failed: str,
        error: Exception, trace: Trace,
    ) -> tuple[schemas.Decision, np.ndarray, float]:  # fmt: skip
        """After ``failed`` raised: once more on the next-best variant, unless it was pinned.
        A variant whose engine was swapped or retired meanwhile did not fail: the request is
        routed again as it was (a pin reaches the new engine), and nothing sits out."""
        superseded = isinstance(error, _Superseded)
        exclude = frozenset() if superseded else frozenset({failed})
        if not superseded:
            self._avoid_until[failed] = self.clock() + self.settings.failure_cooldown_s
        # the log lines carry the request id (serving.logs), as every line of a request does
        if request.variant is not None and not superseded:
            log.warning("%s failed (%s); pinned, so not retried", failed, error)
            raise Unavailable(f"variant {failed} failed: {error}") from None
        log.warning("%s failed (%s); retrying once", failed, error)
        try:
            decision = self._decided(request, trace, exclude=exclude)
        except Unsatisfiable:
            raise Unavailable(
                f"variant {failed} failed ({error}) and no other variant meets the floor"
            ) from None
        quality = self._quality(decision.variant)
        try:
            after = f"variant {failed} failed, and "
            return decision, await self._infer(decision.variant, x, deadline, after), quality
        except (Overloaded, Unavailable):
            raise
        except Exception as retry_error:
            if not isinstance(retry_error, _Superseded):
                self._avoid_until[decision.variant] = self.clock() + self.settings.failure_cooldown_s
            raise Unavailable(f"variants {failed} and {decision.variant} failed: {retry_error}") from None

    @property
    def overhead_ms(self) -> float:
        """Recent time the gateway's own work (routing) takes before a request's model call.
        Decoding and parsing are left out: their cost is the client's to choose (a slow PNG,
        a huge JSON batch), and this figure is added to every request's predicted latency."""
        return self._overhead_ms.value

    def _observe_overhead(self, sample_ms: float) -> None:
        """One outlier (a cold first request) moves the overhead at most 3x, and it never
        passes ``max_overhead_ms``: a few slow requests cannot push every tier to fallback."""
        bounded = min(sample_ms, 3 * self._overhead_ms.value + 1.0, self.settings.max_overhead_ms)
        self._overhead_ms.update(bounded)

    def timeout_s(self, request: schemas.RouteRequest) -> float:
        """The request's own ``timeout_ms`` when shorter than ``request_timeout_s``."""
        if request.timeout_ms is None:
            return self.settings.request_timeout_s
        return min(self.settings.request_timeout_s, request.timeout_ms / 1000)
