"""The gateway's own settings (the `serving:` section of the config file), in groups:

    serving:
      http: {host, port, metrics_port, access_log, allow_unauthenticated_remote}
      ray: {ingress, ingress_metrics, topology, variant_deployments, replicas, ingress_resources, ...}
      batching: {max_batch_size, batch_wait_timeout_s, threads_per_variant, ...}
      admission: {request_timeout_s, max_in_flight, max_loop_lag_ms, max_queued_per_variant, late_grace,
                  ingress_max_in_flight, ingress_queue_timeout_ms, reprofile_*}
      routing: {default_tier, latency_headroom, variant_timeout_s, failure_cooldown_s, max_overhead_ms, ...}
      limits: {max_body_bytes, max_batch_images, max_image_pixels, max_image_bytes, body_read_timeout_s, ...}
      auth: {enabled, keys_file, watch_interval_s}
      feedback: {enabled, max_answers, retention_s, max_items}
      shadow: {rate, max_utilisation, max_backlog_ms, max_pending, window_samples, window_s, min_samples,
               demote_z, readmit_samples, timeout_s}

What each setting costs or gains, measured, is in BENCHMARKS.md.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tiergate.serving.auth import AuthConfig
from tiergate.serving.quality_config import FeedbackConfig, ShadowConfig


def _custom_names_only(resources: dict[str, float]) -> dict[str, float]:
    builtin = sorted(set(resources) & {"CPU", "GPU", "memory"})
    if builtin:
        raise ValueError(f"{builtin[0]!r} is not a custom resource: set num_cpus/num_gpus instead")
    return resources


# Ray custom resources a replica needs (``ray start --resources '{"worker_node": 1}'`` gives a
# node some): a small amount pins the replica to the nodes that declare the name
CustomResources = Annotated[dict[str, Annotated[float, Field(gt=0)]], AfterValidator(_custom_names_only)]


class VariantDeployment(BaseModel):
    """One variant's own deployment (``topology: per_variant``)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0, ge=0, description="Ray CPUs reserved per replica")
    num_gpus: float = Field(0, ge=0)
    resources: CustomResources = Field(
        default_factory=dict,
        description="Ray custom resources per replica: runs it only on nodes that have them",
    )
    autoscaling: dict[str, Any] | None = Field(
        None, description="Ray Serve autoscaling_config; replaces replicas when set"
    )


