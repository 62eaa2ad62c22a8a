"""Fault injection for chaos tests and drills, outside the production engine.

    inject_fault(engine, rate=0.5, delay_s=0.2)  # half the runs fail, every run 200 ms slower
    inject_fault(engine, 0.0)  # back to normal

``FaultySession`` wraps an ORT session with the surface the engine uses (``run``,
``get_inputs``); ``inject_fault`` puts one around an in-process engine's session.
"""

from __future__ import annotations

import random
import time

import numpy as np


class InjectedFault(RuntimeError):
    """A failure injected on purpose, for chaos tests and drills."""


class FaultySession:
    """``session``, except that ``rate`` of its runs raise ``InjectedFault`` and every run
    takes ``delay_s`` longer. ``unfaulted_p95_ms``: the engine's profile before any fault,
    kept so that faults injected again start from it."""

    def __init__(
        self,
        session,
        rate: float,
        delay_s: float,
        unfaulted_p95_ms: dict[int, float] | None = None,
        name: str = "session",
    ) -> None:
        self.session, self.rate, self.delay_s, self.name = session, rate, delay_s, name
        self.unfaulted_p95_ms = unfaulted_p95_ms
        self._chaos = random.Random(0)

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.rate and self._chaos.random() < self.rate:
            raise InjectedFault(f"{self.name}: injected fault (rate {self.rate})")
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.session.run(output_names, feed)


def inject_fault(engine, rate: float, delay_s: float = 0.0) -> None:
    """Make ``rate`` of ``engine``'s runs fail and every run take ``delay_s`` longer, with
    the profile routing uses slowed to match (as a re-profile on slower hardware would),
    from the profile it had before any fault: calls do not compound. Then the engine's
    ``on_change`` is called (the gateway re-reads the profile)."""
    session = engine.session
    if isinstance(session, FaultySession):
        session.rate, session.delay_s = rate, delay_s
    else:
        session = FaultySession(session, rate, delay_s, dict(engine.latency_p95_ms or {}), engine.name)
        engine.session = session
    slowed = {b: ms + 1000 * delay_s for b, ms in session.unfaulted_p95_ms.items()}
    engine.latency_p95_ms = slowed or None
    if engine.on_change is not None:
        engine.on_change()
