"""deploy/kuberay and deploy/docker-compose.yml: the RayService runs the same Serve
application as deploy/serve-config.yaml, with a shared cache and scrapeable metrics, and
compose wires the gateway, Prometheus and Grafana together."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.unit.deploy.dashboard import PROMETHEUS, ROOT
from tiergate.config import load_config
from tiergate.serving.ray_env import RAY_FLAGS, ray_flags

DEPLOY = ROOT / "deploy"
SERVE_CONFIG = DEPLOY / "serve-config.yaml"
SERVICE, CLAIM, NETWORK_POLICY = yaml.safe_load_all((DEPLOY / "kuberay" / "rayservice.yaml").read_text())
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
CLUSTER = SERVICE["spec"]["rayClusterConfig"]
GROUPS = [CLUSTER["headGroupSpec"], *CLUSTER["workerGroupSpecs"]]


def serve_config() -> ServeDeploySchema:
    """The RayService's serveConfigV2, validated by Ray's own schema."""
    return ServeDeploySchema.model_validate(yaml.safe_load(SERVICE["spec"]["serveConfigV2"]))


def image_workdir() -> str:
    """The Dockerfile's WORKDIR, where the repository's files are in the image."""
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return workdir


def test_rayservice_kind_and_claim_document():
    """The file holds a ray.io/v1 RayService and a ReadWriteMany claim named tiergate-cache."""
    assert (SERVICE["apiVersion"], SERVICE["kind"]) == ("ray.io/v1", "RayService")
    assert (CLAIM["kind"], CLAIM["metadata"]["name"]) == ("PersistentVolumeClaim", "tiergate-cache")
    assert CLAIM["spec"]["accessModes"] == ["ReadWriteMany"]


def test_serve_config_validates_and_its_builder_imports():
    """serveConfigV2 passes ServeDeploySchema and its import path names a callable."""
    (app,) = serve_config().applications
    module, _, attribute = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


def test_serve_config_matches_serve_config_yaml():
    """The RayService deploys what deploy/serve-config.yaml does, with the config at its image path."""
    local = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    (ours,), (theirs,) = serve_config().applications, local.applications
    for field in ("name", "route_prefix", "import_path"):
        assert getattr(ours, field) == getattr(theirs, field)
    assert serve_config().http_options.port == local.http_options.port
    assert ours.args["config"] == f"{image_workdir()}/{theirs.args['config']}"


def test_serve_config_path_loads_from_the_repository():
    """The config path in the image maps to a tiergate config in the repository that loads."""
    relative = Path(serve_config().applications[0].args["config"]).relative_to(image_workdir())
    assert load_config(ROOT / relative).model.name


def test_every_deployment_turns_api_keys_on():
    """The Serve config, the RayService (keys from a Secret mounted as serving.auth.keys_file
    in every pod) and compose (keys from the environment) all run with serving.auth.enabled,
    and the overrides load."""
    local = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]["args"]
    for args in (local, serve_config().applications[0].args):
        assert args["serving.auth.enabled"] is True
        overrides = {key: value for key, value in args.items() if key != "config"}
        assert load_config(ROOT / local["config"], overrides).serving.auth.enabled
    keys_file = Path(serve_config().applications[0].args["serving.auth.keys_file"])
    for group in GROUPS:
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(keys_file.parent)]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert mount["readOnly"] is True
        assert volume["secret"]["secretName"] == "tiergate-api-keys"
        assert volume["secret"]["items"] == [{"key": keys_file.name, "path": keys_file.name}]
        assert not [e for e in container.get("env", []) if "valueFrom" in e]  # no secret in the environment
    gateway = COMPOSE["services"]["gateway"]
    assert "serving.auth.enabled=true" in gateway["command"]
    assert "TIERGATE_API_KEYS" in gateway["environment"]


@pytest.mark.parametrize("group", GROUPS, ids=lambda group: group.get("groupName", "head"))
def test_pods_export_metrics_and_share_the_cache(group):
    """Every Ray pod exports metrics on 8080, is annotated for scraping and mounts the shared cache."""
    assert group["rayStartParams"]["metrics-export-port"] == "8080"
    template = group["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"
    (container,) = template["spec"]["containers"]
    assert {"name": "TIERGATE_CACHE_DIR", "value": "/cache"} in container["env"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/cache"]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == CLAIM["metadata"]["name"]


def test_rayservice_has_one_worker_group():
    """A head group and exactly one worker group."""
    assert len(CLUSTER["workerGroupSpecs"]) == 1


def test_compose_runs_gateway_prometheus_and_grafana():
    """Compose names the three services; the gateway builds the repository's Dockerfile and
    publishes the HTTP and metrics ports."""
    services = COMPOSE["services"]
    assert set(services) == {"gateway", "prometheus", "grafana"}
    gateway = services["gateway"]
    assert (DEPLOY / gateway["build"] / "Dockerfile").is_file()
    assert {"8000:8000", "8080:8080"} <= set(gateway["ports"])
    assert gateway["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert services["grafana"]["ports"] == ["3000:3000"]


def test_compose_prometheus_scrapes_the_gateway_service():
    """Prometheus in compose reads a mounted config whose target is the gateway service's metrics port."""
    prometheus = COMPOSE["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    (flag,) = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    config = yaml.safe_load((PROMETHEUS / Path(flag.partition("=")[2]).name).read_text())
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["gateway:8080"]}]


