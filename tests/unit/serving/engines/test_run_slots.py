"""RunSlots: when a run may stay on the event loop's thread (a fake clock, no sleeping)."""

from __future__ import annotations

import math

from tests.support.engines import FakeClock
from tiergate.serving.engines import RunSlots


def test_inline_runs_fit_the_spare_share_of_the_tightest_recent_bound():
    """A run is inline only when it fits both inline_max_ms and spare_share of the tightest
    latency bound seen within memory_s; once that bound is older, the next one sets it."""
    clock = FakeClock()
    slots = RunSlots(1, inline_max_ms=25.0, busy=lambda: 1, spare_share=0.5, memory_s=0.2, clock=clock)
    assert slots.inline(20.0) and not slots.inline(26.0)  # no bound seen yet: the cap alone
    slots.saw_bound(5.0)  # a fast request
    slots.saw_bound(60.0)  # an accurate one does not loosen it
    assert slots.tightest_bound_ms() == 5.0
    assert slots.inline(2.0) and not slots.inline(16.0)
    clock.advance(0.3)
    slots.saw_bound(60.0)  # only accurate traffic since
    assert slots.tightest_bound_ms() == 60.0 and slots.inline(16.0)
    slots.saw_bound(None)  # a request with no bound keeps the tighter one
    assert slots.tightest_bound_ms() == 60.0


def test_a_bound_is_forgotten_after_memory_s_without_requests():
    """With no request for longer than memory_s, no bound is remembered (inf)."""
    clock = FakeClock()
    slots = RunSlots(1, memory_s=10.0, clock=clock)
    slots.saw_bound(5.0)
    clock.advance(10.0)
    assert slots.tightest_bound_ms() == 5.0
    clock.advance(0.01)
    assert slots.tightest_bound_ms() == math.inf


def test_no_run_is_inline_while_another_request_is_inside():
    """With busy() above 1 (or inline_max_ms 0), even a run expected to take no time at all is
    handed to the ORT thread."""
    assert not RunSlots(1, inline_max_ms=25.0, busy=lambda: 2).inline(1.0)
    assert not RunSlots(1, inline_max_ms=0.0, busy=lambda: 0).inline(1.0)
    assert RunSlots(1, inline_max_ms=25.0, busy=lambda: 0).inline(1.0)
