"""The test-support fault injection (tests/support/chaos.py) on a real engine."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.chaos import InjectedFault, inject_fault
from tests.support.engines import engine_settings
from tiergate.compression.cache import file_sha256
from tiergate.serving.engines import VariantEngine


def test_injected_faults_fail_runs_and_slow_the_profile_without_compounding(model_file, digits):
    """rate 1 makes every run raise InjectedFault; delay_s slows the profile by that much
    from the unfaulted one however often it is injected; 0 restores both, and every call
    tells on_change."""
    changes = []
    engine = VariantEngine.load(
        "tiny", model_file, file_sha256(model_file), engine_settings(), on_change=lambda: changes.append(1)
    )
    engine.latency_p95_ms = {1: 2.0, 8: 5.0}
    inject_fault(engine, 1.0)
    with pytest.raises(InjectedFault, match="tiny: injected fault"):
        asyncio.run(engine.infer(digits.test.x[:1]))
    inject_fault(engine, 0.0, 0.1)
    inject_fault(engine, 0.0, 0.1)
    assert engine.latency_p95_ms == {1: 102.0, 8: 105.0}
    inject_fault(engine, 0.0)
    assert engine.latency_p95_ms == {1: 2.0, 8: 5.0} and len(changes) == 4
    assert asyncio.run(engine.infer(digits.test.x[:1])).shape == (1, 10)
    engine.close()
