"""A variant's engine: what runs its requests, in this process or in its own deployment.

    from tiergate.serving.engines import EngineSettings, RunSlots, VariantEngine

    slots = RunSlots(size=4)
    engine = VariantEngine.load("int8", path, sha256, settings, run_slots=slots, on_change=registry.changed)
    logits = await engine.infer(batch, deadline)

``Engine`` is the interface the gateway uses; ``VariantEngine`` (in-process, ORT) and
``RemoteEngine`` (a Ray Serve deployment per variant) implement it. The errors are the
engines' own; the gateway turns them into its answers.
"""

from tiergate.profiles.policy import batches_ms
from tiergate.serving.engines.base import Engine
from tiergate.serving.engines.errors import (
    CorruptArtifact,
    DeadlineExceeded,
    QueueFull,
    VariantFailed,
    remote_reason,
)
from tiergate.serving.engines.local import EngineSettings, VariantEngine
from tiergate.serving.engines.remote import RemoteEngine
from tiergate.serving.engines.run_slots import RunSlots
from tiergate.serving.engines.stats import Ewma, LiveCounters

__all__ = [
    "CorruptArtifact",
    "DeadlineExceeded",
    "Engine",
    "EngineSettings",
    "Ewma",
    "LiveCounters",
    "QueueFull",
    "RemoteEngine",
    "RunSlots",
    "VariantEngine",
    "VariantFailed",
    "batches_ms",
    "remote_reason",
]
