"""The Ray Serve application: one ingress deployment that routes and runs every
variant in its own process (routing and inference co-located: no extra actor hop).

    serve run serving.app:app_builder config=tiergate/configs/default.yaml
    tiergate serve --config tiergate/configs/digits.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from compression.data import DataConfig
from serving.engine import CorruptArtifact, EngineSettings, VariantEngine
from serving.gateway import Gateway
from serving.http import create_app
from serving.inputs import InputDecoder, InputLimits, Preprocess
from tiergate.build import build_menu
from tiergate.config import AppConfig, load_config

log = logging.getLogger(__name__)


class _Replica:
    """Per-process state the module-level FastAPI routes read (one replica per process)."""

    gateway: Gateway | None = None
    max_body_bytes: int = 8 << 20


http_app = create_app(lambda: _Replica.gateway, lambda: _Replica.max_body_bytes)


def load_gateway(config: AppConfig) -> Gateway:
    """Build or load the menu (cached), open one engine per variant, assemble the gateway."""
    menu = build_menu(config)
    serving = config.serving
    settings = EngineSettings(
        threads=serving.threads_per_variant,
        max_batch_size=serving.max_batch_size,
        batch_wait_timeout_s=serving.batch_wait_timeout_s,
        max_queued=serving.max_queued_per_variant,
    )
    engines = {}
    for entry in menu.variants:
        try:
            engines[entry.name] = VariantEngine.load(entry.name, Path(entry.path), entry.sha256, settings)
        except (CorruptArtifact, OSError) as error:
            log.error("variant %s left out of the menu: %s", entry.name, error)
    if menu.variants[0].name not in engines:
        raise RuntimeError("fp32 could not be loaded; refusing to serve without the reference variant")
    limits = InputLimits(serving.max_batch_images, serving.max_body_bytes, serving.max_image_pixels)
    decoder = InputDecoder(menu.input_shape, limits, _preprocess(config.data))
    return Gateway(menu, config.tiers, engines, decoder, serving.default_tier)


def _preprocess(data: DataConfig) -> Preprocess:
    if data.source in ("npz", "folder"):
        return Preprocess(mean=data.mean, std=data.std)
    return Preprocess()


@serve.deployment
@serve.ingress(http_app)
class Ingress:
    def __init__(self, config: dict[str, Any]) -> None:
        app_config = AppConfig.model_validate(config)
        _Replica.max_body_bytes = app_config.serving.max_body_bytes
        _Replica.gateway = load_gateway(app_config)
        log.info("tiergate replica ready with %d variants", len(_Replica.gateway.engines))


def build_application(config: AppConfig) -> Application:
    serving = config.serving
    return Ingress.options(
        num_replicas=serving.replicas,
        max_ongoing_requests=serving.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},  # ORT threads are set per variant; do not reserve cores
    ).bind(config.model_dump(mode="json"))


def app_builder(args: dict[str, str]) -> Application:
    """Entry point for ``serve run serving.app:app_builder config=PATH``."""
    return build_application(load_config(Path(args["config"]) if "config" in args else None))
