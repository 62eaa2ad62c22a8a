"""Synchronous clients for a replica's app in-process (httpx over ASGITransport): one
request on a fresh app (``call``), or many to one app on a loop that keeps running
(``AppClient``).

    call(replica, "GET", "/v1/variants")
    with AppClient(create_app(replica)) as client:
        client.request("POST", "/v1/predict", json=...)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import httpx

from tiergate.serving.http import create_app


def call(replica, method: str, path: str, raise_app_exceptions: bool = True, **kwargs) -> httpx.Response:
    """One request to a fresh app over ``replica`` (``raise_app_exceptions=False``: a 500
    comes back as a response instead of raising)."""

    async def go():
        transport = httpx.ASGITransport(app=create_app(replica), raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


class AppClient:
    """Requests to an ASGI app over httpx, all on one event loop that keeps running in a
    thread of its own between them, as a server's does: the replica's loop-lag timer starts
    on the first loop that asks it, so a fresh or paused loop per request would read as a
    replica running ever further behind (and get 503s)."""

    def __init__(self, app) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="app-client", daemon=True)
        self._thread.start()
        transport = httpx.ASGITransport(app=app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://test")

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.run(self._client.request(method, path, **kwargs))

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """``coroutine`` on the client's loop (also to call the ASGI app directly)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
