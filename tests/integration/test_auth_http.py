"""API keys on the real application over HTTP: 401, 403 by tier, 429 by rate, open health."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.conftest import deployed
from tiergate.serving.auth import digest

pytestmark = pytest.mark.integration

FREE = "free-key-0123456789abcdef"
INTERNAL = "internal-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
ROTATED = "rotated-key-0123456789abcdef"
WATCH_S = 0.5  # serving.auth.watch_interval_s of the application under test


KEYS = (
    f"keys:\n  - {{name: free, sha256: {digest(FREE)}, tiers: [fast], rate_per_s: 1, burst: 3}}\n"
    f"  - {{name: internal, sha256: {digest(INTERNAL)}}}\n"
    f"  - {{name: ops, sha256: {digest(ADMIN)}, admin: true}}\n"
)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    path.write_text(KEYS)
    return path


@pytest.fixture(scope="module")
def client(digits_config, keys_file):
    config = digits_config(auth={"enabled": True, "keys_file": str(keys_file), "watch_interval_s": WATCH_S})
    for url in deployed(config, "tiergate-auth", "/auth"):
        with httpx.Client(base_url=url, timeout=30) as http:
            yield http


def test_keys_gate_inference_by_tier_and_rate(client, digits):
    """Health is open; no key is 401 with WWW-Authenticate, a malformed body too (the key is
    checked before the body is read); the free key gets fast (also when it names no tier),
    403 for another tier, a pin (also with its own tier named) or a v2 name it may not use,
    then 429 with Retry-After past its burst; the internal key may pin a variant."""
    body = {"inputs": digits.test.x[:1].tolist()}
    assert client.get("/readyz").status_code == 200
    missing = client.post("/v1/predict", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/predict", content=b"{not json").status_code == 401
    assert client.get("/v1/variants").status_code == 401
    free = {"Authorization": f"Bearer {FREE}"}
    served = client.post("/v1/predict", json=body, headers=free)
    assert served.status_code == 200 and served.json()["tier"] == "fast"
    for refused in (
        {**body, "tier": "accurate"},
        {**body, "variant": "fp32"},
        {**body, "tier": "fast", "variant": "fp32"},
    ):
        response = client.post("/v1/predict", json=refused, headers=free)
        assert response.status_code == 403 and "free" in response.json()["error"]
    for name in ("fp32", "accurate"):
        assert client.get(f"/v2/models/{name}/ready", headers=free).status_code == 403
    statuses = [client.post("/v1/predict", json=body, headers=free) for _ in range(4)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    internal = {"Authorization": f"Bearer {INTERNAL}"}
    pinned = client.post("/v1/predict", json={**body, "variant": "fp32"}, headers=internal)
    assert pinned.status_code == 200 and pinned.json()["variant"] == "fp32"


def test_admin_operations_need_an_admin_key(client, keys_file):
    """/v1/admin/* is 401 without a key and 403 for a non-admin key; the admin key can
    re-profile, and reload-keys picks up a key added to the file (which then serves) while
    a removed key stops working."""
    assert client.post("/v1/admin/reprofile").status_code == 401
    internal = {"Authorization": f"Bearer {INTERNAL}"}
    refused = client.post("/v1/admin/reprofile", headers=internal)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]
    admin = {"Authorization": f"Bearer {ADMIN}"}
    reprofiled = client.post("/v1/admin/reprofile", headers=admin)
    assert reprofiled.status_code == 200
    assert set(reprofiled.json()["variants"]) == {"fp32", "int8", "distilled"}
    rotated = {"Authorization": f"Bearer {ROTATED}"}
    assert client.get("/v1/tiers", headers=rotated).status_code == 401
    keys_file.write_text(KEYS.replace(digest(INTERNAL), digest(ROTATED)))
    try:
        assert client.post("/v1/admin/reload-keys", headers=admin).json() == {"keys": 3}
        assert client.get("/v1/tiers", headers=rotated).status_code == 200
        assert client.get("/v1/tiers", headers=internal).status_code == 401
    finally:
        keys_file.write_text(KEYS)
        client.post("/v1/admin/reload-keys", headers=admin)


def test_replicas_reload_a_changed_keys_file_by_themselves(client, keys_file):
    """With no admin call, a key added to the file serves and a removed one gets 401 within
    a few watch intervals; a file that does not load keeps the keys in force (reload-keys
    answers 409 naming it), and the next good file is picked up again."""
    internal, rotated = {"Authorization": f"Bearer {INTERNAL}"}, {"Authorization": f"Bearer {ROTATED}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/v1/tiers", headers=internal).status_code == 200

    def picked_up(headers: dict[str, str]) -> None:
        deadline = time.monotonic() + 20 * WATCH_S
        while client.get("/v1/tiers", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the changed keys file was not picked up"
            time.sleep(WATCH_S / 5)

    keys_file.write_text(KEYS.replace(digest(INTERNAL), digest(ROTATED)))
    try:
        picked_up(rotated)
        assert client.get("/v1/tiers", headers=internal).status_code == 401
        keys_file.write_text("keys: [unclosed")
        time.sleep(3 * WATCH_S)
        assert client.get("/v1/tiers", headers=rotated).status_code == 200
        refused = client.post("/v1/admin/reload-keys", headers=admin)
        assert refused.status_code == 409 and str(keys_file) in refused.json()["error"], refused.text
        keys_file.write_text(KEYS)  # the watch outlived the bad file
        picked_up(internal)
        assert client.get("/v1/tiers", headers=rotated).status_code == 401
    finally:
        keys_file.write_text(KEYS)
        client.post("/v1/admin/reload-keys", headers=admin)
