"""The in-process variant engine with a real ONNX Runtime session: batching, isolation, bounds."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from tests.support.chaos import inject_fault
from tests.support.engines import engine_settings
from tiergate.compression.cache import file_sha256
from tiergate.serving.engines import (
    CorruptArtifact,
    DeadlineExceeded,
    QueueFull,
    RunSlots,
    VariantEngine,
)


def _engine(path, run_slots: RunSlots | None = None, on_batch=None, **settings) -> VariantEngine:
    return VariantEngine.load(
        "tiny", path, file_sha256(path), engine_settings(**settings), run_slots=run_slots, on_batch=on_batch
    )


def test_concurrent_requests_are_batched_and_answers_stay_with_their_inputs(model_file, digits):
    """Twenty concurrent callers get exactly the logits a direct run gives their own
    inputs, in fewer ORT runs than callers."""
    engine = _engine(model_file, max_batch_size=16, batch_wait_timeout_s=0.01)
    inputs = [digits.test.x[i : i + 1 + i % 3] for i in range(20)]

    async def main():
        return await asyncio.gather(*(engine.infer(x) for x in inputs))

    results = asyncio.run(main())
    for x, logits in zip(inputs, results, strict=True):
        np.testing.assert_allclose(logits, engine.run(x), rtol=1e-4, atol=1e-4)
    assert engine.stats.completed == 20 and engine.stats.in_flight == 0
    assert len(engine.stats.batch_sizes) < 20 and max(engine.stats.batch_sizes) <= 16
    engine.close()


def test_full_queue_refuses_at_once(model_file, digits):
    """Past max_queued waiting requests, infer raises QueueFull instead of waiting."""
    engine = _engine(model_file, max_queued=2, batch_wait_timeout_s=0.05)

    async def main():
        tasks = [asyncio.ensure_future(engine.infer(digits.test.x[:1])) for _ in range(5)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, QueueFull)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert len(refused) == 3 and len(served) == 2
    engine.close()


def test_corrupt_file_is_never_loaded(model_file, tmp_path):
    """A file whose sha256 differs from the manifest's raises CorruptArtifact."""
    copy = tmp_path / "model.onnx"
    copy.write_bytes(model_file.read_bytes()[:-10])
    with pytest.raises(CorruptArtifact, match="manifest says"):
        VariantEngine.load("tiny", copy, file_sha256(model_file), engine_settings())


def test_request_the_queue_cannot_finish_by_its_deadline_is_refused_up_front(model_file, digits):
    """With 40 images queued at a profiled 50 ms per batch of 8, a request with 100 ms left
    gets QueueFull at once, while one with 10 s left is served."""
    engine = _engine(model_file, max_batch_size=8, batch_wait_timeout_s=0.05)
    engine.latency_p95_ms = {1: 50.0, 8: 50.0}

    async def main():
        queued = [asyncio.ensure_future(engine.infer(digits.test.x[:8])) for _ in range(5)]
        await asyncio.sleep(0)  # all five are queued now
        with pytest.raises(QueueFull, match="deadline"):
            await engine.infer(digits.test.x[:1], deadline=time.monotonic() + 0.1)
        served = await engine.infer(digits.test.x[:1], deadline=time.monotonic() + 10)
        await asyncio.gather(*queued)
        return served

    assert asyncio.run(main()).shape == (1, 10)
    engine.close()


def test_request_still_queued_at_its_deadline_is_dropped_not_run(model_file, digits):
    """A request waiting behind a slow run raises DeadlineExceeded at its deadline and is
    never run; the request ahead of it is still answered."""
    engine = _engine(model_file, max_batch_size=1)
    inject_fault(engine, 0.0, 0.3)  # every run takes 0.3 s longer

    async def main():
        ahead = asyncio.ensure_future(engine.infer(digits.test.x[:1]))
        await asyncio.sleep(0.05)  # the first run is in ORT now
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await engine.infer(digits.test.x[1:2], deadline=time.monotonic() + 0.1)
        waited = time.monotonic() - started
        await ahead
        await asyncio.sleep(0.35)  # time for the batcher to have run the dropped one, were it kept
        return waited

    waited = asyncio.run(main())
    assert waited < 0.25 and engine.stats.completed == 1 and engine.stats.batch_sizes == [1]
    engine.close()


def test_engines_sharing_run_slots_never_run_at_once(model_file, digits):
    """Three engines given one shared run slot: their ORT runs never overlap, and every
    request is still answered."""
    slots = RunSlots(1)
    engines = [_engine(model_file, slots, max_batch_size=1) for _ in range(3)]
    running, overlaps = [0], [0]
    for engine in engines:
        run = engine.run

        def counted(x, run=run):
            running[0] += 1
            overlaps[0] = max(overlaps[0], running[0])
            try:
                time.sleep(0.01)  # long enough that unshared runs would overlap
                return run(x)
            finally:
                running[0] -= 1

        engine.run = counted

    async def main():
        calls = [engine.infer(digits.test.x[i : i + 1]) for i in range(4) for engine in engines]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert len(results) == 12 and overlaps[0] == 1
    for engine in engines:
        engine.close()


