"""The gateway's core, free of Ray and HTTP: route a request with the policy, run it on
the chosen variant's engine, retry once on the next-best variant if that fails.

    gateway = Gateway(menu, tiers, engines, decoder)
    response = await gateway.predict(PredictRequest(inputs=..., tier="fast"), request_id)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from profiles.menu import Menu
from profiles.policy import Constraints, LiveStats, Reason, VariantProfile, choose
from profiles.tiers import Tier, constraints_for
from serving import schemas
from serving.engine import QueueFull, VariantEngine
from serving.inputs import InputDecoder

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
        default_tier: str = "balanced",
    ) -> None:
        self.menu, self.tiers, self.engines, self.decoder = menu, dict(tiers), dict(engines), decoder
        self.default_tier = default_tier if default_tier in self.tiers else next(iter(self.tiers))
        self.entries = {entry.name: entry for entry in menu.variants}
        self.reference_quality = menu.variants[0].quality
        self.classes = menu.classes
        # the menu and the set of loaded engines are fixed for a gateway's life: build once
        self._catalog = [
            VariantProfile(
                name=entry.name,
                quality=entry.quality,
                latency_ms={int(b): stats.p95 for b, stats in entry.latency_ms.items()},
                ready=entry.name in self.engines,
            )
            for entry in menu.variants
        ]

    # -- routing -----------------------------------------------------------------------
    def catalog(self) -> list[VariantProfile]:
        return self._catalog

    def live(self) -> dict[str, LiveStats]:
        return {name: LiveStats(in_flight=engine.stats.in_flight) for name, engine in self.engines.items()}

    def constraints(self, request: schemas.RouteRequest) -> tuple[str | None, Constraints]:
        if request.variant is not None and request.variant not in self.entries:
            raise GatewayError(
                404, f"variant: unknown variant {request.variant!r}", known=sorted(self.entries)
            )
        tier_name = request.tier or (None if request.variant else self.default_tier)
        if tier_name is not None and tier_name not in self.tiers:
            raise GatewayError(422, f"tier: unknown tier {tier_name!r}", known=sorted(self.tiers))
        tier = self.tiers[tier_name] if tier_name else Tier()
        return tier_name, constraints_for(
            tier, self.reference_quality, request.slo, request.variant, request.strict
        )

    def route(self, request: schemas.RouteRequest, exclude: frozenset[str] = frozenset()) -> schemas.Decision:
        tier_name, constraints = self.constraints(request)
        catalog = [p for p in self.catalog() if p.name not in exclude]
        decision = choose(catalog, constraints, self.live(), request.batch_size)  # pins checked above
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

    async def predict(self, request: schemas.PredictRequest, request_id: str) -> schemas.PredictResponse:
        """Decode, route, run (retrying once elsewhere on failure) and label one request."""
        started = time.perf_counter()
        outcome = await self.run(self.decode(request), request, request_id, started)
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
        self, x: np.ndarray, request: schemas.RouteRequest, request_id: str, started: float | None = None
    ) -> Outcome:
        """Route ``x`` (N, C, H, W) and run it; the raw logits plus what happened."""
        started = time.perf_counter() if started is None else started
        routed = request.model_copy(update={"batch_size": len(x)})
        decision = self._decided(routed)
        failed: str | None = None
        try:
            logits = await self.engines[decision.variant].infer(x)
        except QueueFull:
            raise GatewayError(
                429, f"variant {decision.variant} is at its queue bound", retry_after_s=1
            ) from None
        except Exception as error:
            if request.variant is not None:
                raise GatewayError(503, f"variant {decision.variant} failed: {error}") from None
            log.warning("request %s: %s failed (%s); retrying once", request_id, decision.variant, error)
            failed = decision.variant
            decision = self._decided(routed, exclude=frozenset({failed}))
            try:
                logits = await self.engines[decision.variant].infer(x)
            except Exception as retry_error:
                raise GatewayError(
                    503, f"variants {failed} and {decision.variant} failed: {retry_error}"
                ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        quality = self.entries[decision.variant].quality
        slo_met = (decision.max_latency_ms is None or latency_ms <= decision.max_latency_ms) and (
            decision.min_accuracy is None or quality >= decision.min_accuracy
        )
        return Outcome(decision.variant, decision, logits, latency_ms, slo_met, failed)

    def _decided(
        self, request: schemas.PredictRequest, exclude: frozenset[str] = frozenset()
    ) -> schemas.Decision:
        decision = self.route(request, exclude)
        if decision.reason == Reason.REJECTED:
            best = max((p.quality for p in self.catalog() if p.ready), default=None)
            raise GatewayError(422, decision.explanation, best_accuracy=best)
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
