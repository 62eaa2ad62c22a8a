"""An in-process engine's queue: how waiting requests form a batch.

    batch = take_batch(pending, max_batch_size=32, run_s=0.004, name="int8")

How long queued work takes is the routing policy's one estimate,
``tiergate.profiles.policy.batches_ms``: ``VariantEngine.expected_wait_ms`` (its deadline
check), ``queued_work_ms`` (the shared wait the gateway predicts for every in-process
variant) and the policy's wait for a remote variant all use it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from tiergate.serving.engines.errors import DeadlineExceeded


@dataclass
class Pending:
    """A request waiting in an engine's queue."""

    x: np.ndarray
    future: asyncio.Future
    deadline: float | None = None  # time.monotonic()


def take_batch(pending: list[Pending], max_batch_size: int, run_s: float, name: str) -> list[Pending]:
    """Take from ``pending`` the oldest requests whose images fit in one batch. A request
    that was cancelled (its client left) is skipped, and one that could no longer finish by
    its deadline (a run takes ``run_s``) is answered ``DeadlineExceeded`` now instead of
    taking a run whose answer would come too late (under overload, running those would
    leave no run for anyone else)."""
    taken, images = [], 0
    now = time.monotonic()
    while pending and (not taken or images + len(pending[0].x) <= max_batch_size):
        request = pending.pop(0)
        if request.future.done():
            continue
        if request.deadline is not None and request.deadline - now < run_s:
            request.future.set_exception(
                DeadlineExceeded(f"{name}: it could no longer be answered by its deadline")
            )
            continue
        taken.append(request)
        images += len(request.x)
    return taken
