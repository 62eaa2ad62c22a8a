"""The KubeRay manifest passes Checkov's Kubernetes policies (https://www.checkov.io). Checkov
reads Pods, not KubeRay's RayService, so each Ray pod template is checked as the Pod KubeRay
makes of it, beside the manifest's NetworkPolicy, in the namespace the manifest is applied to
(it names none: `kubectl apply -n NAMESPACE`). Skips when Checkov is not installed
(`make install` puts it in .venv-policy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.unit.deploy.test_manifests import GROUPS, NETWORK_POLICY, ROOT

# waived, and why: the image is built locally from this repository, so a digest cannot be
# known in advance (it is pinned to a version tag instead) and "Always" pulling would fail
# where it was never pushed; the image's user is uid 1000, which the shared cache's files
# already belong to
NAMESPACE = "tiergate"
WAIVED = {
    "CKV_K8S_43": "image by digest",
    "CKV_K8S_15": "imagePullPolicy Always",
    "CKV_K8S_40": "uid >= 10000",
}


def checkov() -> str | None:
    """The checkov executable: the Makefile's .venv-policy, else one on PATH."""
    local = ROOT / ".venv-policy" / "bin" / "checkov"
    return str(local) if local.is_file() else shutil.which("checkov")


@pytest.mark.skipif(checkov() is None, reason="checkov not installed (make install puts it in .venv-policy)")
def test_ray_pods_pass_checkovs_kubernetes_policies(tmp_path):
    """Every Ray pod, as a Pod beside the NetworkPolicy, fails none of Checkov's Kubernetes
    checks but the waived ones, and Checkov ran checks at all."""
    for index, group in enumerate(GROUPS):
        template = group["template"]
        metadata = {"name": f"ray-{index}", "namespace": NAMESPACE, **template["metadata"]}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
        (tmp_path / f"pod-{index}.yaml").write_text(yaml.safe_dump(pod))
    policy = {**NETWORK_POLICY, "metadata": {**NETWORK_POLICY["metadata"], "namespace": NAMESPACE}}
    (tmp_path / "network-policy.yaml").write_text(yaml.safe_dump(policy))
    result = subprocess.run(
        [checkov(), "--directory", str(tmp_path), "--framework", "kubernetes", "--output", "json",
         "--skip-download", "--skip-check", ",".join(WAIVED)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["check_name"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 0
