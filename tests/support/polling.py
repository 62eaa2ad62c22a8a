"""Waiting on a live gateway in integration tests: a condition polled until it holds, and
the catalog by variant name.

    assert until(lambda: catalog(url)["int8"]["state"] == "serving", timeout_s=60)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def until(condition: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.2) -> Any:
    """``condition()``'s first truthy value within ``timeout_s``, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every_s)
    return None


def catalog(url: str) -> dict[str, dict]:
    """The gateway's ``/v1/variants`` rows, by variant name."""
    return {row["name"]: row for row in httpx.get(f"{url}/v1/variants", timeout=10).json()["variants"]}