def described_config():
    """The tiergate config both Serve configs describe: serve-config.yaml's path and overrides."""
    args = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]["args"]
    return load_config(ROOT / args["config"], {key: value for key, value in args.items() if key != "config"})


@pytest.mark.parametrize("group", GROUPS, ids=lambda group: group.get("groupName", "head"))
def test_every_pod_sets_exactly_the_ray_flags_tiergate_serve_sets(group):
    """Every Ray pod's environment holds exactly the Ray flags of tiergate's table for the
    config the RayService runs (HAProxy ingress, ...), RAY_AUTH_MODE aside, which KubeRay sets
    from authOptions: a flag dropped from the manifest, one added to the table or a value
    changed on either side fails here."""
    expected = ray_flags(described_config().serving)
    assert expected["RAY_SERVE_ENABLE_HA_PROXY"] == "1"  # the config as shipped: HAProxy ingress
    assert CLUSTER["authOptions"]["mode"] == expected.pop("RAY_AUTH_MODE") == "token"
    # tiergate's HAProxy wrapper where the image's pip puts console scripts (python:3.11-slim)
    assert re.search(r"^FROM python:\S+-slim", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    wrapper = Path(expected["RAY_SERVE_HAPROXY_BINARY_PATH"])
    expected["RAY_SERVE_HAPROXY_BINARY_PATH"] = f"/usr/local/bin/{wrapper.name}"
    (container,) = group["template"]["spec"]["containers"]
    flags = {flag.name for flag in RAY_FLAGS}  # Ray's, and tiergate's own for its HAProxy wrapper
    env = {e["name"]: e.get("value") for e in container["env"]}
    set_here = {name: value for name, value in env.items() if name.startswith("RAY_") or name in flags}
    assert set_here == expected


def test_serve_configs_leave_ray_flags_to_the_environment_ray_starts_in():
    """Neither Serve config sets Ray flags in a runtime_env (which reaches only the replicas,
    not Serve's controller and proxies); serve-config.yaml tells how to export them for its
    own config with `tiergate ray-env`, and the RayService sets them on every pod."""
    local = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    for app in (*local.applications, *serve_config().applications):
        env_vars = (app.runtime_env or {}).get("env_vars", {})
        assert not [name for name in env_vars if name.startswith("RAY_")]
    config = local.applications[0].args["config"]
    assert f'eval "$(tiergate ray-env --config {config})"' in SERVE_CONFIG.read_text()
