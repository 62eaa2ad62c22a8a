"""Start and stop a local Ray cluster with the tiergate application on it: the one place
that decides how Ray is started (used by ``tiergate serve``, the tests and the benchmarks).

    url = start(config)  # http://127.0.0.1:8000, ready to serve
    ...
    stop()
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tiergate.config import AppConfig
from tiergate.serving.config import ServingConfig
from tiergate.serving.ray_env import prepare_ray_environment

if TYPE_CHECKING:
    from ray.serve.deployment import Deployment

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


def start_cluster(serving: ServingConfig, num_cpus: int | None = None) -> None:
    """Ray and Serve's HTTP ingress on ``serving.http.host:port``, nothing deployed yet."""
    prepare_ray_environment(serving)  # before Ray starts any process
    import ray
    from ray import serve

    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
        _metrics_export_port=serving.http.metrics_port,
    )  # fmt: skip
    serve.start(http_options={"host": serving.http.host, "port": serving.http.port})


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
