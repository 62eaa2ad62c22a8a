"""Whether a replica takes one more request that costs it work (inference, /v1/route,
admin operations): the in-flight cap, the event loop's lag, and who else may be waiting.
Plain code (no HTTP): the front door and the HTTP middleware ask it, and the run slots
read ``contenders``.

    admission = Admission()
    reason = admission.enter(Limits.from_config(serving), connection)  # None: admitted
    ...
    admission.leave()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from tiergate.serving.config import ServingConfig


@dataclass(frozen=True)
class Limits:
    """What the front door refuses before the body is read (``from_config``)."""

    max_body_bytes: int
    max_in_flight: int  # admitted requests (inference, route, admin) inside this process at once
    max_loop_lag_s: float  # how far behind the event loop may run
    body_read_timeout_s: float = 10.0  # an admitted request's body must arrive in full within this

    @classmethod
    def from_config(cls, serving: ServingConfig) -> Limits:
        admission, limits = serving.admission, serving.limits
        return cls(
            limits.max_body_bytes,
            admission.max_in_flight,
            admission.max_loop_lag_ms / 1000,
            limits.body_read_timeout_s,
        )


class LoopLag:
    """How far behind its schedule this event loop runs. A timer due every ``interval_s``
    notes how late it fired. A loop saturated with work is late for everything behind
    that work, requests still unread on their sockets included, so its lag is about how
    long a request has waited before any of our code saw it."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._last_s = 0.0
        self._peak_s = 0.0  # the largest lateness since ``mark``

    def seconds(self) -> float:
        """The last timer's lateness, or the pending timer's when it is overdue already;
        the first call on a loop starts the timer there (a timer left on a closed loop
        never fires, and would read as ever-growing lag)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._last_s, self._peak_s = loop, 0.0, 0.0
            self._schedule()
        return max(self._last_s, loop.time() - self._due)

    def mark(self) -> None:
        """Start watching for the largest lag from now on (``peak_seconds``)."""
        self._peak_s = self.seconds()

    def peak_seconds(self) -> float:
        """The largest lag since ``mark``, a timer overdue now included."""
        return max(self._peak_s, self.seconds())

    def overdue_s(self) -> float:
        """How late the pending timer is now: the loop has been busy at least this long, so
        a request read now may have waited that long unread. 0 when it is on time (unlike
        ``seconds``, no earlier lateness carries over: after a lone request's inline run
        blocked the loop, the next request on that connection waited for nothing)."""
        if self._loop is not asyncio.get_running_loop():
            return 0.0
        return max(0.0, self._loop.time() - self._due)

    def _schedule(self) -> None:
        self._due = self._loop.time() + self.interval_s
        self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._last_s = self._loop.time() - self._due
        self._peak_s = max(self._peak_s, self._last_s)
        self._schedule()


class Admission:
    """How many admitted requests (inference, route, admin) are inside this process, how far
    behind its event loop runs, and whether more than one connection sends them; the
    outermost layer that sees a request admits or refuses it."""

    def __init__(self, sole_connection_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.in_flight, self.clock = 0, clock
        self.peak_in_flight = 0  # the most in flight at once since ``mark``
        self.lag = LoopLag()
        self.sole_connection_s = sole_connection_s
        self._connection: object = None
        self._switched_at = -float("inf")
        # how late any request admitted now would be answered, in words, or None: the
        # gateway's (``watch_lateness``); the door then refuses before reading the body
        self._lateness: Callable[[float], str | None] = lambda waited_ms: None

    def watch_lateness(self, lateness: Callable[[float], str | None]) -> None:
        """Refuse unread a request that routing would shed anyway: ``lateness(waited_ms)``
        says why any request admitted now, having waited ``waited_ms`` unread, would be
        answered too late for every tier recently asked for; None while one could be in time.
        (A refusal here costs a fraction of one after the body is parsed.)"""
        self._lateness = lateness

    def contenders(self) -> int:
        """The requests that work on the event loop may hold up: those inside, plus one
        while requests came over more than one connection in the last
        ``sole_connection_s`` (another may be arriving unread). Over a single HTTP/1.1
        connection the next request cannot come before this one's answer."""
        mixed = self.clock() - self._switched_at <= self.sole_connection_s
        return self.in_flight + mixed

    def enter(self, limits: Limits, connection: object = None, waited_s: float | None = None) -> str | None:
        """Why a request is refused now; None when it is admitted (then ``leave`` once).
        ``connection`` names the connection it came over (ASGI's ``scope["client"]``);
        None counts as a new one. ``waited_s``: how long the request has waited since the
        ingress received it, where the ingress says (else the loop's lag stands for it)."""
        if connection is None or connection != self._connection:
            self._connection, self._switched_at = connection, self.clock()
        lag_s = self.lag.seconds()
        if lag_s >= limits.max_loop_lag_s:
            return (
                f"the replica runs {1000 * lag_s:.0f} ms behind "
                f"(serving.admission.max_loop_lag_ms {1000 * limits.max_loop_lag_s:g})"
            )
        if self.in_flight >= limits.max_in_flight:
            return (
                f"{self.in_flight} requests in flight "
                f"(serving.admission.max_in_flight {limits.max_in_flight})"
            )
        # the loop's lag, not only the pending timer's: a loop this far behind reads and
        # routes every request it admits about that late
        late = self._lateness(1000 * (lag_s if waited_s is None else max(waited_s, lag_s)))
        if late is not None:
            return late
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        return None

    def leave(self) -> None:
        self.in_flight -= 1

    def mark(self) -> None:
        """Start watching for the most requests in flight and the largest loop lag from now
        on (``peak_in_flight``, ``lag.peak_seconds``): whether the replica stayed quiet
        through some work, such as timing its variants."""
        self.peak_in_flight = self.in_flight
        self.lag.mark()
