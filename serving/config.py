"""The gateway's own settings (the `serving:` section of the config file)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ingress: Literal["proxy", "haproxy"] = Field(
        "proxy",
        description="proxy: Ray Serve's Python HTTP proxy; haproxy: Ray 2.60's HAProxy ingress "
        "(feature flag; opens stats on :8404 and metrics on :9101 on all interfaces)",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    default_tier: str = "balanced"
    replicas: int = Field(1, ge=1)
    threads_per_variant: int = Field(1, ge=1, description="ORT intra-op threads per variant")
    max_batch_size: int = Field(32, ge=1, description="images per ORT run (dynamic batching)")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="extra wait for a batch to fill; arrivals during a run batch anyway"
    )
    max_queued_per_variant: int = Field(256, ge=1, description="beyond this, answer 429")
    max_ongoing_requests: int = Field(256, ge=1, description="Ray Serve, per replica")
    max_body_bytes: int = Field(8 << 20, ge=1024, description="larger bodies get 413")
    max_batch_images: int = Field(64, ge=1, description="images in one request")
    max_image_pixels: int = Field(4096 * 4096, ge=1)
