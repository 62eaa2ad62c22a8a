"""Start and stop a local Ray cluster with the tiergate application on it: the one place
that decides how Ray is started (used by ``tiergate serve``, the tests and the benchmarks).

    url = start(config)  # http://127.0.0.1:8000, ready to serve
    ...
    stop()
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiergate.config import AppConfig
from tiergate.serving.config import ServingConfig, is_loopback
from tiergate.serving.ray_env import prepare_ray_environment, prepare_ray_token

if TYPE_CHECKING:
    from ray.serve.deployment import Deployment

    from tiergate.build.live import LiveBuild
    from tiergate.profiles.menu import Menu

log = logging.getLogger(__name__)

APP_NAME = "tiergate"


def start(config: AppConfig, num_cpus: int | None = None, menu: Menu | None = None) -> str:
    """A local Ray cluster (no dashboard) with the application deployed and ready; its URL.
    ``menu``: the config's menu when the caller built it already."""
    start_cluster(config.serving, num_cpus)
    try:
        return deploy(config, menu=menu)
    except BaseException:
        stop()
        raise


def start_live(
    config: AppConfig,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    num_cpus: int | None = None,
    deployments: dict[str, Deployment] | None = None,
) -> tuple[str, LiveBuild]:
    """Serve what the cache holds (fp32 at least, built now on a cold cache) and keep
    building the rest in Ray tasks (``compress.live``); the URL and the running build.
    ``config_path``/``overrides``: where the config came from, followed while serving."""
    from tiergate.build.live import LiveBuild
    from tiergate.serving.board import board_actor

    start_cluster(config.serving, num_cpus)
    try:
        live = LiveBuild(config, board_actor(create=True), config_path, overrides)
        menu = live.first_menu()
        url = deploy(live.config, menu=menu, deployments=deployments)
        live.start()
        return url, live
    except BaseException:
        stop()
        raise


def start_cluster(serving: ServingConfig, num_cpus: int | None = None) -> None:
    """Ray (token authentication on) and Serve's HTTP ingress on ``serving.http.host:port``,
    nothing deployed yet."""
    warn_if_unprotected(serving)
    prepare_ray_environment(serving)  # before Ray starts any process
    log.info("Ray token authentication on; token: %s", prepare_ray_token())
    import ray
    from ray import serve
    from ray._raylet import Config

    # Ray reads RAY_AUTH_MODE when it is first imported (a test may have imported it before
    # the flags were set); re-read it, as Ray does when it turns token auth on itself
    Config.initialize("")

    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
        _metrics_export_port=serving.http.metrics_port,
    )  # fmt: skip
    serve.start(http_options={"host": serving.http.host, "port": serving.http.port})


def warn_if_unprotected(serving: ServingConfig) -> None:
    """Log loudly when the config opted out of protected mode and the gateway is reachable
    from other machines without keys (the config refuses that unless opted out)."""
    http = serving.http
    if not serving.auth.enabled and not is_loopback(http.host):
        log.warning(
            "PROTECTED MODE OFF (serving.http.allow_unauthenticated_remote: true): every route, admin "
            "included, is open without a key to anyone who can reach %s:%s; turn serving.auth.enabled on",
            http.host, http.port,
        )  # fmt: skip


def deploy(
    config: AppConfig,
    name: str = APP_NAME,
    route_prefix: str = "/",
    menu: Menu | None = None,
    deployments: dict[str, Deployment] | None = None,
    manifest: Path | None = None,
) -> str:
    """Deploy (or redeploy) the application and wait until every replica is ready.
    ``deployments``: ``ingress``/``variant`` deployments other than the defaults;
    ``manifest``: the menu file the replicas watch, other than the config's."""
    from ray import serve

    from tiergate.application import build_application

    application = build_application(config, menu, manifest=manifest, **(deployments or {}))
    serve.run(application, name=name, route_prefix=route_prefix)
    serving = config.serving
    return f"http://{serving.http.host}:{serving.http.port}{route_prefix.rstrip('/')}"


def metrics_url(serving: ServingConfig) -> str:
    """Where Prometheus scrapes this node: tiergate_* and Ray Serve's own ray_serve_* series."""
    return f"http://127.0.0.1:{serving.http.metrics_port}/metrics"


def stop() -> None:
    """Shut the application and the Ray cluster down (in-flight requests drain first)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
