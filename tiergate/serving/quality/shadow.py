"""Shadow sampling: a share of answers, chosen by request id, is run again on the reference
variant (fp32) after the client has its answer, and the two top-1 classes are compared per
image. That gives each variant's live fidelity (``fidelity``), on which ``demotion`` demotes
and re-admits variants.

    shadow = Shadow(serving.shadow, registry, ShadowRunner(registry, serving.shadow), spare.busy, demoter)
    shadow.offer(request_id, trace, top1)    # the request path, per answer: O(1), never waits

A shadow run never delays or changes an answer: it starts only while the replica has spare
capacity (``busy()`` says why not) and its runs are within ``max_cpu_share`` of a core
(``RunBudget``), at most ``max_pending`` at once (the rest are dropped, and counted), and
runs on a thread of its own at the lowest CPU priority. Demoted variants
are probed the same way: each sampled input is also run on them and compared with the
reference's answer, which is how a demoted variant earns re-admission.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig, ShadowConfig
from tiergate.serving.quality.demotion import Demoter, Offline
from tiergate.serving.quality.fidelity import LiveFidelity
from tiergate.serving.quality.spare import loosest_floor
from tiergate.serving.registry import MenuRegistry
from tiergate.serving.trace import Trace

log = logging.getLogger(__name__)

# outcomes of an answer shadow sampling could compare (its variant is not the reference)
NOT_SAMPLED, SHADOWED, BUSY, DROPPED, FAILED = "not_sampled", "shadowed", "busy", "dropped", "failed"
OVER_BUDGET = "over_budget"  # the shadow runs had used their share of a core (max_cpu_share)
PROBED = "probed"  # a demoted variant run on a sampled input (no client answer of its own)
_SCALE = 1 << 64
BURST_S = 0.1  # shadow run time the budget lets through at once after a quiet spell

# (variant, outcome, images compared, of them agreed)
ShadowSink = Callable[[str, str, int, int], None]
Run = Callable[[str, np.ndarray], Awaitable[np.ndarray]]


def sampled(request_id: str, rate: float) -> bool:
    """Whether ``request_id`` is shadowed at ``rate``: the same answer for the same id on
    every replica and run (a 64-bit BLAKE2b hash of the id, below ``rate`` of its range)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * _SCALE


