"""The seams between the gateway and its engines.

``Engine`` is what the gateway, metrics and HTTP layers may use of a variant's engine,
in-process (``VariantEngine``) or remote (``RemoteEngine``) alike: they never need to ask
which kind they hold, except through ``local``.

A remote engine built with ``on_change`` calls it when what routing derives from it
changed (re-timed, gone down, come back): the replica passes the live menu's ``changed``.
An in-process engine is re-timed by its replica, which tells the live menu itself.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tiergate.serving.engines.stats import LiveCounters


class Engine(Protocol):
    """One variant as the gateway sees it."""

    name: str
    stats: LiveCounters
    replicas: int  # replicas serving the variant (1 in-process)
    latency_p95_ms: dict[int, float] | None  # p95 per batch size, timed where it serves
    profile_s: float | None  # how long the last in-process timing took (None: not timed here)

    @property
    def local(self) -> bool:
        """True when the variant runs in this process (and shares its run slots)."""
        ...

    @property
    def available(self) -> bool:
        """False while the variant cannot serve (a remote one whose replica failed)."""
        ...

    @property
    def closed(self) -> bool:
        """True once ``close`` ran (the variant was swapped or retired)."""
        ...

    @property
    def reprofiles(self) -> int:
        """Times the variant was re-timed after a failure (0 in-process)."""
        ...

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Logits for ``x`` (N, C, H, W); ``deadline`` is a ``time.monotonic()`` time."""
        ...

    def queued_work_ms(self) -> float:
        """Run time still ahead of this variant in this process's run slots (0.0 remote)."""
        ...

    def close(self) -> None: ...
