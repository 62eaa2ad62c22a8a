"""Seeded runs of the simulation: deterministic, and the interaction the benchmark reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.simscale.autoscaler import AutoscalingConfig
from tests.benchmarks.simscale.events import EventLoop
from tests.benchmarks.simscale.metrics import counts_between, return_time_s, reversals
from tests.benchmarks.simscale.scenarios import Scenario, Step, run
from tiergate.profiles.menu import Menu

MENU = Path(__file__).resolve().parents[4] / "benchmarks" / "menu.json"  # the committed default-model menu


@pytest.fixture(scope="module")
def menu() -> Menu:
    return Menu.read(MENU)


def small(target: float, horizon_s: float = 200.0) -> Scenario:
    """The accurate tier, 2 fp32 and 2 int8 replicas to start (fp32 allowance 2.5), load tripled at 20 s."""
    config = AutoscalingConfig(min_replicas=2, max_replicas=20, target_ongoing_requests=target)
    return Scenario("small", Step(0.4, 3.0, 20.0, 1e9), config, horizon_s=horizon_s, initial_replicas=2)


def test_events_run_in_time_then_scheduling_order():
    """Callbacks run by clock time; two at the same time run in the order they were scheduled."""
    loop, seen = EventLoop(), []
    loop.at(2.0, seen.append, "late")
    loop.at(1.0, seen.append, "first")
    loop.at(1.0, seen.append, "second")
    loop.run(until=5.0)
    assert seen == ["first", "second", "late"] and loop.now == 5.0


def test_a_seed_gives_the_same_run(menu):
    """Two runs with one seed agree on every figure; another seed gives other arrivals."""
    first, again, other = (run(small(1.0, 60.0), menu, seed) for seed in (3, 3, 4))
    assert first.recorder.served == again.recorder.served
    assert first.recorder.scalings == again.recorder.scalings
    assert first.recorder.arrivals != other.recorder.arrivals


def test_below_the_allowance_the_preferred_variant_scales_and_takes_its_traffic_back(menu):
    """Target under fp32's allowance: fp32 scales up without reversing, 90% of traffic back within 120 s."""
    result = run(small(1.0), menu, seed=1)
    rec = result.recorder
    assert result.preferred == "fp32"
    fp32 = counts_between(rec.scalings["fp32"], 0.0, 200.0)
    assert fp32 and max(fp32) > 2 and reversals([2, *fp32]) == 0
    returned = return_time_s(rec.share("fp32"), rec.times(), 20.0, 200.0, 0.9)
    assert returned is not None and returned <= 120.0


def test_above_the_allowance_routing_stalls_the_upscale(menu):
    """Target above fp32's allowance: routing's move to int8 hides the load, fp32 never scales or returns."""
    rec = run(small(3.0), menu, seed=1).recorder
    assert rec.scalings["fp32"] == []
    assert return_time_s(rec.share("fp32"), rec.times(), 20.0, 200.0, 0.9) is None
