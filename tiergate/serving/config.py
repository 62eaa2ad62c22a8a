"""The gateway's own settings (the `serving:` section of the config file)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiergate.serving.auth import AuthConfig


class VariantDeployment(BaseModel):
    """One variant's own deployment (``topology: per_variant``)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0, ge=0, description="Ray CPUs reserved per replica")
    num_gpus: float = Field(0, ge=0)
    autoscaling: dict[str, Any] | None = Field(
        None, description="Ray Serve autoscaling_config; replaces replicas when set"
    )


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys (off by default)")
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="haproxy: Ray 2.60's HAProxy ingress straight to the replica (measured ~5-9 ms a "
        "request faster here; opens a stats page on :8404 and metrics on :9101 on all interfaces); "
        "proxy: Ray Serve's Python HTTP proxy actor",
    )
    ingress_metrics: bool = Field(
        False,
        description="haproxy: Ray Serve's per-request ingress series (ray_serve_num_http_requests_total, "
        "ray_serve_num_ongoing_http_requests, ray_serve_http_request_latency_ms): HAProxy logs every "
        "request to Ray, which parses the lines in Python (measured ~0.3 ms of a request at "
        "concurrency 1); ray_tiergate_requests_total counts every inference answer without it",
    )
    topology: Literal["colocated", "per_variant"] = Field(
        "colocated",
        description="colocated: routing and every variant in one ingress replica (no actor hop; "
        "measured faster); per_variant: one deployment per variant, called through Serve handles",
    )
    variant_deployments: dict[str, VariantDeployment] = Field(
        default_factory=dict, description="per_variant only: replicas and resources by variant name"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = Field(
        8080, ge=1, le=65535, description="Ray's per-node Prometheus endpoint (ours and ray_serve_*)"
    )
    default_tier: str = "balanced"
    replicas: int = Field(1, ge=1)
    threads_per_variant: int = Field(1, ge=1, description="ORT intra-op threads per variant")
    max_batch_size: int = Field(32, ge=1, description="images per ORT run (dynamic batching)")
    run_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="the thread that runs a variant's ORT sessions gets this much lower CPU priority "
        "(nice) than the event loop, which then keeps reading, refusing and answering requests under "
        "overload; the kernel caps nice at 19 (Ray starts replicas at 15)",
    )
    max_concurrent_runs: int | None = Field(
        None,
        ge=1,
        description="ORT runs at once across all variants of a replica (default: the cores it may "
        "use); more runs than cores time-slice the cores the event loop needs to read, refuse and "
        "answer requests",
    )
    max_runs_per_variant: int | None = Field(
        None,
        ge=1,
        description="ORT runs of one variant at once within max_concurrent_runs (default: all of "
        "them), so that a busy variant uses every free core instead of queueing behind its own run; "
        "1: each variant runs one batch at a time",
    )
    inline_run_max_ms: float = Field(
        25.0,
        ge=0,
        description="a request alone in the replica, while all requests of the last second came over "
        "one connection, whose model run is expected to take at most this runs on the event loop's "
        "thread, skipping the hand-off to an ORT thread and back (0.4-1 ms measured at concurrency 1); "
        "a request arriving meanwhile would wait that long to be read, so the run must also fit the "
        "share of the tightest latency bound of the last 10 s that routing leaves spare "
        "(1 - latency_headroom). 0: always hand off",
    )
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="extra wait for a batch to fill; arrivals during a run batch anyway"
    )
    max_queued_per_variant: int = Field(256, ge=1, description="beyond this, answer 429")
    max_in_flight: int = Field(
        128,
        ge=1,
        description="inference requests inside one replica at once; past it 503 before the body is "
        "read (under overload a refusal must cost far less than an answer)",
    )
    max_loop_lag_ms: float = Field(
        100.0,
        gt=0,
        description="when the replica's event loop runs this far behind, inference requests get 503 "
        "before the body is read: requests are then waiting unread on their sockets, and answering "
        "them all would only lengthen that wait",
    )
    max_ongoing_requests: int = Field(256, ge=1, description="Ray Serve, per replica")
    max_queued_requests: int = Field(
        1024, ge=1, description="Ray Serve, per deployment handle: past it Serve sheds load itself"
    )
    request_timeout_s: float = Field(
        2.0,
        gt=0,
        description="deadline of every request (a request's timeout_ms may shorten it): one the queue "
        "cannot answer in time gets 429 at once, one still queued at its deadline 503",
    )
    shutdown_timeout_s: float = Field(
        20.0, gt=0, description="at shutdown or redeploy, in-flight requests get this long to finish"
    )
    variant_timeout_s: float = Field(
        0.5,
        gt=0,
        description="per_variant: a call with no answer this long (e.g. its replica died) counts as a "
        "failure and is retried elsewhere; shorter than request_timeout_s so the retry has time",
    )
    failure_cooldown_s: float = Field(
        5.0, ge=0, description="after a failure, routing avoids the variant this long (pins still reach it)"
    )
    latency_headroom: float = Field(
        0.5,
        gt=0,
        le=1,
        description="route so that predicted latency uses at most this fraction of a "
        "tier's bound, leaving the rest for jitter the prediction cannot see (CPU contention, GC) "
        "and for the time outside the replica (proxy, network, client): measured at 2x load, 0.5 "
        "kept 95-97% of balanced requests within the bound by the client's clock, 0.8 kept 91-93%",
    )
    access_log: bool = Field(
        False, description="Ray Serve's per-request access log lines (cost ~0.15 ms a request, measured)"
    )
    profile_in_replica: bool = Field(
        True, description="time each variant inside the serving replica at start-up and route on that"
    )
    replica_profile_budget_s: float = Field(
        0.2, gt=0, description="replica: batch-1 timing per variant and pass (two passes, the faster kept)"
    )
    max_body_bytes: int = Field(8 << 20, ge=1024, description="larger bodies get 413")
    max_batch_images: int = Field(64, ge=1, description="images in one request")
    max_image_pixels: int = Field(4096 * 4096, ge=1)

    @model_validator(mode="after")
    def _retry_fits_the_deadline(self) -> ServingConfig:
        if self.variant_timeout_s >= self.request_timeout_s:
            raise ValueError(
                f"serving.variant_timeout_s ({self.variant_timeout_s}) must be shorter than "
                f"serving.request_timeout_s ({self.request_timeout_s}): else a request to a dead variant "
                "times out before it can be retried"
            )
        return self
