"""The gateway's core, free of Ray and HTTP: route a request with the policy, run it on
the chosen variant's engine, retry once on the next-best variant if that fails.

    gateway = Gateway(menu, tiers, engines, decoder, serving.routing, serving.admission)
    response = await gateway.predict(PredictRequest(inputs=..., tier="fast"), request_id)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from tiergate.profiles.menu import Menu
from tiergate.profiles.policy import Constraints, LiveStats, Reason, VariantProfile, choose
from tiergate.profiles.tiers import Tier, constraints_for
from tiergate.serving import schemas
from tiergate.serving.config import AdmissionConfig, RoutingConfig
from tiergate.serving.engine import DeadlineExceeded, QueueFull, RunSlots, VariantEngine
from tiergate.serving.inputs import InputDecoder
from tiergate.serving.metrics import Metrics, Trace

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An answer other than a prediction: ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra


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
        menu: Menu,
        tiers: Mapping[str, Tier],
        engines: Mapping[str, VariantEngine],
        decoder: InputDecoder,
        routing: RoutingConfig,
        admission: AdmissionConfig,
        run_slots: RunSlots | None = None,
    ) -> None:
        self.menu, self.tiers, self.engines, self.decoder = menu, dict(tiers), dict(engines), decoder
        default_tier = routing.default_tier
        self.default_tier = default_tier if default_tier in self.tiers else next(iter(self.tiers))
        self.entries = {entry.name: entry for entry in menu.variants}
        self.reference_quality = menu.variants[0].quality
        self.classes = menu.classes
        self.metrics: Metrics | None = None  # set inside a Serve replica
        self.failure_cooldown_s = routing.failure_cooldown_s
        self.latency_headroom = routing.latency_headroom  # route within this fraction of a latency bound
        self._avoid_until: dict[str, float] = {}  # variant -> monotonic time; set when it fails
        self.overhead_ms = 0.0  # recent time a request spends in the gateway outside the model
        self.request_timeout_s = admission.request_timeout_s  # the longest any request waits for its answer
        # the run slots the in-process engines share (set on them here); told each request's bound
        self.run_slots = run_slots
        self._local = [name for name, engine in self.engines.items() if isinstance(engine, VariantEngine)]
        if run_slots is not None:
            for name in self._local:
                self.engines[name].run_slots = run_slots
        self.refresh()
        for engine in self.engines.values():
            engine.on_change = self.refresh  # a profile changed, or a remote variant went down or came back

    def refresh(self) -> None:
        """Rebuild the routing catalog: the menu is fixed for a gateway's life, so this runs
        only when a variant is re-timed, goes down or comes back."""
        self._catalog = [
            VariantProfile(
                name=entry.name,
                quality=entry.quality,
                latency_ms=self._serving_latency(entry),
                ready=entry.name in self.engines and self.engines[entry.name].available,
            )
            for entry in self.menu.variants
        ]

    def _serving_latency(self, entry) -> dict[int, float]:
        """p95 per batch size as timed inside the serving replica, else the menu's profile."""
        engine = self.engines.get(entry.name)
        if engine is not None and engine.latency_p95_ms:
            return dict(engine.latency_p95_ms)
        return {int(b): stats.p95 for b, stats in entry.latency_ms.items()}

    # -- routing -----------------------------------------------------------------------
    def catalog(self) -> list[VariantProfile]:
        return self._catalog

    def live(self) -> dict[str, LiveStats]:
        shared = self._shared_wait_ms()
        return {
            name: LiveStats(
                in_flight=engine.stats.in_flight,
                replicas=engine.replicas,
                overhead_ms=self.overhead_ms + engine.stats.hop_ms,
                slowdown=engine.stats.slowdown,
                shared_wait_ms=shared.get(name),
            )
            for name, engine in self.engines.items()
        }

    def _shared_wait_ms(self) -> dict[str, float]:
        """For each in-process variant, the wait a new run would have for one of the run
        slots they share: the run time queued on all of them, spread over the slots. Even
        with a slot free a run waits: the cores are the event loop's too (measured: taking a
        free slot as no wait missed the bound 3x as often at 2x load, BENCHMARKS.md)."""
        if self.run_slots is None:
            return {}
        work_ms = sum(self.engines[name].queued_work_ms() for name in self._local)
        return dict.fromkeys(self._local, work_ms / self.run_slots.size)

    def constraints(self, request: schemas.RouteRequest) -> tuple[str | None, Constraints]:
        if request.variant is not None and request.variant not in self.entries:
            raise GatewayError(
                404, f"variant: unknown variant {request.variant!r}", known=sorted(self.entries)
            )
        tier_name = self.tier_of(request)
        if tier_name is not None and tier_name not in self.tiers:
            raise GatewayError(422, f"tier: unknown tier {tier_name!r}", known=sorted(self.tiers))
        tier = self.tiers[tier_name] if tier_name else Tier()
        return tier_name, constraints_for(
            tier, self.reference_quality, request.slo, request.variant, request.strict
        )

    def route(self, request: schemas.RouteRequest, exclude: frozenset[str] = frozenset()) -> schemas.Decision:
        tier_name, constraints = self.constraints(request)
        routing = constraints
        if constraints.max_latency_ms is not None and self.latency_headroom != 1.0:
            routing = replace(constraints, max_latency_ms=constraints.max_latency_ms * self.latency_headroom)
        now = time.monotonic()
        cooling = {name for name, until in self._avoid_until.items() if until > now}
        catalog = [p for p in self.catalog() if p.name not in exclude]
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
            explanation=decision.explanation,
            predicted_latency_ms=decision.predicted_latency_ms,
            max_latency_ms=constraints.max_latency_ms,
            min_accuracy=constraints.min_accuracy,
            slo_feasible=decision.slo_met,
        )

    # -- inference -----------------------------------------------------------------------
    def decode(self, request: schemas.PredictRequest) -> np.ndarray:
        if request.image is not None:
            return self.decoder.from_base64(request.image)
        return self.decoder.from_nested(request.inputs)

    def tier_of(self, request: schemas.RouteRequest) -> str | None:
        """The tier a request is held to: its own, else the default unless it pins a variant."""
        return request.tier or (None if request.variant else self.default_tier)

    def _known_tier(self, request: schemas.RouteRequest) -> str | None:
        tier = self.tier_of(request)
        return tier if tier in self.tiers else None  # never a client's string as a metric label

    async def predict(
        self, request: schemas.PredictRequest, request_id: str, trace: Trace | None = None
    ) -> schemas.PredictResponse:
        """Decode, route, run (retrying once elsewhere on failure) and label one request."""
        started = time.perf_counter()
        trace = trace if trace is not None else Trace()
        trace.tier = self._known_tier(request)
        if request.image is not None:
            # decoding a PNG at the pixel limit takes ~75 ms of CPU: off the event loop, so one
            # such request cannot stall every other one
            x = await asyncio.to_thread(self.decode, request)
        else:
            x = self.decode(request)
        outcome = await self.run(x, request, request_id, started, trace)
        return schemas.PredictResponse(
            variant=outcome.variant,
            tier=outcome.decision.tier,
            reason=outcome.decision.reason,
            explanation=outcome.decision.explanation,
            predictions=self._predictions(outcome.logits, request.top_k),
            latency_ms=outcome.latency_ms,
            slo_met=outcome.slo_met,
            request_id=request_id,
            retried_from=outcome.retried_from,
        )

    async def run(
        self,
        x: np.ndarray,
        request: schemas.RouteRequest,
        request_id: str,
        started: float | None = None,
        trace: Trace | None = None,
    ) -> Outcome:
        """Route ``x`` (N, C, H, W) and run it; the raw logits plus what happened (also
        written to ``trace`` as it is decided, so errors are recorded too)."""
        started = time.perf_counter() if started is None else started
        trace = trace if trace is not None else Trace()
        trace.tier = self._known_tier(request)
        routed = request.model_copy(update={"batch_size": len(x)})
        decision = self._decided(routed, trace=trace)
        if self.run_slots is not None:
            self.run_slots.saw_bound(decision.max_latency_ms)
        failed: str | None = None
        infer_started = time.perf_counter()
        self._observe_overhead((infer_started - started) * 1000)
        deadline = time.monotonic() + self.timeout_s(request) - (infer_started - started)
        try:
            logits = await self.engines[decision.variant].infer(x, deadline)
        except QueueFull as error:
            raise GatewayError(429, f"overloaded: {error}", retry_after_s=1) from None
        except DeadlineExceeded as error:
            raise GatewayError(503, f"timed out: {error}", retry_after_s=1) from None
        except Exception as error:
            failed = decision.variant
            self._avoid_until[failed] = time.monotonic() + self.failure_cooldown_s
            # the lines carry the request id (serving.logs), as every line of a request does
            if request.variant is not None:
                log.warning("%s failed (%s); pinned, so not retried", failed, error)
                raise GatewayError(503, f"variant {failed} failed: {error}") from None
            log.warning("%s failed (%s); retrying once on the next-best variant", failed, error)
            try:
                decision = self._decided(routed, exclude=frozenset({failed}), trace=trace)
            except GatewayError:
                raise GatewayError(
                    503, f"variant {failed} failed ({error}) and no other variant meets the floor"
                ) from None
            try:
                logits = await self.engines[decision.variant].infer(x, deadline)
            except QueueFull as error:
                raise GatewayError(
                    429, f"variant {failed} failed, and overloaded: {error}", retry_after_s=1
                ) from None
            except DeadlineExceeded as error:
                raise GatewayError(
                    503, f"variant {failed} failed, and timed out: {error}", retry_after_s=1
                ) from None
            except Exception as retry_error:
                self._avoid_until[decision.variant] = time.monotonic() + self.failure_cooldown_s
                raise GatewayError(
                    503, f"variants {failed} and {decision.variant} failed: {retry_error}"
                ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        quality = self.entries[decision.variant].quality
        slo_met = (decision.max_latency_ms is None or latency_ms <= decision.max_latency_ms) and (
            decision.min_accuracy is None or quality >= decision.min_accuracy
        )
        trace.latency_ms, trace.slo_met = latency_ms, slo_met
        return Outcome(decision.variant, decision, logits, latency_ms, slo_met, failed)

    def timeout_s(self, request: schemas.RouteRequest) -> float:
        """The request's own ``timeout_ms`` when shorter than ``request_timeout_s``."""
        if request.timeout_ms is None:
            return self.request_timeout_s
        return min(self.request_timeout_s, request.timeout_ms / 1000)

    def _observe_overhead(self, sample_ms: float) -> None:
        """EWMA of the time a request spends in the gateway before its model call (decoding,
        routing). One outlier (a huge batch, a cold first request) moves it at most 3x."""
        sample_ms = min(sample_ms, 3 * self.overhead_ms + 1.0)
        self.overhead_ms = 0.9 * self.overhead_ms + 0.1 * sample_ms

    def _decided(
        self,
        request: schemas.PredictRequest,
        exclude: frozenset[str] = frozenset(),
        trace: Trace | None = None,
    ) -> schemas.Decision:
        decision = self.route(request, exclude)
        if trace is not None:
            trace.variant, trace.reason = decision.variant, decision.reason
            # strict and predicted over budget: the service could not keep the SLO (load shed)
            trace.shed = decision.reason == Reason.REJECTED and decision.predicted_latency_ms is not None
        if decision.reason == Reason.REJECTED:
            best = max((p.quality for p in self.catalog() if p.ready), default=None)
            raise GatewayError(422, decision.explanation, best_accuracy=best, reason="rejected")
        return decision

    def _predictions(self, logits: np.ndarray, top_k: int) -> list[schemas.Prediction]:
        shifted = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        k = min(top_k, probabilities.shape[1])
        results = []
        for row in probabilities:
            order = np.argsort(-row)[:k]
            scores = [schemas.Score(label=self._label(i), index=int(i), score=float(row[i])) for i in order]
            top = scores[0]
            results.append(
                schemas.Prediction(label=top.label, index=top.index, score=top.score, top_k=scores)
            )
        return results

    def _label(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)