class HttpConfig(BaseModel):
    """Where the gateway listens and what it logs per request."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address Serve's HTTP ingress binds")
    port: int = Field(8000, ge=1, le=65535, description="port Serve's HTTP ingress listens on")
    metrics_port: int = Field(
        8080, ge=1, le=65535, description="Ray's per-node Prometheus endpoint (ours and ray_serve_*)"
    )
    access_log: bool = Field(False, description="Ray Serve's per-request access log lines")
    allow_unauthenticated_remote: bool = Field(
        False,
        description="serve a non-loopback host with API keys off (protected mode's opt-out; logged loudly)",
    )
    # any: Kubernetes' default, traffic flows while the other variants build; all: no variant queued,
    # building or measuring and every manifest variant loaded (one rebuilt while loaded counts as built)
    ready_when: Literal["any", "all"] = Field(
        "any",
        description="/readyz 200 once fp32 serves (any), or once every variant is built and loaded (all)",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine: ``localhost``, 127.0.0.0/8 or ::1.
    Any other name or address (0.0.0.0, ::, a hostname) counts as reachable from outside."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class RayConfig(BaseModel):
    """How the application runs on Ray Serve: ingress, topology and deployment options."""

    model_config = ConfigDict(extra="forbid")

    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="haproxy: Ray's HAProxy ingress straight to the replica; proxy: Serve's proxy actor",
    )
    ingress_metrics: bool = Field(
        False, description="haproxy: Ray Serve's per-request ingress series (ray_serve_num_http_requests_*)"
    )
    topology: Literal["colocated", "per_variant"] = Field(
        "colocated",
        description="colocated: every variant in the ingress replica; per_variant: one deployment each",
    )
    variant_deployments: dict[str, VariantDeployment] = Field(
        default_factory=dict, description="per_variant only: replicas and resources by variant name"
    )
    replicas: int = Field(1, ge=1, description="Ray Serve replicas of the ingress deployment")
    ingress_resources: CustomResources = Field(
        default_factory=dict,
        description="Ray custom resources per ingress replica: runs it on nodes that have them",
    )
    max_ongoing_requests: int = Field(256, ge=1, description="Ray Serve, per replica")
    max_queued_requests: int = Field(
        1024, ge=1, description="Ray Serve, per deployment handle: past it Serve sheds load itself"
    )
    shutdown_timeout_s: float = Field(
        20.0, gt=0, description="at shutdown or redeploy, in-flight requests get this long to finish"
    )
    board_interval_s: float = Field(
        1.0,
        ge=0,
        description="each replica polls the build board (progress, admin broadcasts) this often; 0: never",
    )
    broadcast_timeout_s: float = Field(
        30.0, gt=0, description="an admin command sent to every replica waits this long for their answers"
    )


class BatchingConfig(BaseModel):
    """How a replica runs its variants: batches, ORT threads and run slots."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, description="images per ORT run (dynamic batching)")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="extra wait for a batch to fill; arrivals during a run batch anyway"
    )
    threads_per_variant: int = Field(1, ge=1, description="ORT intra-op threads per variant")
    max_concurrent_runs: int | None = Field(
        None, ge=1, description="ORT runs at once across all variants of a replica (default: its cores)"
    )
    max_runs_per_variant: int | None = Field(
        None, ge=1, description="ORT runs of one variant at once within max_concurrent_runs (default: all)"
    )
    inline_run_max_ms: float = Field(
        25.0,
        ge=0,
        description="a lone request's run expected this short runs on the event loop's thread; 0: never",
    )
    run_niceness: int = Field(
        10, ge=0, le=19, description="nice of the ORT run threads above the event loop's (kernel caps at 19)"
    )


class AdmissionConfig(BaseModel):
    """What a replica admits, and how long a request may take."""

    model_config = ConfigDict(extra="forbid")

    request_timeout_s: float = Field(
        2.0, gt=0, description="every request's deadline: 429 if the queue cannot meet it, 503 once passed"
    )
    max_in_flight: int = Field(
        128,
        ge=1,
        description="inference, route and admin requests inside a replica; past it 503, body unread",
    )
    max_loop_lag_ms: float = Field(
        100.0,
        gt=0,
        description="replica's event loop this far behind: inference, route and admin get 503 unread",
    )
    max_queued_per_variant: int = Field(256, ge=1, description="waiting requests per variant; beyond, 429")
    ingress_max_in_flight: int = Field(
        32, ge=0, description="HAProxy ingress: requests one replica is sent at once (0: no limit)"
    )
    ingress_queue_timeout_ms: int = Field(
        500,
        ge=1,
        description="HAProxy ingress: a request queued this long for a replica gets 503 from HAProxy",
    )
    late_grace: float | None = Field(
        0.5,
        ge=0,
        description="refuse (503) a non-strict request load would answer after (1 + this) x its bound",
    )
    reprofile_min_interval_s: float = Field(
        60.0, ge=0, description="/v1/admin/reprofile at most once this often per replica; sooner: 429"
    )
    reprofile_max_in_flight: int = Field(
        0,
        ge=0,
        description="other requests in flight above this before or while re-profiling: 503, old profile kept",
    )
    reprofile_max_loop_lag_ms: float = Field(
        50.0, gt=0, description="loop this far behind before or while re-profiling: 503, old profile kept"
    )


