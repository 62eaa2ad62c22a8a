"""Everything one serving process holds, as a plain object: the live menu, the gateway,
admission, API keys and the metrics sink. The Ray deployments are thin shells around it,
and unit tests build it without Ray.

    replica = Replica.build(spec)                 # opens and times every variant of spec.menu
    await replica.load_variant(entry)             # add or hot-replace one while serving
    await replica.retire_variant("lowrank", "removed from the config")
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from tiergate import settings
from tiergate.profiles.menu import Menu, MenuEntry
from tiergate.profiles.tiers import Tier
from tiergate.serving.admission import Admission, Limits
from tiergate.serving.auth import KeyRing
from tiergate.serving.board import BuildProgress
from tiergate.serving.boardlink import BoardLink
from tiergate.serving.building import apply_build_status
from tiergate.serving.config import ServingConfig
from tiergate.serving.engines import CorruptArtifact, Engine, RunSlots
from tiergate.serving.errors import Conflict, Overloaded, Unavailable
from tiergate.serving.gateway import Gateway, RoutingSettings
from tiergate.serving.inputs import InputDecoder, Preprocess
from tiergate.serving.loading import EngineOpener, concurrent_runs
from tiergate.serving.quality import Answer, Feedback, Outcome, Shadow, SpareCapacity
from tiergate.serving.registry import MenuInfo, MenuRegistry, RegistryError, Variant, drain
from tiergate.serving.trace import Trace

log = logging.getLogger(__name__)


class ReplicaSpec(BaseModel):
    """What a serving replica is built from; the composition root makes it from the config."""

    model_config = ConfigDict(extra="forbid")

    serving: ServingConfig
    tiers: dict[str, Tier]
    preprocess: Preprocess
    menu: Menu
    manifest: str | None = None  # the menu's manifest file, watched for changes (colocated)


class MetricsSink(Protocol):
    def request(self, trace: Trace, status_code: int) -> None: ...

    def batch(self, variant: str, size: int) -> None: ...

    def feedback(self, outcome: Outcome, answer: Answer | None, labelled: int, correct: int) -> None: ...

    def shadow(self, variant: str, outcome: str, compared: int, agreed: int) -> None: ...

    def demotion(self, variant: str, change: str) -> None: ...


class Replica:
    def __init__(
        self,
        spec: ReplicaSpec,
        registry: MenuRegistry,
        gateway: Gateway,
        opener: EngineOpener,
        admission: Admission,
        keys: KeyRing | None = None,
        metrics: MetricsSink | None = None,
        menu_key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        board: BoardLink | None = None,
        feedback: Feedback | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self.spec, self.registry, self.gateway, self.opener = spec, registry, gateway, opener
        self.admission, self.keys, self.metrics, self.clock = admission, keys, metrics, clock
        self.menu_key = menu_key  # a new menu must be signed with it, when set
        self.board = board  # the build board, when one exists: build status and broadcast commands
        # the answers served, kept for late labels (POST /v1/feedback)
        self.feedback = (
            feedback if feedback is not None else Feedback(spec.serving.feedback, spec.tiers, None, clock)
        )
        self.shadow = shadow  # shadow sampling: live fidelity, automatic demotion (None: off)
        self.limits = Limits.from_config(spec.serving)
        self._draining: set[asyncio.Task] = set()  # old engines answering what they hold
        # re-profiling times on its own thread, never the default pool requests decode in
        self._profiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiergate-reprofile")
        self.reprofiling = False  # a re-profile is timing now
        self._reprofiled_at = -math.inf  # clock time the last re-profile's timing ended

    @classmethod
    def build(
        cls,
        spec: ReplicaSpec,
        *,
        admission: Admission | None = None,
        remote: Callable[[MenuRegistry], Mapping[str, Engine]] | None = None,
        metrics: Callable[[MenuRegistry], MetricsSink] | None = None,
        clock: Callable[[], float] = time.monotonic,
        board: BoardLink | None = None,
    ) -> Replica:
        """Open every variant of ``spec.menu`` in this process (or, per_variant topology,
        take the engines ``remote`` makes for the new live menu) into a fresh live menu. A
        variant that does not load is marked failed; the reference (fp32) must load. With
        ``$TIERGATE_MENU_KEY`` set, an unsigned or altered menu is refused (MenuSignatureError)."""
        serving, menu = spec.serving, spec.menu
        menu_key = settings.menu_key()
        menu.verify(menu_key, source=menu_source(spec))
        admission = admission if admission is not None else Admission(clock=clock)
        registry = MenuRegistry(MenuInfo.of(menu), reference=menu.variants[0].name, clock=clock)
        sink = metrics(registry) if metrics is not None else None
        slots = RunSlots(
            concurrent_runs(serving), serving.batching.inline_run_max_ms, admission.contenders,
            spare_share=1.0 - serving.routing.latency_headroom, clock=clock,
        )  # fmt: skip
        opener = EngineOpener(
            serving,
            menu.input_shape,
            slots,
            on_batch=sink.batch if sink else None,
            on_change=registry.changed,
        )
        remote_engines = remote(registry) if remote is not None else None
        for entry in menu.variants:
            try:
                engine = remote_engines[entry.name] if remote_engines is not None else opener.open(entry)
            except (KeyError, CorruptArtifact, OSError) as error:
                registry.fail(entry.name, f"did not load: {error}", entry)
                continue
            registry.add(entry, engine)
        if not registry.ready():
            raise RuntimeError(f"{registry.reference} could not be loaded; refusing to serve without it")
        decoder = InputDecoder(menu.input_shape, serving.limits, spec.preprocess)
        gateway = Gateway(registry, spec.tiers, decoder, routing_settings(serving), slots, clock=clock)
        admission.watch_lateness(gateway.lateness)  # refuse unread what routing would shed
        keys = KeyRing.load(serving.auth, settings.api_keys(), clock) if serving.auth.enabled else None
        classes = len(registry.info.classes) or None
        feedback = Feedback(serving.feedback, spec.tiers, classes, clock, sink.feedback if sink else None)
        spare = SpareCapacity(
            serving, admission, lambda: gateway.view().shared_wait_ms(slots), gateway.lateness
        )
        shadow = Shadow.build(serving, registry, spare.busy, spec.tiers, sink, clock)
        return cls(
            spec, registry, gateway, opener, admission, keys, sink, menu_key, clock, board, feedback, shadow
        )

    def served(self, request_id: str, trace: Trace, top1: list[int]) -> None:
        """An inference answer went out (the HTTP layer calls this): kept for label feedback,
        offered to shadow sampling."""
        self.feedback.served(request_id, trace, top1)
        if self.shadow is not None:
            self.shadow.offer(request_id, trace, top1)

    def record(self, trace: Trace, status_code: int) -> None:
        """An inference request's answer went out (the HTTP layer calls this)."""
        if self.metrics is not None:
            self.metrics.request(trace, status_code)

    def apply_build_status(self, status: Mapping[str, BuildProgress]) -> None:
        """The board's build status on the live menu (``building.apply_build_status``)."""
        apply_build_status(self.registry, status)

    # -- admin operations ------------------------------------------------------------------------
    async def load_variant(self, entry: MenuEntry) -> str:
        """Open ``entry``'s ONNX file off the event loop and put it on the live menu: a new
        variant joins, a known one is swapped without failing the requests it holds."""
        try:
            engine = await asyncio.to_thread(self.opener.open, entry)
        except (CorruptArtifact, OSError) as error:
            current = self.registry.get(entry.name)
            if current is None or not current.loaded:  # a loaded one keeps serving its old file
                self.registry.fail(entry.name, f"did not load: {error}", entry)
            raise
        current = self.registry.get(entry.name)  # after the wait: the menu may have changed
        if current is not None and current.loaded:
            old = self.registry.replace(entry, engine)
            task = asyncio.get_running_loop().create_task(
                drain(old, self.spec.serving.ray.shutdown_timeout_s)
            )
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
            return "replaced"
        self.registry.add(entry, engine)
        return "added"

    async def reconcile(self, menu: Menu, source: str = "the new menu") -> dict[str, list[str]]:
        """Make the live menu match ``menu``: new variants join, variants whose artifact
        changed (sha256) are swapped in, re-measured ones take their new figures, and
        variants no longer listed are retired. The requests in flight are all answered.
        With a menu key, an unsigned or altered ``menu`` (from ``source``) is refused
        (MenuSignatureError) and the live menu stays as it is."""
        menu.verify(self.menu_key, source)
        changes: dict[str, list[str]] = {"added": [], "replaced": [], "remeasured": [], "retired": []}
        for entry in menu.variants:
            current = self.registry.get(entry.name)
            if current is not None and current.loaded and current.entry.sha256 == entry.sha256:
                if current.entry != entry:
                    self.registry.replace(entry, current.engine)
                    changes["remeasured"].append(entry.name)
                continue
            try:
                changes[await self.load_variant(entry)].append(entry.name)
            except (CorruptArtifact, OSError) as error:
                log.error("variant %s not loaded from the new menu: %s", entry.name, error)
        wanted = {entry.name for entry in menu.variants}
        for variant in self.registry:
            if variant.loaded and variant.name not in wanted and variant.name != self.registry.reference:
                await self.retire_variant(variant.name, "no longer in the menu")
                changes["retired"].append(variant.name)
        return changes

    async def retire_variant(self, name: str, reason: str) -> None:
        """Take ``name`` off the menu; it answers what it holds, then closes."""
        try:
            engine = self.registry.retire(name, reason)
        except RegistryError as error:
            raise Conflict(f"variant: {error}", field="variant") from None
        await drain(engine, self.spec.serving.ray.shutdown_timeout_s)

    async def reprofile(self, own_in_flight: int = 0) -> dict[str, dict[int, float]]:
        """Time every loaded variant again, as this replica runs now, and route on that.
        One at a time, at most once per ``serving.admission.reprofile_min_interval_s``
        (else ``Overloaded``), and only while the replica is quiet: timings taken under load
        would become the routing profile, so when other requests or loop lag pass their
        ``reprofile_*`` limits before or during the timing the profile stays as it was
        (``Unavailable``). ``own_in_flight``: admitted requests that are this call (1 over HTTP)."""
        self._may_start_reprofile()
        self.reprofiling = True
        try:
            return await self._retime_quietly(own_in_flight)
        finally:
            self.reprofiling = False

    def _may_start_reprofile(self) -> None:
        interval_s = self.spec.serving.admission.reprofile_min_interval_s
        if self.reprofiling:
            raise Overloaded(
                "a re-profile is running on this replica already", retry_after_s=max(1, math.ceil(interval_s))
            )
        wait_s = self._reprofile_wait_s()
        if wait_s > 0:
            raise Overloaded(
                f"re-profiled {self.clock() - self._reprofiled_at:.0f} s ago; at most once per "
                f"{interval_s:g} s (serving.admission.reprofile_min_interval_s)",
                retry_after_s=math.ceil(wait_s),
            )

    def _reprofile_wait_s(self) -> float:
        interval_s = self.spec.serving.admission.reprofile_min_interval_s
        return max(0.0, self._reprofiled_at + interval_s - self.clock())

    async def _retime_quietly(self, own_in_flight: int) -> dict[str, dict[int, float]]:
        """Each variant in turn, checking after each that the replica stayed quiet; if it
        did not, every variant gets its previous timing back."""
        self.admission.mark()
        self._refuse_if_busy(own_in_flight)
        measured = self.registry.measured()
        previous = [(v.engine, v.engine.latency_p95_ms, v.engine.profile_s) for v in measured]
        self._reprofiled_at = self.clock()  # timing starts: the interval runs from here (and its end)
        try:
            for variant in measured:
                await self._retime(variant)
                self._refuse_if_busy(own_in_flight)
        except Unavailable:
            for engine, latency, profile_s in previous:
                engine.latency_p95_ms = latency
                if engine.local:
                    engine.profile_s = profile_s
            raise
        finally:
            self._reprofiled_at = self.clock()
            self.registry.changed()
        return {name: dict(engine.latency_p95_ms) for name, engine in self.registry.loaded().items()}

    async def _retime(self, variant: Variant) -> None:
        if variant.engine.local:  # off the event loop: requests keep being served meanwhile
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._profiler, self.opener.retime, variant.engine, variant.entry)
        else:  # its own deployment times it
            await variant.engine.retime(force=True)

    def _refuse_if_busy(self, own_in_flight: int) -> None:
        """Unavailable when, since ``admission.mark``, other requests in flight or the event
        loop's lag passed the re-profile limits."""
        limits, admission = self.spec.serving.admission, self.admission
        others = admission.peak_in_flight - own_in_flight
        lag_ms = 1000 * admission.lag.peak_seconds()
        if others > limits.reprofile_max_in_flight:
            reason = (
                f"{others} other requests in flight "
                f"(serving.admission.reprofile_max_in_flight {limits.reprofile_max_in_flight})"
            )
        elif lag_ms >= limits.reprofile_max_loop_lag_ms:
            reason = (
                f"the event loop ran {lag_ms:.0f} ms behind "
                f"(serving.admission.reprofile_max_loop_lag_ms {limits.reprofile_max_loop_lag_ms:g})"
            )
        else:
            return
        raise Unavailable(
            f"replica busy, not re-profiled (the current profile stays): {reason}",
            retry_after_s=max(5, math.ceil(self._reprofile_wait_s())),
        )

    def reload_keys(self) -> int:
        """Read the keys again; a file that does not load leaves the current keys in place."""
        auth = self.spec.serving.auth
        if not auth.enabled:
            raise Conflict("serving.auth.enabled is false: there are no keys to reload")
        try:
            keys = KeyRing.load(auth, settings.api_keys(), self.gateway.clock)
        except Exception as error:  # whatever the file holds (even nesting deep enough to overflow)
            current = len(self.keys) if self.keys is not None else 0
            raise Conflict(f"keys not reloaded, the {current} current keys stay: {error}") from None
        if self.keys is not None:
            keys.keep_buckets_from(self.keys)
        self.keys = keys
        log.info("API keys reloaded: %d keys", len(keys))
        return len(keys)

    def close(self) -> None:
        for engine in self.registry.loaded().values():
            engine.close()
        if self.shadow is not None:
            self.shadow.close()
        self._profiler.shutdown(wait=False)


def menu_source(spec: ReplicaSpec) -> str:
    """Where a replica's menu came from, for errors: its manifest file, if it has one."""
    return f"menu {spec.manifest}" if spec.manifest is not None else "the menu handed to this replica"


def routing_settings(serving: ServingConfig) -> RoutingSettings:
    return RoutingSettings(
        default_tier=serving.routing.default_tier,
        latency_headroom=serving.routing.latency_headroom,
        failure_cooldown_s=serving.routing.failure_cooldown_s,
        request_timeout_s=serving.admission.request_timeout_s,
        late_grace=serving.admission.late_grace,
        max_overhead_ms=serving.routing.max_overhead_ms,
    )
