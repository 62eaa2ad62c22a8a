"""deploy/ off loopback: the KubeRay manifest runs Ray with token auth from a Secret, publishes
neither the Ray client nor an open dashboard, fences its pods with a NetworkPolicy, hardens
every container and pins its image; the Docker image and compose serve with API keys on."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.unit.deploy.test_manifests import CLUSTER, COMPOSE, DEPLOY, GROUPS, NETWORK_POLICY, ROOT
from tiergate.cli import _overrides, _parser
from tiergate.config import load_config

GROUP_IDS = [group.get("groupName", "head") for group in GROUPS]
RAY_LABELS = {"app.kubernetes.io/name": "tiergate"}


def containers():
    """Every container of every Ray pod, with its pod spec."""
    specs = [group["template"]["spec"] for group in GROUPS]
    return [(spec, container) for spec in specs for container in spec["containers"]]


def test_ray_token_auth_comes_from_a_secret():
    """authOptions turns Ray's token auth on with the token in the Secret tiergate-ray-token
    (KubeRay sets RAY_AUTH_MODE and RAY_AUTH_TOKEN in every Ray container from it)."""
    assert CLUSTER["authOptions"] == {"mode": "token", "secretName": "tiergate-ray-token"}
    for _, container in containers():
        names = {e["name"] for e in container["env"]}
        assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # KubeRay's, not ours to override


@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_no_ray_client_port_is_published(group):
    """No Ray pod declares the Ray client port (10001), so no Service of KubeRay's exposes it."""
    (container,) = group["template"]["spec"]["containers"]
    assert 10001 not in {port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_every_container_is_hardened(group):
    """Non-root user, no privilege escalation, read-only root filesystem, no capabilities and
    the runtime's seccomp profile, on the pod and every container; no service account token."""
    spec = group["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_ray_writes_to_an_empty_dir_at_tmp(group):
    """With the root filesystem read-only, /tmp (Ray's session folder, HAProxy's files) is an emptyDir."""
    spec = group["template"]["spec"]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_the_image_is_pinned_to_a_version_or_digest():
    """Every container's image names a version tag (not latest) or a sha256 digest."""
    for _, container in containers():
        image = container["image"]
        assert re.fullmatch(r"[\w./-]+(:\d+\.\d+\.\d+|@sha256:[0-9a-f]{64})", image), image


def test_network_policy_fences_every_ray_pod():
    """The NetworkPolicy selects the Ray pods' label and only admits: the serve port from
    anywhere, the dashboard from the KubeRay operator, metrics from Prometheus, and anything
    from the cluster's own pods. HAProxy's side ports and the Ray client are reachable from no other pod."""
    assert (NETWORK_POLICY["apiVersion"], NETWORK_POLICY["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    spec = NETWORK_POLICY["spec"]
    assert spec["podSelector"]["matchLabels"] == RAY_LABELS and spec["policyTypes"] == ["Ingress"]
    for group in GROUPS:
        assert group["template"]["metadata"]["labels"].items() >= RAY_LABELS.items()
    rules = {
        tuple(port["port"] for port in rule.get("ports", [])): [
            peer.get("podSelector", {}).get("matchLabels") for peer in rule.get("from", [])
        ]
        for rule in spec["ingress"]
    }
    assert rules == {
        (8000,): [],  # from anywhere
        (8265,): [{"app.kubernetes.io/name": "kuberay-operator"}],
        (8080,): [{"app.kubernetes.io/name": "prometheus"}],
        (): [RAY_LABELS],  # every port, between the cluster's pods only
    }


def _dockerfile_command() -> list[str]:
    """The image's ENTRYPOINT arguments: the Dockerfile's CMD, as JSON."""
    import json

    (cmd,) = re.findall(r"^CMD\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return json.loads(cmd)


@pytest.mark.parametrize(
    "command",
    [_dockerfile_command(), COMPOSE["services"]["gateway"]["command"]],
    ids=["Dockerfile", "compose"],
)
def test_image_and_compose_commands_pass_protected_mode_with_keys(command):
    """The Docker image's and compose's `tiergate serve` command line, parsed by the real CLI,
    serves on all interfaces with keys on and loads (protected mode satisfied), without the opt-out."""
    args = _parser().parse_args(command)
    overrides = _overrides(args)
    overrides["serving.http.host"] = args.host
    serving = load_config(None, overrides).serving
    assert serving.http.host == "0.0.0.0" and serving.auth.enabled
    assert not serving.http.allow_unauthenticated_remote


def test_no_deployment_opts_out_of_protected_mode():
    """No manifest or config under deploy/ nor the Dockerfile turns the opt-out setting on."""
    files = [ROOT / "Dockerfile", *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    opt_out = re.compile(r"allow_unauthenticated_remote\W+true", re.IGNORECASE)
    assert not [p for p in files if opt_out.search(p.read_text(errors="ignore"))]


def test_compose_requires_the_keys_and_commits_none():
    """Compose takes TIERGATE_API_KEYS from the environment or an env file, refusing to start
    without it (${VAR:?...}); no key is written in the file."""
    gateway = COMPOSE["services"]["gateway"]
    assert re.fullmatch(r"\$\{TIERGATE_API_KEYS:\?[^}]+\}", gateway["environment"]["TIERGATE_API_KEYS"])
    assert "security_opt" in gateway and gateway["cap_drop"] == ["ALL"]
    assert shlex.join(gateway["command"]).count("serving.auth.enabled=true") == 1
