"""Ewma and LiveCounters: the arithmetic of the engines' recent averages (a fake clock)."""

from __future__ import annotations

import pytest

from tests.support.engines import FakeClock
from tiergate.serving.engines import Ewma, LiveCounters


def test_ewma_takes_its_first_sample_as_it_is_without_an_initial_value():
    """With no initial value, value is None until the first sample, which it then equals."""
    average = Ewma(0.2)
    assert average.value is None
    assert average.update(7.0) == 7.0 and average.value == 7.0


@pytest.mark.parametrize(("weight", "keep"), [(0.2, 0.8), (0.1, 0.9)])
def test_ewma_keeps_the_exact_arithmetic_of_the_averages_it_replaced(weight, keep):
    """Each update is exactly keep * value + weight * sample, as the averages it replaced
    wrote it (0.8/0.2 for run latency; 0.9/0.1 for the hop, slowdown and overhead)."""
    average, expected = Ewma(weight, initial=1.0), 1.0
    for sample in (3.7, 0.1, 12.25, 5.0, 0.333):
        expected = keep * expected + weight * sample
        assert average.update(sample) == expected  # bit for bit, not approximately


def test_ewma_refuses_a_weight_outside_zero_to_one():
    """A sample weight of 0 (never moves) or above 1 is a ValueError."""
    for weight in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="sample_weight"):
            Ewma(weight)


def test_slowdown_relaxes_toward_one_without_traffic():
    """A recorded slowdown halves its excess over 1 every 2 s without new runs."""
    clock = FakeClock()
    stats = LiveCounters(clock)
    stats.record_slowdown(10.0)
    assert stats.slowdown == pytest.approx(1.9, abs=0.01)
    clock.advance(2.0)
    assert stats.slowdown == pytest.approx(1.45, abs=0.01)


def test_a_new_slowdown_sample_starts_from_the_relaxed_value():
    """After 2 s without runs, a sample averages with the relaxed slowdown, not the stale one,
    and a ratio above 10 counts as 10."""
    clock = FakeClock()
    stats = LiveCounters(clock)
    stats.record_slowdown(10.0)  # 1.9
    clock.advance(2.0)  # relaxed to 1.45
    stats.record_slowdown(50.0)
    assert stats.slowdown == pytest.approx(0.9 * 1.45 + 0.1 * 10.0)
    stats.reset_slowdown()
    assert stats.slowdown == 1.0


def test_run_latency_and_hop_are_averaged_and_batch_sizes_bounded():
    """ewma_ms is None until a run, then 0.8/0.2-averaged; hop_ms starts at 0 and is
    0.9/0.1-averaged; only the last 256 batch sizes are kept."""
    stats = LiveCounters()
    assert stats.ewma_ms is None and stats.hop_ms == 0.0
    stats.record(10.0, 1)
    stats.record(20.0, 2)
    assert stats.ewma_ms == 0.8 * 10.0 + 0.2 * 20.0
    stats.record_hop(5.0)
    assert stats.hop_ms == 0.9 * 0.0 + 0.1 * 5.0
    for size in range(300):
        stats.record(1.0, size)
    assert len(stats.batch_sizes) == 256 and stats.batch_sizes[-1] == 299
