"""The Ray Serve deployments: thin shells that build the plain serving objects inside a
replica and hand requests to them. Two topologies (``serving.ray.topology``):

- ``colocated`` (default): one ingress deployment routes and runs every variant in its own
  process, so a request crosses no actor hop after the ingress;
- ``per_variant``: the ingress routes and calls one ``VariantServer`` deployment per
  variant through Serve handles, so each variant gets its own replicas, CPUs/GPUs and
  autoscaling.

``IngressReplica`` and ``VariantReplica`` are the plain classes; ``Ingress`` and
``VariantServer`` are their deployments. The composition root (``tiergate.application``)
binds them to a ``ReplicaSpec``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from tiergate import settings
from tiergate.serving.boardlink import BoardLink
from tiergate.serving.engines import VariantEngine
from tiergate.serving.filewatch import FileWatch
from tiergate.serving.frontdoor import PROCESS_DOOR
from tiergate.serving.http import create_app
from tiergate.serving.http.admin import run_command
from tiergate.serving.loading import engine_settings, remote_engines, retime, time_remote_variants
from tiergate.serving.logs import route_into_serve_log
from tiergate.serving.metrics import Metrics
from tiergate.serving.replica import Replica, ReplicaSpec, menu_source
from tiergate.serving.trace import Trace
from tiergate.serving.upkeep import (
    first_look,
    follow_board,
    freeze_startup_objects,
    report_metrics,
    watch_keys,
    watch_menu,
)

log = logging.getLogger(__name__)


class IngressReplica:
    """Routes every request; runs the variants itself (colocated) or calls their deployments."""

    async def __init__(self, spec: dict[str, Any], variants: dict[str, Any] | None = None) -> None:
        route_into_serve_log()
        spec = ReplicaSpec.model_validate(spec)
        auth = spec.serving.auth
        watch = None
        if auth.enabled and auth.keys_file is not None and auth.watch_interval_s > 0:
            # before the keys load: a change during the seconds of start-up that follow is
            # then seen as a change, not taken for what was loaded
            watch = FileWatch(auth.keys_file)
        menu_watch = None
        interval_s = spec.serving.routing.menu_watch_interval_s
        if spec.manifest is not None and variants is None and interval_s > 0:
            menu_watch = FileWatch(Path(spec.manifest))  # before the menu is loaded, as the keys
        remote = None
        if variants is not None:
            timed = await time_remote_variants(variants, spec.serving)

            def remote(registry):
                return remote_engines(timed, spec.serving, registry.changed)

        board = None
        if spec.serving.ray.board_interval_s > 0:
            board = BoardLink(member_id(), answer_timeout_s=spec.serving.ray.broadcast_timeout_s)
        self.replica = Replica.build(
            spec, admission=PROCESS_DOOR.admission, remote=remote,
            metrics=lambda registry: Metrics(spec.tiers, registry), board=board,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(report_metrics(self.replica.metrics))]
        if watch is not None:
            self._tasks.append(
                loop.create_task(watch_keys(self.replica.reload_keys, watch, auth.watch_interval_s))
            )
        if menu_watch is not None:
            self._tasks.append(loop.create_task(watch_menu(self.replica.reconcile, menu_watch, interval_s)))
        if board is not None:
            run = partial(run_command, self.replica)
            await first_look(self.replica, board, run)
            every_s = spec.serving.ray.board_interval_s
            self._tasks.append(loop.create_task(follow_board(self.replica, board, run, every_s)))
        PROCESS_DOOR.install(self.replica.limits, on_refusal=lambda: self.replica.record(Trace(), 503))
        log.info("tiergate replica ready with %d variants", len(self.replica.registry.loaded()))

    def __serve_build_asgi_app__(self):
        """Ray Serve builds the HTTP app once the constructor has run (``serve.ingress()``);
        then everything alive is start-up state, kept out of the garbage collector's scans."""
        app = create_app(self.replica)
        freeze_startup_objects()
        return app


def member_id() -> str:
    """This replica's name on the build board: Serve's replica id (unique in the cluster)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a Serve replica
        return f"{socket.gethostname()}:{os.getpid()}"


class VariantReplica:
    """One variant behind its own replicas (per_variant topology)."""

    async def __init__(self, spec: dict[str, Any], name: str) -> None:
        route_into_serve_log()
        spec = ReplicaSpec.model_validate(spec)
        spec.menu.verify(settings.menu_key(), source=menu_source(spec))
        self.entry = next(e for e in spec.menu.variants if e.name == name)
        self.serving, self.input_shape = spec.serving, spec.menu.input_shape
        metrics = Metrics(spec.tiers)
        # not timed here: the ingress asks every variant to retime() once all replicas are up
        self.engine = VariantEngine.load(
            name,
            Path(self.entry.path),
            self.entry.sha256,
            engine_settings(spec.serving),
            on_batch=metrics.batch,
        )
        self.engine.latency_p95_ms = {int(b): s.p95 for b, s in self.entry.latency_ms.items()}
        self._reporter = asyncio.get_running_loop().create_task(report_metrics(metrics))
        freeze_startup_objects()

    def latency(self) -> dict[int, float]:
        return self.engine.latency_p95_ms

    def retime(self, force: bool = False) -> dict[int, float]:
        """Time the variant again: the ingress asks once every variant replica is up, when
        the variant comes back after a failure, and on an admin's re-profile (``force``)."""
        if self.serving.routing.profile_in_replica or force:
            retime(self.engine, self.entry, self.input_shape, self.serving.routing.replica_profile_budget_s)
        return self.engine.latency_p95_ms

    async def infer(self, x: np.ndarray, timeout_s: float | None = None) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        logits = await self.engine.infer(x, deadline)
        return logits, (time.perf_counter() - started) * 1000


def ingress_deployment(cls: type = IngressReplica):
    """``cls`` (``IngressReplica`` or a subclass) as the ingress deployment."""
    return serve.deployment(name="Ingress")(serve.ingress()(cls))


def variant_deployment(cls: type = VariantReplica):
    return serve.deployment(name="VariantServer")(cls)


Ingress = ingress_deployment()
VariantServer = variant_deployment()
