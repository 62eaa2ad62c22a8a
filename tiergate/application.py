"""The composition root: builds the Ray Serve application from a config. It is the one
place that knows both the config file's shape and the serving layer's parts.

    app = build_application(load_config(path))          # then serve.run(app)
    serve run tiergate.application:app_builder config=tiergate/configs/default.yaml

The menu is built (or read from the cache) here, in the driver, and handed to the
replicas, which only open and time the ONNX files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application
from ray.serve.deployment import Deployment

from tiergate.build import build_menu, menu_files
from tiergate.compression.data import DataConfig
from tiergate.config import AppConfig, load_config
from tiergate.profiles.menu import Menu
from tiergate.serving.config import ServingConfig
from tiergate.serving.deployments import Ingress, VariantServer
from tiergate.serving.inputs import Preprocess
from tiergate.serving.replica import ReplicaSpec


def replica_spec(config: AppConfig, menu: Menu, manifest: Path | None = None) -> ReplicaSpec:
    """What every serving replica is built from; ``manifest``: the menu file replicas watch
    (default: the one ``tiergate compress`` writes for this config)."""
    manifest = manifest if manifest is not None else menu_files(config).manifest
    return ReplicaSpec(
        serving=config.serving, tiers=config.tiers, preprocess=preprocess(config.data), menu=menu,
        manifest=str(manifest),
    )  # fmt: skip


def preprocess(data: DataConfig) -> Preprocess:
    """How the gateway turns an uploaded image into the model's input, as the data was."""
    if data.source in ("npz", "folder"):
        return Preprocess(mean=data.mean, std=data.std)
    return Preprocess()


def build_application(
    config: AppConfig,
    menu: Menu | None = None,
    ingress: Deployment = Ingress,
    variant: Deployment = VariantServer,
    manifest: Path | None = None,
) -> Application:
    """The application for ``config``: the menu (``menu``, else built or read from the
    cache here) bound to the ingress deployment and, in the per_variant topology, one
    deployment per variant. ``ingress``/``variant``: other deployments of the same
    replica classes (tests add fault hooks this way); ``manifest``: the menu file the
    replicas watch and follow (default: the config's, which ``tiergate compress`` writes)."""
    serving = config.serving
    menu = menu if menu is not None else build_menu(config)
    spec = replica_spec(config, menu, manifest).model_dump(mode="json")
    variants = None
    if serving.ray.topology == "per_variant":
        variants = {
            entry["name"]: _variant_deployment(variant, spec, entry["name"], serving)
            for entry in spec["menu"]["variants"]
        }
    return ingress.options(
        num_replicas=serving.ray.replicas,
        max_ongoing_requests=serving.ray.max_ongoing_requests,
        max_queued_requests=serving.ray.max_queued_requests,
        graceful_shutdown_timeout_s=serving.ray.shutdown_timeout_s,
        # ORT threads are set per variant; do not reserve cores
        ray_actor_options={"num_cpus": 0, "resources": serving.ray.ingress_resources},
        logging_config={"enable_access_log": serving.http.access_log},
    ).bind(spec, variants)


def _variant_deployment(
    variant: Deployment, spec: dict[str, Any], name: str, serving: ServingConfig
) -> Application:
    wanted = serving.ray.variant_deployments.get(name)
    options: dict[str, Any] = {
        "name": f"variant-{name.replace('+', '-')}",
        "max_ongoing_requests": serving.ray.max_ongoing_requests,
        "max_queued_requests": serving.ray.max_queued_requests,
        "graceful_shutdown_timeout_s": serving.ray.shutdown_timeout_s,
        "logging_config": {"enable_access_log": serving.http.access_log},
        "ray_actor_options": {
            "num_cpus": wanted.num_cpus if wanted else 0,
            "num_gpus": wanted.num_gpus if wanted else 0,
            "resources": wanted.resources if wanted else {},
        },
    }
    if wanted is not None and wanted.autoscaling is not None:
        options["autoscaling_config"] = wanted.autoscaling
    else:
        options["num_replicas"] = wanted.replicas if wanted else 1
    return variant.options(**options).bind(spec, name)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for ``serve run tiergate.application:app_builder config=PATH``; any other
    argument is a dotted override of the config, as ``tiergate serve --set`` takes them
    (``serving.auth.enabled: true`` in a Serve config file's ``args``). With
    ``compress.live.enabled`` (the default, colocated topology) the application starts on
    what the cache holds, fp32 at least, and a detached coordinator actor (one per
    cluster, started by the first call) builds the rest behind it."""
    overrides = {key: value for key, value in args.items() if key != "config"}
    path = Path(args["config"]) if "config" in args else None
    config = load_config(path, overrides)
    if not config.compress.live.enabled or config.serving.ray.topology != "colocated":
        return build_application(config)  # per_variant: one deployment per variant, all built first
    from tiergate.build.coordinator import first_menu

    menu, built_with = first_menu(config, path, overrides)  # the rest is built behind it (compress.live)
    # this call's settings (a redeploy's), with the model as the build resolved it (its weights)
    return build_application(config.model_copy(update={"model": built_with.model}), menu)
