"""A bounded, paced load on a gateway for integration tests: at most a given number of
requests, each sent at its scheduled time by one of a few client threads, every answer (or
client error) kept in send order.

    load = PacedLoad(url, bodies, clients=4, rate_per_s=100, total=3000).start()
    until(lambda: load.answered() >= 100)
    ...                                       # break something while it runs
    answers = load.stop()                     # no request sent after this; the answers
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Answer:
    sent_s: float  # scheduled send time, from the load's start
    status: int | None  # None: the client got no HTTP answer (``error`` says why)
    variant: str | None = None
    retried_from: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class PacedLoad:
    """``total`` POSTs of ``/v1/predict`` at ``rate_per_s`` in all, cycling through
    ``bodies``; request i goes at i / rate_per_s, from client thread i % clients, or as soon
    as that client's previous answer is in, until ``stop()``."""

    def __init__(
        self, url: str, bodies: Sequence[dict], clients: int, rate_per_s: float, total: int,
        timeout_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.url, self.bodies, self.clients = url, bodies, clients
        self.rate_per_s, self.total, self.timeout_s = rate_per_s, total, timeout_s
        self.answers: list[Answer | None] = [None] * total
        self._count = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]
        self._started = 0.0

    def start(self) -> PacedLoad:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def answered(self) -> int:
        with self._lock:
            return self._count

    def stop(self) -> list[Answer]:
        """Send no more requests; every answer, in send order, once the last is in."""
        self._stopped.set()
        for thread in self._threads:
            thread.join()
        return [answer for answer in self.answers if answer is not None]

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as http:
            for i in range(index, self.total, self.clients):
                scheduled_s = i / self.rate_per_s
                wait_s = self._started + scheduled_s - time.monotonic()
                if self._stopped.wait(max(0.0, wait_s)):  # pacing: the request's scheduled send time
                    return
                self.answers[i] = _send(http, self.bodies[i % len(self.bodies)], scheduled_s)
                with self._lock:
                    self._count += 1


def _send(http: httpx.Client, body: dict, sent_s: float) -> Answer:
    try:
        response = http.post("/v1/predict", json=body)
    except httpx.HTTPError as error:
        return Answer(sent_s, None, error=f"{type(error).__name__}: {error}")
    try:
        answer = response.json()
    except ValueError:
        return Answer(sent_s, response.status_code, error=response.text[:200])
    return Answer(
        sent_s, response.status_code, answer.get("variant"), answer.get("retried_from"),
        None if response.is_success else str(answer.get("error"))[:200],
    )  # fmt: skip
