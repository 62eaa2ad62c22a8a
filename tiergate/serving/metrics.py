"""What tiergate records, decided in one place, emitted with ``ray.serve.metrics`` so every
replica on every node is exported by Ray's per-node metrics endpoint (names gain Ray's
``ray_`` prefix there, plus ``application``/``deployment``/``replica`` labels).

    metrics = Metrics(tiers, registry)        # inside a Serve replica
    metrics.request(trace, status_code=200)   # per inference request (the HTTP layer calls it)
    metrics.batch("int8", 8)                  # per ORT run (the engines call it)
    metrics.flush()                           # every second, off the request path

Recording into Ray's metrics is slow per call, so a request only appends to a deque, and
``flush`` (run in a worker thread by the replica) aggregates counters and hands everything
to Ray.

Series (as Prometheus sees them):
  ray_tiergate_requests_total{tier,variant,code}            every answered inference request
  ray_tiergate_request_latency_ms_bucket{tier,variant,le}   served requests; buckets hold every
                                                            tier's max_latency_ms exactly
  ray_tiergate_slo_requests_total{tier,outcome}             met | missed, for 2xx, 429 and 5xx
  ray_tiergate_routing_decisions_total{tier,variant,reason} best, degraded, pinned, fallback, rejected
  ray_tiergate_variant_{accuracy,fidelity,p95_latency_ms,size_bytes,in_flight,
                        build_seconds,cache_hit,profile_seconds}{variant}
  ray_tiergate_variant_state{variant,state}                 1 for each variant's state in the live menu,
                                                            0 for its other states (failed 1: not built)
  ray_tiergate_variant_build_percent{variant}               its build's progress, as the board reports it
  ray_tiergate_batch_size_bucket{variant,le}                images per ORT run
  ray_tiergate_tier_{slo_target,max_latency_ms,accuracy_floor,accuracy_objective}{tier}
  ray_tiergate_in_bound_accuracy_total{tier,variant}        per served request within its tier's
                                                            latency bound, the accuracy of the
                                                            variant that served it, its live
                                                            estimate where lower (over
                                                            slo_requests_total: effective accuracy)
  ray_tiergate_feedback_{labelled,correct}_total{tier,variant,bound}
                                                            images labelled by POST /v1/feedback,
                                                            and of them predicted right; bound:
                                                            met | missed, the tier's latency bound
  ray_tiergate_feedback_items_total{outcome}                accepted, unknown, expired, duplicate,
                                                            forbidden
  ray_tiergate_shadow_requests_total{variant,outcome}       answers shadow sampling could compare (a
                                                            variant other than fp32 served them):
                                                            shadowed, not_sampled, busy, dropped,
                                                            over_budget, failed; probed: a demoted
                                                            variant's runs
  ray_tiergate_shadow_{compared,agreed}_total{variant}      images run again on fp32 (or, probed, on
                                                            the variant), and of them top-1 agreed
  ray_tiergate_shadow_demotions_total{variant,change}       demoted | readmitted on live fidelity
  ray_tiergate_variant_fidelity_low{variant}                lower bound of the offline fidelity's
                                                            Wilson 95% interval
  ray_tiergate_variant_routed_quality{variant}              the accuracy routing holds it to (below
                                                            accuracy: a live estimate from shadowing)
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping

from tiergate.profiles.tiers import Tier
from tiergate.serving.board import BuildState
from tiergate.serving.quality import Answer, Offline, Outcome, in_bound, latency_bounds
from tiergate.serving.registry import MenuRegistry, VariantState
from tiergate.serving.trace import Trace

NONE = "none"  # label value when a request named no tier, or was refused before routing
LATENCY_BUCKETS_MS = (
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def latency_boundaries(tiers: Mapping[str, Tier]) -> list[float]:
    """The default buckets plus every tier's bound, so SLO queries need no interpolation."""
    bounds = {float(b) for b in LATENCY_BUCKETS_MS}
    bounds.update(float(t.max_latency_ms) for t in tiers.values() if t.max_latency_ms is not None)
    return sorted(bounds)


