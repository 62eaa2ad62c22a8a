"""The variant engine with a real ONNX Runtime session: batching, isolation, bounds."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from tiergate.compression.cache import file_sha256
from tiergate.compression.export import export_onnx
from tiergate.serving.engine import (
    CorruptArtifact,
    EngineSettings,
    QueueFull,
    RemoteEngine,
    RunSlots,
    VariantEngine,
    VariantFailed,
    remote_reason,
)


@pytest.fixture(scope="module")
def model_file(tiny_base, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "model.onnx"
    export_onnx(tiny_base, digits.test.x[:4], path)
    return path


def _engine(path, **settings) -> VariantEngine:
    return VariantEngine.load("tiny", path, file_sha256(path), EngineSettings(**settings))


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
        VariantEngine.load("tiny", copy, file_sha256(model_file), EngineSettings())


def test_request_the_queue_cannot_finish_by_its_deadline_is_refused_up_front(model_file, digits):
    """With 40 images queued at a profiled 50 ms per batch of 8, a request with 100 ms left
    gets QueueFull at once, while one with 10 s left is served."""
    import time

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
    import time

    from tiergate.serving.engine import DeadlineExceeded

    engine = _engine(model_file, max_batch_size=1)
    engine.fault_delay_s = 0.3

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
    engines = [_engine(model_file, max_batch_size=1) for _ in range(3)]
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
        slots = RunSlots(1)
        for engine in engines:
            engine.run_slots = slots
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
    engine = _engine(model_file, max_batch_size=1, max_runs=max_runs)
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
        if slots is not None:
            engine.run_slots = RunSlots(slots)
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
    engine = _engine(model_file, max_batch_size=1)

    def broken(name, size):
        raise ValueError("metrics backend down")

    engine.on_batch = broken

    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(engine.infer(digits.test.x[i : i + 1]) for i in range(3))), 5
        )

    assert [logits.shape for logits in asyncio.run(main())] == [(1, 10)] * 3
    engine.close()


def test_the_deadline_check_never_splits_one_batch_across_runs(model_file, digits):
    """With eight run slots and a profiled 50 ms run, a lone request with 20 ms left is
    refused up front (QueueFull), not accepted as if its run took 50 / 8 ms."""
    engine = _engine(model_file, max_runs=8)
    engine.latency_p95_ms = {1: 50.0}

    async def main():
        engine.run_slots = RunSlots(8)
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
    engine = _engine(model_file)
    engine.latency_p95_ms = {1: expected_ms}  # what routing predicts the run takes
    seen = []
    run = engine.run

    def recording(x):
        seen.append(threading.get_ident())
        return run(x)

    engine.run = recording

    async def main():
        engine.run_slots = RunSlots(1, inline_max_ms=5.0, busy=lambda: busy)
        logits = await engine.infer(digits.test.x[:1])
        return threading.get_ident(), logits

    loop_thread, logits = asyncio.run(main())
    assert (seen == [loop_thread]) is inline and engine.run_slots.inline_runs == int(inline)
    np.testing.assert_allclose(logits, run(digits.test.x[:1]), rtol=1e-4, atol=1e-4)
    engine.close()


def test_inline_runs_fit_the_spare_share_of_the_tightest_recent_bound():
    """A run is inline only when it fits both inline_max_ms and spare_share of the tightest
    latency bound seen within memory_s; once that bound is older, the next one sets it."""
    slots = RunSlots(1, inline_max_ms=25.0, busy=lambda: 1, spare_share=0.5, memory_s=0.2)
    assert slots.inline(20.0) and not slots.inline(26.0)  # no bound seen yet: the cap alone
    slots.saw_bound(5.0)  # a fast request
    slots.saw_bound(60.0)  # an accurate one does not loosen it
    assert slots.tightest_bound_ms() == 5.0
    assert slots.inline(2.0) and not slots.inline(16.0)
    time.sleep(0.3)
    slots.saw_bound(60.0)  # only accurate traffic since
    assert slots.tightest_bound_ms() == 60.0 and slots.inline(16.0)
    slots.saw_bound(None)  # a request with no bound keeps the tighter one
    assert slots.tightest_bound_ms() == 60.0


class _FailingHandle:
    """A deployment handle whose ``infer`` call fails as Ray delivers a replica's exception:
    a RayTaskError that is also an instance of the cause's type, its text the traceback."""

    def __init__(self, cause: Exception) -> None:
        from ray.exceptions import RayTaskError

        self.error = RayTaskError("infer", "Traceback (most recent call last):\n  ...", cause,
                                  pid=4242, ip="10.0.0.1").as_instanceof_cause()  # fmt: skip
        self.infer = self

    def remote(self, *args):
        error = self.error

        class Response:
            def __await__(self):
                raise error
                yield

            def cancel(self) -> None:
                pass

        return Response()


@pytest.mark.parametrize("cause", [QueueFull("v: queue needs 523 ms"), ValueError("bad input shape")])
def test_a_remote_variants_error_reaches_the_gateway_as_its_cause_without_rays_traceback(cause):
    """A replica's QueueFull arrives as a QueueFull with the replica's own message; any other
    failure as VariantFailed naming the cause's type and first line; neither carries Ray's
    traceback, pid or address."""
    engine = RemoteEngine("v", _FailingHandle(cause), {1: 1.0}, replicas=1, max_queued=8)

    async def call():
        await engine.infer(np.zeros((1, 1, 8, 8), np.float32))

    expected = QueueFull if isinstance(cause, QueueFull) else VariantFailed
    with pytest.raises(expected) as raised:
        asyncio.run(call())
    text = str(raised.value)
    assert str(cause) in text and "Traceback" not in text and "4242" not in text and "10.0.0.1" not in text
    assert remote_reason(_FailingHandle(cause).error) == f"{type(cause).__name__}: {cause}"


def test_remote_reason_drops_rays_coloured_actor_header():
    """A dead actor's error text starts with Ray's coloured "ray::... (pid=..., ip=...)"
    header; the reason is the first line after it."""
    error = RuntimeError(
        "\x1b[36mray::ServeReplica:app:variant-int8\x1b[39m (pid=4242, ip=10.0.0.1, actor_id=ab12)\n"
        "The actor died unexpectedly before finishing this task.\n\tclass_name: ServeReplica"
    )
    assert remote_reason(error) == "RuntimeError: The actor died unexpectedly before finishing this task."
