"""Who may reach what, over the real HTTP app with API keys on (real ORT, no Ray): the target
a request reaches is resolved from every request form, then checked once.

Precedence, as README's API-keys section states it: 401 (no valid key, before the body is
read) → 400/413/422 for a body that does not parse → 403 for a target outside the key's
tiers → 404/422 for names or values the gateway does not know → the request's own answer.
A tier-limited key gets the same 403 for any v2 model name it may not use, known or not."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.asgi import AppClient
from tests.support.keyed import ADMIN, ALL_TIERS, LIMITED, UNKNOWN, bearer, keyed_replica
from tiergate.profiles.tiers import Tier
from tiergate.serving.http import VARIANT_HEADER, create_app

# no latency bounds: each tier's pick depends on accuracy alone; "balanced", the default,
# is outside the limited key's grant, so that key runs under its own tier (fast) by default
TIERS = {
    "fast": Tier(min_accuracy=0.5),
    "balanced": Tier(min_accuracy=0.6),
    "accurate": Tier(max_accuracy_drop=0.0),
}
DEFAULT_TIER = "balanced"
VARIANTS = ("fp32", "int8", "distilled")
IMAGE = [[[0.0] * 8] * 8]
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": IMAGE}]}
MODEL = "<model>"  # stands for the model's own name in generated v2 requests


@pytest.fixture(scope="module")
def client(tiny_menu, tmp_path_factory):
    """One client, so one event loop, for the module (the replica's loop-lag timer lives in it)."""
    replica = keyed_replica(tiny_menu, TIERS, tmp_path_factory.mktemp("keys") / "keys.yaml")
    with AppClient(create_app(replica)) as client:
        yield client


@pytest.fixture(scope="module")
def model(client):
    return client.app.replica.registry.info.model


def _ran_under(response, tier: str, pinned: str | None = None) -> bool:
    """A 200 served under ``tier`` as that tier routed it, or by the ``pinned`` variant."""
    body = response.json()
    run = body.get("parameters", body)  # v2 answers carry the routing in "parameters"
    variant = run["variant"]
    if VARIANT_HEADER.lower() in response.headers and response.headers[VARIANT_HEADER] != variant:
        return False
    by_pin = run["reason"] == "pinned" and variant == pinned
    return response.status_code == 200 and body.get("tier", tier) == tier and (by_pin or pinned is None)


def test_a_tier_limited_key_cannot_pin_a_variant_by_also_naming_its_tier(client):
    """A [fast] key posting {"tier": "fast", "variant": "fp32"} to /v1/predict and /v1/route gets 403."""
    for path, extra in (("/v1/predict", {"inputs": IMAGE}), ("/v1/route", {})):
        pinned = {**extra, "tier": "fast", "variant": "fp32"}
        response = client.request("POST", path, headers=bearer(LIMITED), json=pinned)
        assert response.status_code == 403, response.text
        assert response.json()["field"] == "variant"


@pytest.mark.parametrize("name", ["fp32", "distilled", "accurate", "no-such-model"])
def test_a_tier_limited_key_gets_one_403_for_any_v2_name_it_may_not_use(client, name):
    """A [fast] key gets the same 403 (no "known" list) from v2 infer, metadata and ready for a
    variant, a tier outside its grant or an unknown name: it learns no names from the answer."""
    key = bearer(LIMITED)
    answers = [
        client.request("POST", f"/v2/models/{name}/infer", headers=key, json=V2_BODY),
        client.request("GET", f"/v2/models/{name}", headers=key),
        client.request("GET", f"/v2/models/{name}/ready", headers=key),
    ]
    assert [a.status_code for a in answers] == [403, 403, 403], [a.text for a in answers]
    refusal = f"key limited: model {name!r} is not allowed (tiers: ['fast'])"
    assert all(a.json() == {"error": refusal, "field": "model"} for a in answers)


def test_a_tier_limited_key_reaches_other_tiers_through_no_parameters(client, model):
    """A [fast] key naming the model with parameters.tier "accurate" gets 403; with "fast" or
    none it is served under fast, as that tier routes."""
    path, key = f"/v2/models/{model}/infer", bearer(LIMITED)
    refused = client.request("POST", path, headers=key, json={**V2_BODY, "parameters": {"tier": "accurate"}})
    assert refused.status_code == 403 and refused.json()["field"] == "tier"
    for parameters in ({"tier": "fast"}, {}):
        served = client.request("POST", path, headers=key, json={**V2_BODY, "parameters": parameters})
        assert _ran_under(served, "fast"), served.text


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"inputs": "nope", "top_k": 0}', b'{"inputs": [' + b"0.5, " * 200_000 + b"0.5]}"],
)
def test_without_a_key_a_bad_body_is_401_not_422(client, content):
    """With keys on, /v1/predict and /v1/route answer 401 to a malformed, invalid or large
    (under the limit) body sent without a key, not the 400/422 its parse would give."""
    for path in ("/v1/predict", "/v1/route"):
        response = client.request("POST", path, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"


def test_without_a_key_the_body_is_never_read(client):
    """A keyed route's 401 goes out before the app asks for the body: receive is never called."""
    read = []

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/v1/route", "raw_path": b"/v1/route", "root_path": "",
        "query_string": b"", "headers": [(b"content-type", b"application/json")], "client": ("test", 1),
        "server": ("test", 80), "scheme": "http", "http_version": "1.1",
    }  # fmt: skip
    client.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 401 and not read


def test_a_request_is_authenticated_once(client, model, monkeypatch):
    """The grant found before the body is read is the one the route checks: one key lookup
    per request, on /v1 and v2 inference and on a v2 name check."""
    keys, calls = client.app.replica.keys, []
    authenticate = keys.authenticate
    monkeypatch.setattr(keys, "authenticate", lambda header: calls.append(header) or authenticate(header))
    key = bearer(LIMITED)
    answers = [
        client.request("POST", "/v1/predict", headers=key, json={"inputs": IMAGE}),
        client.request("POST", f"/v2/models/{model}/infer", headers=key, json=V2_BODY),
        client.request("GET", "/v2/models/fast/ready", headers=key),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200] and len(calls) == 3


def test_probes_stay_open_with_keys_on(client):
    """/healthz, /readyz, /v2/health/live and /v2/health/ready answer 200 without a key."""
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert client.request("GET", path).status_code == 200, path


def _admin_routes(client) -> list[tuple[str, str]]:
    routes = [r for r in client.app.app.routes if isinstance(r, APIRoute) and r.path.startswith("/v1/admin/")]
    return [(method, route.path) for route in routes for method in route.methods]


def test_every_admin_route_needs_an_admin_key(client):
    """Each /v1/admin/* route: 401 without a key or with an unknown one, 403 for a tier-limited
    or an all-tiers key; the admin key passes (200, or rebuild's 409: no build board here)."""
    assert {path for _, path in _admin_routes(client)} >= {"/v1/admin/reprofile", "/v1/admin/reload-keys"}
    for method, path in _admin_routes(client):
        statuses = [client.request(method, path, headers=bearer(key)).status_code
                    for key in (None, UNKNOWN, LIMITED, ALL_TIERS, ADMIN)]  # fmt: skip
        admitted = 409 if path == "/v1/admin/rebuild" else 200
        assert statuses == [401, 401, 403, 403, admitted], (path, statuses)


# -- the property: every request form, every kind of key ------------------------------------

KEYS = {"none": None, "invalid": UNKNOWN, "limited": LIMITED, "all-tiers": ALL_TIERS, "admin": ADMIN}
V1_ROUTES = ("/v1/predict", "/v1/route")
V2_ROUTES = ("infer", "metadata", "ready")
TIER_FIELDS = (None, "", "fast", "accurate", "turbo")  # absent, empty, allowed, not allowed, unknown
NOT_A_STRING = 7  # a /v1 tier that fails the body's validation
PINS = (None, "fp32", "distilled", "nope")
V2_NAMES = ("fp32", "distilled", "fast", "accurate", MODEL, "nope")


@st.composite
def request_forms(draw) -> dict:
    """A request: its route, key, and how it names what it wants."""
    form = {"key": draw(st.sampled_from(sorted(KEYS))), "route": draw(st.sampled_from(V1_ROUTES + V2_ROUTES))}
    if form["route"] in V1_ROUTES:
        form.update(tier=draw(st.sampled_from((*TIER_FIELDS, NOT_A_STRING))), pin=draw(st.sampled_from(PINS)))
    else:
        form.update(name=draw(st.sampled_from(V2_NAMES)), parameter_tier=draw(st.sampled_from(TIER_FIELDS)))
    return form


def _send(client, model: str, form: dict):
    headers = bearer(KEYS[form["key"]])
    if form["route"] in V1_ROUTES:
        body = {"tier": form["tier"], "variant": form["pin"]}
        body = {k: v for k, v in body.items() if v is not None}
        payload = {"inputs": IMAGE} if form["route"] == "/v1/predict" else {}
        return client.request("POST", form["route"], headers=headers, json={**payload, **body})
    path = f"/v2/models/{model if form['name'] == MODEL else form['name']}"
    if form["route"] != "infer":
        path = path if form["route"] == "metadata" else f"{path}/ready"
        return client.request("GET", path, headers=headers)
    parameters = {} if form["parameter_tier"] is None else {"tier": form["parameter_tier"]}
    body = {**V2_BODY, "parameters": parameters}
    return client.request("POST", f"{path}/infer", headers=headers, json=body)


def _reaches(form: dict) -> tuple[str | None, str | None, bool]:
    """The oracle's target: (tier, pinned variant, whether the name is known), with no tier
    named read as the limited key's own tier, or the default for the others."""
    default = "fast" if form["key"] == "limited" else DEFAULT_TIER
    if form["route"] in V1_ROUTES:
        return form["tier"] or (None if form["pin"] is not None else default), form["pin"], True
    name = form["name"]
    if name in VARIANTS or name == "nope":
        return None, name if name != "nope" else None, name != "nope"
    if name in TIERS:
        return name, None, True
    named = form["parameter_tier"] if form["route"] == "infer" else None
    return named or default, None, True


def _expected(form: dict) -> int:
    """The status the oracle expects: 401, then 422 for a body that fails validation, then
    403 for a limited key outside its grant, then 404 for an unknown variant or model name
    and 422 for an unknown tier, else 200."""
    if form["key"] in ("none", "invalid"):
        return 401
    if form.get("tier") == NOT_A_STRING:
        return 422
    tier, pin, known = _reaches(form)
    if form["key"] == "limited":
        return 200 if known and pin is None and tier == "fast" else 403
    if not known or (pin is not None and pin not in VARIANTS):
        return 404
    return 422 if tier is not None and tier not in TIERS else 200


@settings(max_examples=150, derandomize=True, deadline=None, database=None)
@given(form=request_forms())
def test_a_key_reaches_exactly_what_its_grant_allows_by_any_route(client, model, form):
    """Every request form and key answers the oracle's status; a 200 that runs a model ran
    under the resolved tier as routed (a limited key's never by a pin), or on the pin."""
    response = _send(client, model, form)
    assert response.status_code == _expected(form), (form, response.text)
    if response.status_code == 200 and form["route"] in ("/v1/predict", "/v1/route", "infer"):
        tier, pin, _ = _reaches(form)
        assert _ran_under(response, tier, pin), (form, response.text)