class RoutingConfig(BaseModel):
    """How requests are routed to variants, and what routing predicts latency from."""

    model_config = ConfigDict(extra="forbid")

    default_tier: str = Field("balanced", description="tier for requests that name none")
    latency_headroom: float = Field(
        0.5, gt=0, le=1, description="route so predicted latency uses at most this fraction of a tier's bound"
    )
    variant_timeout_s: float = Field(
        0.5, gt=0, description="per_variant: a call unanswered this long fails and is retried elsewhere"
    )
    failure_cooldown_s: float = Field(
        5.0, ge=0, description="after a failure, routing avoids the variant this long (pins still reach it)"
    )
    profile_in_replica: bool = Field(
        True, description="time each variant inside the serving replica at start-up and route on that"
    )
    menu_watch_interval_s: float = Field(
        2.0,
        ge=0,
        description="how often each replica re-reads the menu manifest and applies changes; 0: never",
    )
    replica_profile_budget_s: float = Field(
        0.2, gt=0, description="batch-1 timing per variant and pass in the replica (two passes, faster kept)"
    )
    max_overhead_ms: float = Field(
        2.0,
        ge=0,
        description="cap on the gateway's own per-request time (routing) added to every latency prediction",
    )


class LimitsConfig(BaseModel):
    """Request limits (413/422)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(8 << 20, ge=1024, description="larger bodies (and encoded images) get 413")
    max_batch_images: int = Field(64, ge=1, description="images in one request")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="pixels of one image, read before decoding")
    # An image's container is walked before Pillow decodes it (tiergate.serving.images): these
    # bound what a small hostile file can make the decoder allocate or do.
    max_image_bytes: int = Field(
        64 << 20, ge=1, description="decoded bytes of one image (width x height x channels x bit depth / 8)"
    )
    max_image_chunks: int = Field(4096, ge=1, description="PNG chunks or JPEG segments in one image")
    max_image_metadata_bytes: int = Field(
        256 << 10,
        ge=0,
        le=1 << 20,  # Pillow's own text guards are set to 1 MiB (tiergate.serving.images)
        description="PNG ancillary chunks (compressed ones inflated) or JPEG APP/COM segments, together",
    )
    max_jpeg_scans: int = Field(
        16,
        ge=1,
        description="scans of one JPEG: each is a pass over the whole image (progressive ones use ~10)",
    )
    image_decode_timeout_ms: float = Field(
        1000.0, gt=0, description="time one image's decode may take, checked between reads of its data"
    )
    image_decode_threads: int = Field(
        2, ge=1, description="images decoded at once, on the decoder's own threads (not the event loop's)"
    )
    body_read_timeout_s: float = Field(
        10.0, gt=0, description="a request body not read in full this long after its headers gets 408"
    )


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    http: HttpConfig = Field(default_factory=HttpConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys (off by default)")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)

    @model_validator(mode="after")
    def _retry_fits_the_deadline(self) -> ServingConfig:
        variant_timeout_s, request_timeout_s = (
            self.routing.variant_timeout_s,
            self.admission.request_timeout_s,
        )
        if variant_timeout_s >= request_timeout_s:
            raise ValueError(
                f"serving.routing.variant_timeout_s ({variant_timeout_s}) must be shorter than "
                f"serving.admission.request_timeout_s ({request_timeout_s}): else a request to a dead "
                "variant times out before it can be retried"
            )
        return self

    @model_validator(mode="after")
    def _protected_mode(self) -> ServingConfig:
        """Refuse to serve every route, admin included, to the network without keys, unless
        the config says so on purpose (in the spirit of Redis's protected mode)."""
        host = self.http.host
        if self.auth.enabled or self.http.allow_unauthenticated_remote or is_loopback(host):
            return self
        raise ValueError(
            f"serving.http.host is {host!r}, not a loopback address, while API keys are off "
            "(serving.auth.enabled: false): anyone who can reach the port could call the whole API, "
            "admin routes included. Turn keys on with serving.auth.enabled: true and the keys in "
            "serving.auth.keys_file or $TIERGATE_API_KEYS (tiergate serve: --set serving.auth.enabled=true), "
            "serve on 127.0.0.1, or, to serve without keys on purpose, set "
            "serving.http.allow_unauthenticated_remote: true"
        )

    def is_set(self, path: str) -> bool:
        """Whether the config gave the field at ``path`` (below ``serving``, e.g. ``ray.ingress``)
        itself, rather than leaving it to its default (pydantic's ``model_fields_set``)."""
        model: Any = self
        for name in path.split("."):
            if not isinstance(model, BaseModel) or name not in model.model_fields_set:
                return False
            model = getattr(model, name)
        return True