def _idle_priority() -> None:
    """The shadow thread runs at nice 19 (Linux: per thread): it takes what the event loop
    and the serving runs leave of the CPU."""
    if hasattr(os, "setpriority"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class ShadowRunner:
    """Runs a variant on an input for shadowing: an in-process variant on one thread of its
    own at nice 19 (never the event loop's thread, never a run slot a client's run waits
    for); a remote one (per_variant topology) through its ``infer``, within ``timeout_s``."""

    def __init__(self, registry: MenuRegistry, config: ShadowConfig) -> None:
        self.registry, self.timeout_s = registry, config.timeout_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tiergate-shadow", initializer=_idle_priority)

    async def __call__(self, name: str, x: np.ndarray) -> np.ndarray:
        engine = self.registry.loaded().get(name)
        if engine is None:
            raise LookupError(f"{name} is not loaded")
        if not engine.local:
            return await engine.infer(x, time.monotonic() + self.timeout_s)
        run = asyncio.get_running_loop().run_in_executor(self._thread, engine.run, x)
        return await asyncio.wait_for(run, self.timeout_s)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


class RunBudget:
    """At most ``share`` of one core's time for shadow runs over any stretch: each run's time
    is spent from a bucket that refills at ``share`` seconds per second, up to ``burst_s``.
    A run the bucket cannot cover is skipped, so shadowing costs serving a bounded share of
    the CPU however cheap the served variants are next to the reference."""

    def __init__(self, share: float, burst_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share, self.burst_s, self.clock = share, burst_s, clock
        self._level_s, self._at = burst_s, clock()

    def allows(self) -> bool:
        self._refill()
        return self._level_s > 0

    def spend(self, seconds: float) -> None:
        self._refill()
        self._level_s -= seconds

    def _refill(self) -> None:
        now = self.clock()
        self._level_s = min(self.burst_s, self._level_s + (now - self._at) * self.share)
        self._at = now


class Shadow:
    """Chooses the answers to shadow, runs them off the request path and counts the result."""

    def __init__(
        self,
        config: ShadowConfig,
        registry: MenuRegistry,
        run: Run,
        busy: Callable[[], str | None],
        demoter: Demoter,
        on_outcome: ShadowSink | None = None,
        budget: RunBudget | None = None,
    ) -> None:
        self.config, self.registry, self.run, self.busy = config, registry, run, busy
        self.demoter, self.live, self.on_outcome = demoter, demoter.live, on_outcome
        self.budget = budget if budget is not None else RunBudget(config.max_cpu_share, BURST_S)
        self._pending: set[asyncio.Task] = set()

    def offer(self, request_id: str, trace: Trace, top1: Sequence[int]) -> None:
        """An answer went out: shadow it if its id is sampled and the replica has room."""
        x, trace.inputs = trace.inputs, None  # the trace outlives the request (metrics)
        variant, reference = trace.variant, self.registry.reference
        if x is None or variant is None or self.config.rate <= 0:
            return
        probes = self.probes(variant)
        if variant == reference and not probes:
            return  # agreement with itself: nothing to learn
        outcome = self._admit(request_id)
        if outcome != SHADOWED:
            if variant != reference:
                self._count(variant, outcome)
            return
        task = asyncio.get_running_loop().create_task(self._compare(variant, x, tuple(top1), probes))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def probes(self, served: str) -> list[str]:
        """The variants demoted here, other than ``served``: each sampled input is run on them too."""
        if not self.demoter.demoted:
            return []
        return [name for name in self.registry.demoted if name in self.demoter.demoted and name != served]

    def _admit(self, request_id: str) -> str:
        if not sampled(request_id, self.config.rate):
            return NOT_SAMPLED
        if len(self._pending) >= self.config.max_pending:
            return DROPPED
        if not self.budget.allows():
            return OVER_BUDGET
        if self.busy() is not None:
            return BUSY
        return SHADOWED

    async def _compare(self, served: str, x: np.ndarray, top1: tuple[int, ...], probes: list[str]) -> None:
        """The reference's top-1 (the client's own when the reference served it), compared
        with the served variant's answer and with each probed variant's."""
        try:
            reference = top1
            if served != self.registry.reference:
                reference = tuple(self._top1(await self._timed(self.registry.reference, x)))
                self._compared(served, SHADOWED, top1, reference)
            for name in probes:
                self._compared(name, PROBED, tuple(self._top1(await self._timed(name, x))), reference)
        except Exception as error:  # a variant swapped or retired meanwhile, a timeout, an ORT error
            log.warning("shadow run for %s failed: %s", served, error)
            if served != self.registry.reference:
                self._count(served, FAILED)

    async def _timed(self, name: str, x: np.ndarray) -> np.ndarray:
        """One shadow run, its time spent from the budget (failed or not)."""
        started = time.perf_counter()
        try:
            return await self.run(name, x)
        finally:
            self.budget.spend(time.perf_counter() - started)

    def _compared(self, name: str, outcome: str, answer: tuple[int, ...], reference: tuple[int, ...]) -> None:
        agreed = sum(a == b for a, b in zip(answer, reference, strict=True))
        self._count(name, outcome, len(reference), agreed)
        self.demoter.observe(name, agreed, len(reference))

    @staticmethod
    def _top1(logits: np.ndarray) -> list[int]:
        return logits.argmax(1).tolist()

    def _count(self, variant: str, outcome: str, compared: int = 0, agreed: int = 0) -> None:
        if self.on_outcome is not None:
            self.on_outcome(variant, outcome, compared, agreed)

    @classmethod
    def build(
        cls,
        serving: ServingConfig,
        registry: MenuRegistry,
        busy: Callable[[], str | None],
        tiers: Mapping[str, Tier],
        sink=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Shadow:
        """A replica's shadow sampling, its live fidelity and demotions (on the loosest floor of
        ``tiers``); ``sink``: the metrics."""
        config = serving.shadow

        def floor() -> float | None:
            return loosest_floor(tiers, registry.reference_quality())

        live = LiveFidelity(config.window_samples, config.window_s, clock)
        demoter = Demoter(registry, live, config, floor, sink.demotion if sink is not None else None)
        runner = ShadowRunner(registry, config)
        budget = RunBudget(config.max_cpu_share, BURST_S, clock)
        return cls(config, registry, runner, busy, demoter, sink.shadow if sink is not None else None, budget)

    def describe(self, name: str) -> dict | None:
        """A variant's live fidelity for ``/v1/variants``: images compared in its window (since
        its demotion, when demoted), the share agreed with its Wilson 95% interval, and the
        offline figure with its interval's lower bound. None for the reference."""
        variant = self.registry.get(name)
        if name == self.registry.reference or variant is None or variant.entry is None:
            return None
        figures, offline = self.live.of(name), Offline.of(variant.entry)
        return {
            "compared": figures.compared, "agreed": figures.agreed, "fidelity": figures.rate,
            "ci95": list(figures.interval()) if figures.compared else None,
            "offline": offline.fidelity, "offline_low": offline.low(), "probed": name in self.demoter.demoted,
        }  # fmt: skip

    def close(self) -> None:
        if isinstance(self.run, ShadowRunner):
            self.run.close()

    async def drain(self) -> None:
        """Wait for the shadow runs started so far (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
