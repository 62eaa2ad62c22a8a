"""The serving section's groups: defaults, refusals, the cross-field check, and which
fields a config set itself."""

from __future__ import annotations

import pytest

from tiergate.config import ConfigError, load_config
from tiergate.serving.config import ServingConfig

DEFAULTS = {
    "http.host": "127.0.0.1",
    "http.port": 8000,
    "http.metrics_port": 8080,
    "http.access_log": False,
    "http.allow_unauthenticated_remote": False,
    "http.ready_when": "any",
    "ray.ingress": "haproxy",
    "ray.ingress_metrics": False,
    "ray.topology": "colocated",
    "ray.variant_deployments": {},
    "ray.replicas": 1,
    "ray.ingress_resources": {},
    "ray.max_ongoing_requests": 256,
    "ray.max_queued_requests": 1024,
    "ray.shutdown_timeout_s": 20.0,
    "ray.board_interval_s": 1.0,
    "ray.broadcast_timeout_s": 30.0,
    "batching.max_batch_size": 32,
    "batching.batch_wait_timeout_s": 0.0,
    "batching.threads_per_variant": 1,
    "batching.max_concurrent_runs": None,
    "batching.max_runs_per_variant": None,
    "batching.inline_run_max_ms": 25.0,
    "batching.run_niceness": 10,
    "admission.request_timeout_s": 2.0,
    "admission.max_in_flight": 128,
    "admission.max_loop_lag_ms": 100.0,
    "admission.max_queued_per_variant": 256,
    "admission.late_grace": 0.5,
    "admission.ingress_max_in_flight": 32,
    "admission.ingress_queue_timeout_ms": 500,
    "admission.reprofile_min_interval_s": 60.0,
    "admission.reprofile_max_in_flight": 0,
    "admission.reprofile_max_loop_lag_ms": 50.0,
    "routing.default_tier": "balanced",
    "routing.latency_headroom": 0.5,
    "routing.variant_timeout_s": 0.5,
    "routing.failure_cooldown_s": 5.0,
    "routing.profile_in_replica": True,
    "routing.replica_profile_budget_s": 0.2,
    "routing.menu_watch_interval_s": 2.0,
    "routing.max_overhead_ms": 2.0,
    "limits.max_body_bytes": 8 << 20,
    "limits.max_batch_images": 64,
    "limits.max_image_pixels": 4096 * 4096,
    "limits.max_image_bytes": 64 << 20,
    "limits.max_image_chunks": 4096,
    "limits.max_image_metadata_bytes": 256 << 10,
    "limits.max_jpeg_scans": 16,
    "limits.image_decode_timeout_ms": 1000.0,
    "limits.image_decode_threads": 2,
    "limits.body_read_timeout_s": 10.0,
    "feedback.enabled": True,
    "feedback.max_answers": 50_000,
    "feedback.retention_s": 3600.0,
    "feedback.max_items": 1000,
    "shadow.rate": 0.02,
    "shadow.max_utilisation": 0.25,
    "shadow.max_backlog_ms": 5.0,
    "shadow.max_pending": 4,
    "shadow.max_cpu_share": 0.02,
    "shadow.window_samples": 1000,
    "shadow.window_s": 3600.0,
    "shadow.min_samples": 100,
    "shadow.demote_z": 3.29,
    "shadow.readmit_samples": 200,
    "shadow.timeout_s": 5.0,
}


def _get(model, path: str):
    for name in path.split("."):
        model = getattr(model, name)
    return model


def test_every_setting_has_its_group_and_default():
    """Each group holds exactly the fields listed, with their defaults (auth aside)."""
    serving = ServingConfig()
    fields = {
        f"{group}.{name}"
        for group, info in ServingConfig.model_fields.items()
        if group != "auth"
        for name in info.annotation.model_fields
    }
    assert fields == set(DEFAULTS)
    assert {path: _get(serving, path) for path in DEFAULTS} == DEFAULTS


def test_every_description_is_one_short_line():
    """The descriptions are one line each (figures belong in BENCHMARKS.md)."""
    for group, info in ServingConfig.model_fields.items():
        if group == "auth":
            continue
        for name, field in info.annotation.model_fields.items():
            assert field.description and len(field.description) <= 110, f"serving.{group}.{name}"
            assert "measured" not in field.description, f"serving.{group}.{name}"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"serving.max_batch_size": 8}, "serving.max_batch_size"),  # the flat name of old
        ({"serving.batching.max_batch_size": 0}, "serving.batching.max_batch_size"),
        ({"serving.batching.max_in_flight": 8}, "serving.batching.max_in_flight"),  # the wrong group
    ],
)
def test_flat_and_misplaced_fields_are_refused_by_their_path(overrides, named):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert named in str(error.value)


def test_a_retry_must_fit_the_deadline_and_the_error_names_both_fields():
    """routing.variant_timeout_s must be shorter than admission.request_timeout_s."""
    overrides = {"serving.routing.variant_timeout_s": 1.0, "serving.admission.request_timeout_s": 1.0}
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert "serving.routing.variant_timeout_s (1.0)" in str(error.value)
    assert "serving.admission.request_timeout_s (1.0)" in str(error.value)


def test_the_config_records_which_fields_it_set_itself(tmp_path):
    """A field given in the file or as an override counts as set, even at its default value;
    a field left out does not, nor does any field of a group left out."""
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\nserving:\n  ray: {ingress: haproxy}\n")
    serving = load_config(path, {"serving.batching.max_batch_size": 8}).serving
    assert serving.is_set("ray.ingress") and serving.is_set("batching.max_batch_size")
    assert not serving.is_set("ray.ingress_metrics") and not serving.is_set("admission.max_in_flight")
    assert not load_config(None).serving.is_set("ray.ingress")
