"""Helpers for tests of the engines: settings with the serving config's defaults, and a
clock the test moves by hand.

    engine = VariantEngine.load("tiny", path, sha256, engine_settings(max_batch_size=8))
    clock = FakeClock()
    slots = RunSlots(1, clock=clock)
    clock.advance(0.3)
"""

from __future__ import annotations

from dataclasses import replace

from tiergate.serving.config import ServingConfig
from tiergate.serving.engines import EngineSettings
from tiergate.serving.loading import engine_settings as from_config


def engine_settings(**overrides) -> EngineSettings:
    """``EngineSettings`` as the serving config's defaults make them, with ``overrides``
    (``EngineSettings`` field names). ``max_runs`` is 1 unless overridden: the config's
    default, every core the process may use, would make tests differ between machines."""
    serving = ServingConfig(batching={"max_runs_per_variant": 1})
    return replace(from_config(serving), **overrides)


class FakeClock:
    """A monotonic clock that stands still until ``advance``d."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
