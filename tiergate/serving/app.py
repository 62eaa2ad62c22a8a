"""The Ray Serve application, in one of two topologies (``serving.ray.topology``):

- ``colocated`` (default): one ingress deployment that routes and runs every variant in
  its own process, so a request crosses no actor hop after the ingress;
- ``per_variant``: the ingress routes and calls one deployment per variant through Serve
  handles, so each variant gets its own replicas, CPUs/GPUs and autoscaling.

Either way each serving process times its variants before it reports ready, so routing
predicts latency from the hardware, threads and CPU share that actually serve.

    serve run serving.app:app_builder config=tiergate/configs/default.yaml
    tiergate serve --config tiergate/configs/digits.yaml
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from tiergate import settings
from tiergate.compression.data import DataConfig
from tiergate.config import AppConfig, load_config
from tiergate.profiles.menu import Menu, MenuEntry
from tiergate.serving.auth import KeyFileWatch, KeyRing
from tiergate.serving.config import ServingConfig
from tiergate.serving.engine import (
    CorruptArtifact,
    EngineSettings,
    RemoteEngine,
    RunSlots,
    VariantEngine,
)
from tiergate.serving.frontdoor import Door, Limits
from tiergate.serving.gateway import Gateway, GatewayError
from tiergate.serving.http import create_app
from tiergate.serving.inputs import InputDecoder, Preprocess
from tiergate.serving.logs import route_into_serve_log
from tiergate.serving.metrics import Metrics, Trace

log = logging.getLogger(__name__)


class _Replica:
    """Per-process state the module-level FastAPI routes read (one replica per process)."""

    gateway: Gateway | None = None
    limits: Limits = Limits.from_config(ServingConfig())
    keys: KeyRing | None = None  # None: API keys off
    admin: Admin | None = None


http_app = create_app(
    lambda: _Replica.gateway, lambda: _Replica.limits, lambda: _Replica.keys, lambda: _Replica.admin
)


def engine_settings(serving: ServingConfig) -> EngineSettings:
    return EngineSettings(
        threads=serving.batching.threads_per_variant,
        max_batch_size=serving.batching.max_batch_size,
        batch_wait_timeout_s=serving.batching.batch_wait_timeout_s,
        max_queued=serving.admission.max_queued_per_variant,
        run_niceness=serving.batching.run_niceness,
        max_runs=serving.batching.max_runs_per_variant or concurrent_runs(serving),
    )


def open_engine(entry: MenuEntry, menu: Menu, serving: ServingConfig) -> VariantEngine:
    """Load one variant (sha256 checked) and, unless switched off, time it in this process."""
    engine = VariantEngine.load(entry.name, Path(entry.path), entry.sha256, engine_settings(serving))
    return _retimed(engine, menu, serving)


def _retimed(engine: VariantEngine, menu: Menu, serving: ServingConfig, force: bool = False) -> VariantEngine:
    """Time batch 1 in this process (threads, CPU share and neighbours as served) and scale
    the menu's profile at the other batch sizes by the same factor: a second per variant
    instead of timing batch 32 of every variant again. Only with ``profile_in_replica``,
    unless ``force``d (an admin's re-profile)."""
    if (serving.routing.profile_in_replica or force) and menu.input_shape is not None:
        started = time.perf_counter()
        passes = []
        with _one_profiler_per_node():
            # two passes, the faster kept: a neighbour busy during one (Ray's own start-up work)
            # once made int8 time 1.85x its usual p95 (1 start in ~30), and routing shunned it
            for _ in range(2):
                engine.profile(menu.input_shape, (1,), serving.routing.replica_profile_budget_s)
                passes.append(engine.latency_p95_ms[1])
        profiled = next(e for e in menu.variants if e.name == engine.name).latency_ms
        factor = min(passes) / profiled["1"].p95
        engine.latency_p95_ms = {int(b): stats.p95 * factor for b, stats in profiled.items()}
        engine.profile_s = time.perf_counter() - started  # both passes (each profile() set its own)
        log.info(
            "%s: timed in the serving replica in %.1f s: batch-1 p95 %.2f ms (%.2fx the menu's)",
            engine.name, engine.profile_s, engine.latency_p95_ms[1], factor,
        )  # fmt: skip
    return engine


@contextmanager
def _one_profiler_per_node():
    """Replicas start together; timing one variant while another replica times its own
    would measure the contention, not the variant. A file lock takes turns per machine."""
    with open(Path(tempfile.gettempdir()) / "tiergate-profile.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_gateway(config: AppConfig, menu: Menu, engines: dict | None = None) -> Gateway:
    """Open one engine per variant of the menu unless ``engines`` are given (per_variant
    topology), and assemble the gateway."""
    serving = config.serving
    if engines is None:
        engines = {}
        for entry in menu.variants:
            try:
                engines[entry.name] = open_engine(entry, menu, serving)
            except (CorruptArtifact, OSError) as error:
                log.error("variant %s left out of the menu: %s", entry.name, error)
    # Door.admission: the requests a run on the event loop may hold up, read or not yet
    slots = RunSlots(
        concurrent_runs(serving), serving.batching.inline_run_max_ms, lambda: Door.admission.contenders(),
        spare_share=1.0 - serving.routing.latency_headroom,
    )  # fmt: skip
    if menu.variants[0].name not in engines:
        raise RuntimeError("fp32 could not be loaded; refusing to serve without the reference variant")
    decoder = InputDecoder(menu.input_shape, serving.limits, _preprocess(config.data))
    return Gateway(menu, config.tiers, engines, decoder, serving.routing, serving.admission, slots)


def concurrent_runs(serving: ServingConfig) -> int:
    """serving.batching.max_concurrent_runs, else the cores this process may use."""
    if serving.batching.max_concurrent_runs is not None:
        return serving.batching.max_concurrent_runs
    return max(1, len(os.sched_getaffinity(0)))


def _preprocess(data: DataConfig) -> Preprocess:
    if data.source in ("npz", "folder"):
        return Preprocess(mean=data.mean, std=data.std)
    return Preprocess()


class Admin:
    """/v1/admin/* on this replica (each replica answers for itself)."""

    def __init__(self, config: AppConfig, menu: Menu, gateway: Gateway) -> None:
        self.config, self.menu, self.gateway = config, menu, gateway

    async def reprofile(self) -> dict[str, dict[int, float]]:
        for engine in self.gateway.engines.values():
            if isinstance(engine, RemoteEngine):
                latency = await engine.handle.retime.remote(force=True)
                engine.latency_p95_ms = {int(b): ms for b, ms in latency.items()}
            else:  # off the event loop: requests keep being served (and contend, as they would)
                await asyncio.to_thread(_retimed, engine, self.menu, self.config.serving, True)
        self.gateway.refresh()
        return {name: dict(engine.latency_p95_ms) for name, engine in self.gateway.engines.items()}

    def reload_keys(self) -> int:
        """Read the keys again; a file that does not load leaves the current keys in place."""
        try:
            keys = KeyRing.load(self.config.serving.auth, settings.api_keys())
        except Exception as error:  # whatever the file holds (even nesting deep enough to overflow)
            current = len(_Replica.keys) if _Replica.keys is not None else 0
            raise GatewayError(409, f"keys not reloaded, the {current} current keys stay: {error}") from None
        if _Replica.keys is not None:
            keys.keep_buckets_from(_Replica.keys)
        _Replica.keys = keys
        log.info("API keys reloaded: %d keys", len(keys))
        return len(keys)


@serve.deployment
@serve.ingress(http_app)
class Ingress:
    """Routes every request; runs the variants itself (colocated) or calls their deployments."""

    async def __init__(
        self, config: dict[str, Any], menu: dict[str, Any], variants: dict[str, Any] | None = None
    ) -> None:
        route_into_serve_log()
        app_config = AppConfig.model_validate(config)
        serving = app_config.serving
        _Replica.limits = Limits.from_config(serving)
        auth, key_watch = serving.auth, None
        if auth.enabled:
            if auth.keys_file is not None and auth.watch_interval_s > 0:
                # before the load: a change during the seconds of start-up that follow is
                # then seen as a change, not taken for what was loaded
                key_watch = KeyFileWatch(auth.keys_file)
            _Replica.keys = KeyRing.load(auth, settings.api_keys())
        engines = None
        if variants is not None:
            engines = await _remote_engines(variants, app_config.serving)
        menu = Menu.model_validate(menu)
        gateway = load_gateway(app_config, menu, engines)
        gateway.metrics = Metrics(app_config.tiers)
        for engine in gateway.engines.values():
            engine.on_batch = gateway.metrics.batch
        gateway.metrics.describe(gateway)
        self._reporter = asyncio.get_running_loop().create_task(_report_metrics(gateway.metrics, gateway))
        _Replica.admin = Admin(app_config, menu, gateway)
        if key_watch is not None:
            self._key_watch = asyncio.get_running_loop().create_task(
                _watch_keys(_Replica.admin, key_watch, auth.watch_interval_s)
            )
        _Replica.gateway = gateway
        Door.install(_Replica.limits, on_refusal=lambda: gateway.metrics.request(Trace(), 503))
        freeze_startup_objects()
        log.info("tiergate replica ready with %d variants", len(gateway.engines))

    def set_fault(self, variant: str, rate: float, delay_s: float = 0.0) -> None:
        """Chaos hook, reachable only through a Serve handle from inside the cluster: make
        ``rate`` of ``variant``'s runs fail, and every run take ``delay_s`` longer, in this
        replica (colocated topology)."""
        engine = _Replica.gateway.engines[variant]
        if not isinstance(engine, VariantEngine):
            raise TypeError(f"{variant} runs in its own deployment: kill its replica instead")
        engine.inject_fault(rate, delay_s)  # the gateway re-reads its profile (on_change)


async def _watch_keys(admin: Admin, watch: KeyFileWatch, interval_s: float) -> None:
    """Reload the keys whenever the file's content changes. Every replica runs this, so a key
    removed from the file stops working on all of them within ``interval_s``."""
    while True:
        await asyncio.sleep(interval_s)
        if not watch.changed():
            continue
        try:
            admin.reload_keys()
        except Exception as error:  # the watch must outlive any bad file
            log.error("%s changed but did not load: %s", watch.path, error)


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive after start-up (modules, sessions, Ray's
    and FastAPI's state: ~270k objects in the default replica) to the garbage collector's
    permanent generation. Python's full collections would scan them all again and again:
    measured, one took 124 ms under load, a stall that every request arriving meanwhile
    waits out. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()


async def _remote_engines(handles: dict[str, Any], serving: ServingConfig) -> dict[str, RemoteEngine]:
    """In-replica timings from each variant deployment, taken again one variant at a time
    once all are up (while replicas start, their imports and loads compete for the CPU);
    a variant whose replica failed to start is left out (fp32 is checked by load_gateway)."""
    started = {}
    for name, handle in handles.items():
        try:
            started[name] = await handle.latency.remote()
        except Exception as error:
            log.error("variant %s left out of the menu: its deployment failed: %s", name, error)
    engines = {}
    for name, latency in started.items():
        handle = handles[name]
        if serving.routing.profile_in_replica:
            latency = await handle.retime.remote()
        spec = serving.ray.variant_deployments.get(name)
        replicas = spec.replicas if spec is not None else 1
        engines[name] = RemoteEngine(
            name, handle, latency, replicas, serving.admission.max_queued_per_variant,
            serving.routing.variant_timeout_s,
        )  # fmt: skip
    return engines


async def _report_metrics(metrics: Metrics, gateway: Gateway | None = None, every_s: float = 1.0) -> None:
    """Flush what was recorded to Ray in a worker thread; sample in-flight counts."""
    while True:
        await asyncio.sleep(every_s)
        try:
            if gateway is not None:
                metrics.in_flight(gateway)
            await asyncio.to_thread(metrics.flush)
        except Exception:  # metrics must never stop serving
            log.exception("metrics flush failed")


@serve.deployment
class VariantServer:
    """One variant behind its own replicas (per_variant topology)."""

    async def __init__(self, config: dict[str, Any], menu: dict[str, Any], name: str) -> None:
        route_into_serve_log()
        app_config = AppConfig.model_validate(config)
        menu = Menu.model_validate(menu)
        entry = next(e for e in menu.variants if e.name == name)
        # not timed here: the ingress asks every variant to retime() once all replicas are up
        self.engine = VariantEngine.load(
            entry.name, Path(entry.path), entry.sha256, engine_settings(app_config.serving)
        )
        self.engine.latency_p95_ms = {int(b): s.p95 for b, s in entry.latency_ms.items()}
        self._menu, self._serving = menu, app_config.serving
        metrics = Metrics(app_config.tiers)
        self.engine.on_batch = metrics.batch
        self._reporter = asyncio.get_running_loop().create_task(_report_metrics(metrics))
        freeze_startup_objects()

    def latency(self) -> dict[int, float]:
        return self.engine.latency_p95_ms

    def set_fault(self, rate: float, delay_s: float = 0.0) -> None:
        """Chaos hook, reachable only through a Serve handle from inside the cluster: make
        ``rate`` of this replica's runs fail, and every run take ``delay_s`` longer."""
        self.engine.inject_fault(rate, delay_s)

    def retime(self, force: bool = False) -> dict[int, float]:
        """Time the variant again: the ingress asks once every variant replica is up, when
        the variant comes back after a failure, and on an admin's re-profile (``force``)."""
        return _retimed(self.engine, self._menu, self._serving, force).latency_p95_ms

    async def infer(self, x: np.ndarray, timeout_s: float | None = None) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        logits = await self.engine.infer(x, deadline)
        return logits, (time.perf_counter() - started) * 1000


def build_application(config: AppConfig, menu: Menu | None = None) -> Application:
    """The application for ``config``; the menu (``menu``, else built or read from the
    cache here, in the driver) is handed to the replicas, which only open and time the
    ONNX files."""
    from tiergate.build import build_menu

    serving = config.serving
    payload = config.model_dump(mode="json")
    menu = (menu if menu is not None else build_menu(config)).model_dump(mode="json")
    variants = None
    if serving.ray.topology == "per_variant":
        variants = {
            entry["name"]: _variant_deployment(payload, menu, entry["name"], serving)
            for entry in menu["variants"]
        }
    return Ingress.options(
        num_replicas=serving.ray.replicas,
        max_ongoing_requests=serving.ray.max_ongoing_requests,
        max_queued_requests=serving.ray.max_queued_requests,
        graceful_shutdown_timeout_s=serving.ray.shutdown_timeout_s,
        ray_actor_options={"num_cpus": 0},  # ORT threads are set per variant; do not reserve cores
        logging_config={"enable_access_log": serving.http.access_log},
    ).bind(payload, menu, variants)


def _variant_deployment(
    payload: dict[str, Any], menu: dict[str, Any], name: str, serving: ServingConfig
) -> Application:
    spec = serving.ray.variant_deployments.get(name)
    options: dict[str, Any] = {
        "name": f"variant-{name.replace('+', '-')}",
        "max_ongoing_requests": serving.ray.max_ongoing_requests,
        "max_queued_requests": serving.ray.max_queued_requests,
        "graceful_shutdown_timeout_s": serving.ray.shutdown_timeout_s,
        "logging_config": {"enable_access_log": serving.http.access_log},
        "ray_actor_options": {
            "num_cpus": spec.num_cpus if spec else 0,
            "num_gpus": spec.num_gpus if spec else 0,
        },
    }
    if spec is not None and spec.autoscaling is not None:
        options["autoscaling_config"] = spec.autoscaling
    else:
        options["num_replicas"] = spec.replicas if spec else 1
    return VariantServer.options(**options).bind(payload, menu, name)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for ``serve run serving.app:app_builder config=PATH``; any other argument
    is a dotted override of the config, as ``tiergate serve --set`` takes them
    (``serving.auth.enabled: true`` in a Serve config file's ``args``)."""
    overrides = {key: value for key, value in args.items() if key != "config"}
    return build_application(load_config(Path(args["config"]) if "config" in args else None, overrides))