def slo_outcome(status_code: int, slo_met: bool | None, shed: bool = False) -> str | None:
    """met / missed for answers that count toward a tier's SLO; None for client errors
    (4xx other than 429), which say nothing about the service, unless the request was
    refused because the service could not meet its latency bound (``shed``)."""
    if shed:
        return "missed"
    if 200 <= status_code < 300:
        return "met" if slo_met else "missed"
    if status_code == 429 or status_code >= 500:
        return "missed"
    return None


class Metrics:
    """Records into Ray's metrics; the menu's gauges follow the live ``registry``."""

    def __init__(self, tiers: Mapping[str, Tier], registry: MenuRegistry | None = None) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.requests = Counter(
            "tiergate_requests", "Answered inference requests", tag_keys=("tier", "variant", "code")
        )
        self.latency = Histogram(
            "tiergate_request_latency_ms", "Latency of served requests, measured in the gateway (ms)",
            boundaries=latency_boundaries(tiers), tag_keys=("tier", "variant"),
        )  # fmt: skip
        self.slo = Counter(
            "tiergate_slo_requests", "Requests counted toward their tier's SLO", tag_keys=("tier", "outcome")
        )
        self.decisions = Counter(
            "tiergate_routing_decisions", "Routing decisions", tag_keys=("tier", "variant", "reason")
        )
        self.batch_size = Histogram(
            "tiergate_batch_size", "Images per ONNX Runtime run", boundaries=list(BATCH_BUCKETS),
            tag_keys=("variant",),
        )  # fmt: skip
        variant_gauges = {
            "accuracy": "Accuracy on the held-out test split (fidelity to fp32 when unlabelled)",
            "fidelity": "Agreement with fp32's predictions on the test split",
            "fidelity_low": "Lower bound of the offline fidelity's Wilson 95% interval",
            "routed_quality": "Accuracy routing holds the variant to: below accuracy on a live estimate",
            "p95_latency_ms": "Batch-1 p95 latency timed in the serving replica (ms)",
            "size_bytes": "ONNX file size",
            "in_flight": "Requests queued or running on the variant",
            "build_seconds": "Time it took to build the variant (when it was built, cached or not)",
            "cache_hit": "1 when the variant was loaded from the artifact cache",
            "profile_seconds": "Time spent timing the variant in the serving replica",
        }
        self.variant = {
            name: Gauge(f"tiergate_variant_{name}", text, tag_keys=("variant",))
            for name, text in variant_gauges.items()
        }
        self.state = Gauge(
            "tiergate_variant_state",
            "1 for the variant's state in the live menu, 0 for its other states",
            tag_keys=("variant", "state"),
        )
        self.build_percent = Gauge(
            "tiergate_variant_build_percent",
            "Progress of the variant's build (0..100)",
            tag_keys=("variant",),
        )
        self.tier_target = Gauge("tiergate_tier_slo_target", "SLO target of the tier", tag_keys=("tier",))
        self.tier_bound = Gauge(
            "tiergate_tier_max_latency_ms", "Latency bound of the tier (ms)", tag_keys=("tier",)
        )
        self.tier_objective = Gauge(
            "tiergate_tier_accuracy_objective", "Effective accuracy the tier must keep", tag_keys=("tier",)
        )
        self.tier_floor = Gauge(
            "tiergate_tier_accuracy_floor", "Accuracy floor of the tier (absolute)", tag_keys=("tier",)
        )
        self.in_bound_accuracy = Counter(
            "tiergate_in_bound_accuracy",
            "Accuracy of the serving variant (live estimate if lower), per request served within its bound",
            tag_keys=("tier", "variant"),
        )
        feedback_keys = ("tier", "variant", "bound")
        self.labelled = Counter(
            "tiergate_feedback_labelled", "Images labelled by feedback", tag_keys=feedback_keys
        )
        self.correct = Counter(
            "tiergate_feedback_correct", "Labelled images the variant predicted right", tag_keys=feedback_keys
        )
        self.feedback_items = Counter(
            "tiergate_feedback_items", "Feedback items by outcome", tag_keys=("outcome",)
        )
        self.shadow_requests = Counter(
            "tiergate_shadow_requests", "Answers shadow sampling could compare, by outcome",
            tag_keys=("variant", "outcome"),
        )  # fmt: skip
        self.shadow_compared = Counter(
            "tiergate_shadow_compared", "Images compared with fp32 by shadow sampling", tag_keys=("variant",)
        )
        self.shadow_agreed = Counter(
            "tiergate_shadow_agreed", "Compared images whose top-1 agreed with fp32's", tag_keys=("variant",)
        )
        self.demotions = Counter(
            "tiergate_shadow_demotions", "Demotions and re-admissions on live fidelity",
            tag_keys=("variant", "change"),
        )  # fmt: skip
        self._shadow: deque[tuple[str, str, int, int]] = deque()
        self._answers: deque[tuple[Trace, int]] = deque()
        self._batches: deque[tuple[str, int]] = deque()
        self._feedback: deque[tuple[Outcome, Answer | None, int, int]] = deque()
        self.tiers, self.registry = dict(tiers), registry
        self._bounds = latency_bounds(tiers)
        self._accuracy: dict[str, float] = {}  # each variant's routed accuracy, as describe() last saw
        self._static: list[tuple[object, float, dict[str, str]]] = []  # describe()'s gauges
        self._described = -1  # the registry version the gauges describe

    def request(self, trace: Trace, status_code: int) -> None:
        self._answers.append((trace, status_code))

    def batch(self, variant: str, size: int) -> None:
        self._batches.append((variant, size))

    def feedback(self, outcome: Outcome, answer: Answer | None, labelled: int, correct: int) -> None:
        """One feedback item (``quality.Feedback`` calls this; counted at the next flush)."""
        self._feedback.append((outcome, answer, labelled, correct))

    def shadow(self, variant: str, outcome: str, compared: int, agreed: int) -> None:
        """One shadow outcome (``quality.Shadow`` calls this; counted at the next flush)."""
        self._shadow.append((variant, outcome, compared, agreed))

    def demotion(self, variant: str, change: str) -> None:
        self._shadow.append((variant, change, -1, -1))

    def flush(self) -> None:
        """Hand what was recorded since the last flush to Ray (thread-safe against request())."""
        answers = [self._answers.popleft() for _ in range(len(self._answers))]  # deque: thread-safe
        batches = [self._batches.popleft() for _ in range(len(self._batches))]
        counts: defaultdict[tuple, float] = defaultdict(int)
        for trace, status_code in answers:
            tier, variant = trace.tier or NONE, trace.variant or NONE
            counts[self.requests, ("tier", tier), ("variant", variant), ("code", str(status_code))] += 1
            if trace.reason is not None:
                counts[self.decisions, ("tier", tier), ("variant", variant), ("reason", trace.reason)] += 1
            outcome = slo_outcome(status_code, trace.slo_met, trace.shed)
            if trace.tier is not None and outcome is not None:
                counts[self.slo, ("tier", tier), ("outcome", outcome)] += 1
                if 200 <= status_code < 300:
                    self._count_in_bound(counts, trace)
            if 200 <= status_code < 300 and trace.latency_ms is not None:
                self.latency.observe(trace.latency_ms, tags={"tier": tier, "variant": variant})
        self._count_feedback(counts)
        self._count_shadow(counts)
        for (metric, *tags), count in counts.items():
            if count > 0:  # Ray refuses to add 0 (a variant measured at 0 accuracy)
                metric.inc(count, tags=dict(tags))
        for variant, size in batches:
            self.batch_size.observe(size, tags={"variant": variant})
        for gauge, value, tags in self._static:
            gauge.set(value, tags=tags)

    def _count_in_bound(self, counts: defaultdict[tuple, float], trace: Trace) -> None:
        """A served request within its tier's bound adds its variant's offline accuracy."""
        accuracy = self._accuracy.get(trace.variant or NONE)
        if accuracy is not None and in_bound(self._bounds, trace.tier, trace.latency_ms):
            counts[self.in_bound_accuracy, ("tier", trace.tier), ("variant", trace.variant)] += accuracy

    def _count_feedback(self, counts: defaultdict[tuple, float]) -> None:
        items = [self._feedback.popleft() for _ in range(len(self._feedback))]
        for outcome, answer, labelled, correct in items:
            counts[self.feedback_items, ("outcome", outcome.value)] += 1
            if answer is None or not labelled:
                continue
            tags = (
                ("tier", answer.tier or NONE),
                ("variant", answer.variant),
                ("bound", "met" if answer.in_bound else "missed"),
            )
            counts[self.labelled, *tags] += labelled
            counts[self.correct, *tags] += correct

    def _count_shadow(self, counts: defaultdict[tuple, float]) -> None:
        for variant, outcome, compared, agreed in [self._shadow.popleft() for _ in range(len(self._shadow))]:
            if compared < 0:  # a demotion or re-admission
                counts[self.demotions, ("variant", variant), ("change", outcome)] += 1
                continue
            counts[self.shadow_requests, ("variant", variant), ("outcome", outcome)] += 1
            counts[self.shadow_compared, ("variant", variant)] += compared
            counts[self.shadow_agreed, ("variant", variant)] += agreed

    def describe(self) -> None:
        """Gauges that describe the live menu and the tiers, rebuilt when the registry
        changed. Ray exports a gauge only for the interval it was set in, so ``flush`` sets
        them again each time."""
        registry = self.registry
        if registry is None or registry.version == self._described:
            return
        self._described, static = registry.version, []
        # the live estimate where shadowing put a variant below its menu figure
        self._accuracy = {v.name: v.routed_quality for v in registry if v.entry is not None}
        reference = registry.get(registry.reference)
        reference_quality = reference.quality if reference is not None else None
        for name, state, value in variant_states(registry):
            static.append((self.state, value, {"variant": name, "state": state}))
        for variant in registry:
            entry, engine = variant.entry, variant.engine
            if entry is None or engine is None:
                continue
            values = {
                "accuracy": entry.quality, "fidelity": entry.fidelity, "size_bytes": entry.size_bytes,
                "fidelity_low": Offline.of(entry).low(), "routed_quality": variant.routed_quality,
                "p95_latency_ms": (engine.latency_p95_ms or {1: entry.p95_ms()})[1],
                "build_seconds": entry.build_s, "cache_hit": 1.0 if entry.cache_hit else 0.0,
            }  # fmt: skip
            if engine.profile_s is not None:
                values["profile_seconds"] = engine.profile_s
            for name, value in values.items():
                static.append((self.variant[name], float(value), {"variant": variant.name}))
        for name, tier in self.tiers.items():
            static.append((self.tier_target, tier.slo_target, {"tier": name}))
            if tier.max_latency_ms is not None:
                static.append((self.tier_bound, tier.max_latency_ms, {"tier": name}))
            if reference_quality is None:
                continue
            floor, objective = tier.floor(reference_quality), tier.objective(reference_quality)
            if floor is not None:
                static.append((self.tier_floor, floor, {"tier": name}))
            if objective is not None:
                static.append((self.tier_objective, objective, {"tier": name}))
        self._static = static

    def sample(self) -> None:
        """The live gauges (in-flight requests per variant), then ``describe``."""
        if self.registry is None:
            return
        for name, engine in self.registry.loaded().items():
            self.variant["in_flight"].set(engine.stats.in_flight, tags={"variant": name})
        for name, percent in build_percents(self.registry).items():
            self.build_percent.set(percent, tags={"variant": name})
        self.describe()


def variant_states(registry: MenuRegistry) -> list[tuple[str, str, float]]:
    """(variant, state, 1.0 or 0.0) for every variant and every state: 1 for its current
    state (a variant whose build failed: failed), so a state left shows 0, not a stale 1."""
    return [
        (variant.name, state.value, 1.0 if variant.state is state else 0.0)
        for variant in registry
        for state in VariantState
    ]


def build_percents(registry: MenuRegistry) -> dict[str, float]:
    """Each reported build's progress: its percent, 100 once done, none when unknown."""
    percents = {}
    for name, progress in registry.progress.items():
        percent = 100.0 if progress.state is BuildState.DONE else progress.percent
        if percent is not None:
            percents[name] = percent
    return percents
