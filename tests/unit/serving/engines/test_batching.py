"""The one queue-wait estimate (batches_ms) and how waiting requests form a batch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tiergate.serving.engines import DeadlineExceeded, batches_ms
from tiergate.serving.engines.batching import Pending, take_batch


def _linear(batch_size: int) -> float:
    return 10.0 + batch_size  # ms for one run of batch_size images


@pytest.mark.parametrize(
    ("images", "at_once", "expected"),
    [
        (0, 1, 0.0),  # nothing queued: no wait
        (3, 1, _linear(3)),  # one partial batch, timed at its own size
        (8, 1, _linear(8)),  # one full batch
        (9, 1, 2 * _linear(8)),  # the last batch as long as a full one
        (40, 2, 3 * _linear(8)),  # five batches, two at a time: three rounds
        (1, 8, _linear(1)),  # a batch is never split across runs
    ],
)
def test_batches_ms_counts_full_batches_run_at_once_in_rounds(images, at_once, expected):
    """Queued images in batches of max_batch_size, at_once batches per round, each round
    as long as one run of the largest batch."""
    assert batches_ms(images, 8, at_once, _linear) == expected


def test_take_batch_takes_the_oldest_requests_that_fit_and_drops_the_hopeless():
    """The oldest requests fitting one batch are taken; a cancelled one is skipped, and one
    whose deadline is nearer than a run is answered DeadlineExceeded and left out."""

    async def main():
        loop = asyncio.get_running_loop()

        def pending(images, deadline=None):
            return Pending(np.zeros((images, 1), np.float32), loop.create_future(), deadline)

        cancelled, hopeless = pending(1), pending(1, deadline=0.0)
        cancelled.future.cancel()
        first, second, third = pending(3), pending(4), pending(2)
        queue = [cancelled, hopeless, first, second, third]
        taken = take_batch(queue, max_batch_size=8, run_s=0.01, name="v")
        return taken, queue, first, second, third, hopeless

    taken, queue, first, second, third, hopeless = asyncio.run(main())
    assert taken == [first, second] and queue == [third]
    assert isinstance(hopeless.future.exception(), DeadlineExceeded)
