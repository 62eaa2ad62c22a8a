"""Helpers for tests of the engines: settings with the serving config's defaults, and a
clock the test moves by hand.

    engine = VariantEngine.load("tiny", path, sha256, engine_settings(max_batch_size=8))
    clock = FakeClock()
    slots = RunSlots(1, clock=clock)
    clock.advance(0.3)
"""

from __future__ import annotations

from tiergate.serving.config import ServingConfig
from tiergate.serving.engines import EngineSettings


def engine_settings(**overrides) -> EngineSettings:
    """``EngineSettings`` as the serving config's defaults make them, with ``overrides``
    (``EngineSettings`` field names). ``max_runs`` is 1 unless overridden: the config's
    default, every core the process may use, would make tests differ between machines."""
    serving = ServingConfig()
    settings = {
        "threads": serving.threads_per_variant,
        "max_batch_size": serving.max_batch_size,
        "batch_wait_timeout_s": serving.batch_wait_timeout_s,
        "max_queued": serving.max_queued_per_variant,
        "run_niceness": serving.run_niceness,
        "max_runs": serving.max_runs_per_variant or 1,
    }
    return EngineSettings(**{**settings, **overrides})


class FakeClock:
    """A monotonic clock that stands still until ``advance``d."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
