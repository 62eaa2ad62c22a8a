"""RemoteEngine: a variant in its own deployment, seen through a (fake) Serve handle."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tiergate.serving.engines import QueueFull, RemoteEngine, VariantFailed, remote_reason


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


def test_a_failed_call_takes_the_variant_off_the_menu_and_tells_the_gateway():
    """A failure that is not the replica's own refusal makes the engine unavailable and calls
    on_change once; the remote engine is not local and has no queued work here."""
    changes = []

    async def call():
        engine = RemoteEngine(
            "v", _FailingHandle(ValueError("boom")), {1: 1.0}, replicas=1, max_queued=8,
            on_change=lambda: changes.append("changed"),
        )  # fmt: skip
        with pytest.raises(VariantFailed):
            await engine.infer(np.zeros((1, 1, 8, 8), np.float32))
        engine.close()  # the re-timing probe
        return engine

    engine = asyncio.run(call())
    assert not engine.available and changes == ["changed"] and engine.stats.failed == 1
    assert not engine.local and engine.queued_work_ms() == 0.0 and engine.reprofiles == 0
