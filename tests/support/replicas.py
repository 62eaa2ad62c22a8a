"""Helpers for serving tests that build a replica in-process (real ORT sessions, no Ray)."""

from __future__ import annotations

import time

import httpx

from tiergate.profiles.menu import Menu
from tiergate.serving.config import ServingConfig
from tiergate.serving.http import create_app
from tiergate.serving.inputs import InputDecoder, Preprocess
from tiergate.serving.replica import Replica, ReplicaSpec


def replica_for(
    menu: Menu, tiers, variants: list[str] | None = None, serving: ServingConfig | None = None, **build
):
    """A replica serving ``variants`` of ``menu`` (all of them by default); ``build``:
    ``Replica.build``'s keyword arguments (``clock``, ``admission``)."""
    if variants is not None:
        menu = menu.model_copy(update={"variants": [e for e in menu.variants if e.name in variants]})
    spec = ReplicaSpec(serving=serving or ServingConfig(), tiers=tiers, preprocess=Preprocess(), menu=menu)
    return Replica.build(spec, **build)


def asgi_client(replica: Replica) -> httpx.AsyncClient:
    """An HTTP client of ``create_app(replica)`` in this process and event loop (no socket)."""
    transport = httpx.ASGITransport(app=create_app(replica))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


class SlowDecoder(InputDecoder):
    """Decodes as ``InputDecoder`` does, after ``delay_s`` of work the client chose (a huge
    PNG, a large JSON batch)."""

    def __init__(self, decoder: InputDecoder, delay_s: float) -> None:
        super().__init__(decoder.input_shape, decoder.limits, decoder.preprocess)
        self.delay_s = delay_s

    def from_nested(self, values: object, field: str = "inputs"):
        time.sleep(self.delay_s)
        return super().from_nested(values, field)

    def from_base64(self, text: str, field: str = "image"):
        time.sleep(self.delay_s)
        return super().from_base64(text, field)
