"""The criteria a simulation run is judged by."""

from __future__ import annotations

import numpy as np

from tests.benchmarks.simscale.metrics import return_time_s, reversals


def test_reversals_count_changes_of_direction_only():
    """Steps in one direction are one trend; up-then-down and down-then-up count once each."""
    assert reversals([10, 12, 15, 15, 20]) == 0
    assert reversals([10, 12, 15, 15, 13, 14]) == 2
    assert reversals([10]) == 0


def test_return_time_needs_the_share_to_stay_up():
    """The return is the first bin from which the share stays at the floor, not the first touch."""
    times = np.arange(1, 11) * 10.0
    shares = np.array([1.0, 0.7, 0.95, 0.8, 0.92, 0.93, 0.97, 0.99, 0.5, 0.5])
    assert return_time_s(shares, times, start_s=10.0, end_s=80.0, floor=0.9) == 40.0
    assert return_time_s(shares, times, start_s=10.0, end_s=100.0, floor=0.9) is None
