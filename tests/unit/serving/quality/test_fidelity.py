"""Live fidelity's sliding window (by count and by age, on a fake clock) and its Wilson interval."""

from __future__ import annotations

import pytest

from tests.support.engines import FakeClock
from tiergate.profiles.measure import wilson_interval
from tiergate.serving.quality import Fidelity, LiveFidelity


def test_the_window_keeps_the_last_images_by_count():
    """Past window_samples images, the oldest go first: 3 disagreements then 5 agreements in a
    window of 5 read 5 of 5."""
    live = LiveFidelity(window_samples=5, window_s=60, clock=FakeClock())
    live.add("int8", agreed=0, compared=3)
    assert live.add("int8", agreed=5, compared=5) == Fidelity(compared=5, agreed=5)


def test_the_window_forgets_images_older_than_window_s():
    """Comparisons older than window_s leave the window, by the injected clock."""
    clock = FakeClock()
    live = LiveFidelity(window_samples=100, window_s=10, clock=clock)
    live.add("int8", agreed=0, compared=4)
    clock.advance(5)
    live.add("int8", agreed=2, compared=2)
    assert live.of("int8") == Fidelity(6, 2)
    clock.advance(6)  # the first four are 11 s old now
    assert live.of("int8") == Fidelity(2, 2)


def test_variants_have_windows_of_their_own_and_reset_clears_one():
    """Each variant counts apart; reset forgets one variant's comparisons only."""
    live = LiveFidelity(window_samples=10, window_s=60, clock=FakeClock())
    live.add("int8", 1, 2)
    live.add("distilled", 3, 3)
    live.reset("int8")
    assert live.of("int8") == Fidelity(0, 0) and live.of("distilled") == Fidelity(3, 3)


def test_figures_give_the_rate_and_the_wilson_interval():
    """The rate is agreed over compared; the interval is the Wilson one, 95% unless told."""
    figures = Fidelity(compared=200, agreed=180)
    assert figures.rate == pytest.approx(0.9)
    assert figures.interval() == wilson_interval(180, 200)
    assert figures.interval(3.29)[1] > figures.interval()[1]
    assert Fidelity(0, 0).rate is None and Fidelity(0, 0).interval() == (0.0, 1.0)
