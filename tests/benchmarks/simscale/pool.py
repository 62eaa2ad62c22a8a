"""One variant's deployment: replicas with their own queues, as Ray Serve runs them.

    pool = ReplicaPool("fp32", loop, times, rng, on_done=answer, replicas=10, startup_s=10.0)
    pool.submit(request)     # the handle's power-of-two-choices pick, then the replica's queue
    pool.scale_to(25)        # new replicas take requests after startup_s; removed ones drain
    pool.ongoing()           # queued and running in the replicas: what Ray's autoscaler counts

A replica runs one batch at a time (one core, one ORT thread: how the manifest's latencies
were measured), taking up to ``max_batch_size`` of its queued requests as soon as it is free
(tiergate's batching with ``batch_wait_timeout_s`` 0).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from tests.benchmarks.simscale.events import EventLoop
from tests.benchmarks.simscale.service import ServiceTimes


class Replica:
    __slots__ = ("busy", "draining", "queue", "running")

    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self.running = 0  # requests in the batch being run
        self.busy = False
        self.draining = False

    def ongoing(self) -> int:
        return len(self.queue) + self.running


class ReplicaPool:
    def __init__(
        self, name: str, loop: EventLoop, times: ServiceTimes, rng: random.Random,
        on_done: Callable[[str, list[Any], float], None] | None, replicas: int, startup_s: float,
        max_batch_size: int = 32,
    ):  # fmt: skip
        self.name, self.loop, self.times, self.rng = name, loop, times, rng
        self.on_done, self.startup_s, self.max_batch_size = on_done, startup_s, max_batch_size
        self.routable: list[Replica] = [Replica() for _ in range(replicas)]
        self._pending: list[int] = []  # tokens of the replicas being started
        self._token = 0
        self.target = replicas
        self._draining: list[Replica] = []

    @property
    def running(self) -> int:
        return len(self.routable)

    @property
    def starting(self) -> int:
        return len(self._pending)

    def ongoing(self) -> int:
        return sum(replica.ongoing() for replica in self.routable)

    def submit(self, request: Any) -> None:
        """Ray's power-of-two-choices: two distinct random replicas, the one with fewer ongoing."""
        replicas = self.routable
        if len(replicas) == 1:
            replica = replicas[0]
        else:
            count = len(replicas)
            first, second = self.rng.randrange(count), self.rng.randrange(count - 1)
            second += second >= first  # as Ray draws two distinct replicas
            a, b = replicas[first], replicas[second]
            replica = a if a.ongoing() <= b.ongoing() else b
        replica.queue.append(request)
        if not replica.busy:
            self._run(replica)

    def _run(self, replica: Replica) -> None:
        size = min(len(replica.queue), self.max_batch_size)
        batch = [replica.queue.popleft() for _ in range(size)]
        replica.busy, replica.running = True, size
        run_ms = self.times.sample_ms(size, self.rng)
        self.loop.at(self.loop.now + run_ms / 1000, self._finished, replica, batch)

    def _finished(self, replica: Replica, batch: list[Any]) -> None:
        replica.busy, replica.running = False, 0
        self.on_done(self.name, batch, self.loop.now)
        if replica.queue:
            self._run(replica)
        elif replica.draining:
            self._draining.remove(replica)

    def scale_to(self, target: int) -> None:
        """Start or stop replicas toward ``target``: starting ones are cancelled first, then
        the newest running ones stop taking requests and finish what they hold."""
        self.target = target
        surplus = self.running + self.starting - target
        if surplus < 0:
            for _ in range(-surplus):
                self._token += 1
                self._pending.append(self._token)
                self.loop.at(self.loop.now + self.startup_s, self._started, self._token)
            return
        cancelled = min(surplus, self.starting)
        del self._pending[len(self._pending) - cancelled :]
        for _ in range(surplus - cancelled):
            replica = self.routable.pop()
            if replica.busy:
                replica.draining = True
                self._draining.append(replica)

    def _started(self, token: int) -> None:
        if token not in self._pending:  # cancelled while starting
            return
        self._pending.remove(token)
        self.routable.append(Replica())