@pytest.mark.parametrize(
    ("max_runs", "slots", "expected"),
    [(2, 2, 2), (3, 2, 2), (1, 2, 1), (2, None, 1)],
)
def test_a_busy_variant_runs_batches_at_once_up_to_its_limit_within_the_run_slots(
    model_file, digits, max_runs, slots, expected
):
    """With six single-image requests queued, a variant runs min(max_runs, run slots)
    batches at once (one at a time without run slots), and answers every request."""
    run_slots = RunSlots(slots) if slots is not None else None
    engine = _engine(model_file, run_slots, max_batch_size=1, max_runs=max_runs)
    lock, running, most = threading.Lock(), [0], [0]
    run = engine.run

    def counted(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # long enough that every run that may overlap does
            return run(x)
        finally:
            with lock:
                running[0] -= 1

    engine.run = counted

    async def main():
        return await asyncio.gather(*(engine.infer(digits.test.x[i : i + 1]) for i in range(6)))

    results = asyncio.run(main())
    for i, logits in enumerate(results):
        np.testing.assert_allclose(logits, run(digits.test.x[i : i + 1]), rtol=1e-4, atol=1e-4)
    assert most[0] == expected and engine.stats.completed == 6
    engine.close()


def test_an_engine_left_with_an_unstarted_worker_by_an_ended_loop_serves_on_the_next(model_file, digits):
    """A request left queued when its event loop ended (its worker cancelled before it
    started) does not stop the engine: on the next loop a request is answered."""
    engine = _engine(model_file, max_runs=2)

    async def abandon():
        asyncio.get_running_loop().create_task(engine.infer(digits.test.x[:1]))

    asyncio.run(abandon())

    async def serve():
        return await asyncio.wait_for(engine.infer(digits.test.x[1:2]), 5)

    np.testing.assert_allclose(asyncio.run(serve()), engine.run(digits.test.x[1:2]), rtol=1e-4, atol=1e-4)
    engine.close()


def test_a_failing_metrics_hook_leaves_no_request_unanswered(model_file, digits):
    """With on_batch raising after every run, three queued requests are all answered."""

    def broken(name, size):
        raise ValueError("metrics backend down")

    engine = _engine(model_file, on_batch=broken, max_batch_size=1)

    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(engine.infer(digits.test.x[i : i + 1]) for i in range(3))), 5
        )

    assert [logits.shape for logits in asyncio.run(main())] == [(1, 10)] * 3
    engine.close()


def test_the_deadline_check_never_splits_one_batch_across_runs(model_file, digits):
    """With eight run slots and a profiled 50 ms run, a lone request with 20 ms left is
    refused up front (QueueFull), not accepted as if its run took 50 / 8 ms."""
    engine = _engine(model_file, RunSlots(8), max_runs=8)
    engine.latency_p95_ms = {1: 50.0}

    async def main():
        await engine.infer(digits.test.x[:1], deadline=time.monotonic() + 0.02)

    with pytest.raises(QueueFull, match="deadline"):
        asyncio.run(main())
    engine.close()


def test_runs_happen_at_lower_cpu_priority_than_the_caller(model_file, digits):
    """With run_niceness 3, the thread that runs ORT has a nice value 3 above (or capped at
    19) the caller's."""
    engine = _engine(model_file, run_niceness=3)
    seen = []
    run = engine.run

    def recording(x):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return run(x)

    engine.run = recording
    asyncio.run(engine.infer(digits.test.x[:1]))
    assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)]
    engine.close()


@pytest.mark.parametrize(
    ("busy", "expected_ms", "inline"),
    [(1, 2.0, True), (2, 2.0, False), (1, 8.0, False)],
    ids=["alone-and-short", "another-request-inside", "run-longer-than-the-limit"],
)
def test_a_lone_short_run_stays_on_the_event_loop_thread(model_file, digits, busy, expected_ms, inline):
    """With inline_max_ms 5, a run expected to take at most 5 ms while its request is
    alone in the process runs on the event loop's thread; with another request inside, or
    a longer expected run, it goes to the ORT thread."""
    engine = _engine(model_file, RunSlots(1, inline_max_ms=5.0, busy=lambda: busy))
    engine.latency_p95_ms = {1: expected_ms}  # what routing predicts the run takes
    seen = []
    run = engine.run

    def recording(x):
        seen.append(threading.get_ident())
        return run(x)

    engine.run = recording

    async def main():
        logits = await engine.infer(digits.test.x[:1])
        return threading.get_ident(), logits

    loop_thread, logits = asyncio.run(main())
    assert (seen == [loop_thread]) is inline and engine.run_slots.inline_runs == int(inline)
    np.testing.assert_allclose(logits, run(digits.test.x[:1]), rtol=1e-4, atol=1e-4)
    engine.close()
