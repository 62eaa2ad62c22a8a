"""POST /v1/feedback over the real app and a replica with real ORT (no Ray): predict, feed
the label back, and the answer is joined to what served it; refusals are named; with API
keys on, only a key that may use the serving tier may label."""

from __future__ import annotations

import pytest

from tests.support.asgi import AppClient
from tests.support.keyed import ALL_TIERS, LIMITED, bearer, keyed_replica
from tests.support.metrics import Statuses
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.http import create_app

TIERS = {"fast": Tier(min_accuracy=0.5), "balanced": Tier(max_latency_ms=60_000.0, min_accuracy=0.6)}
SERVING = ServingConfig(
    admission={"max_loop_lag_ms": 60_000}, routing={"default_tier": "balanced"}, feedback={"max_answers": 8}
)


@pytest.fixture(scope="module")
def sink():
    return Statuses()


@pytest.fixture(scope="module")
def client(tiny_menu, sink):
    replica = replica_for(tiny_menu, TIERS, serving=SERVING, metrics=lambda registry: sink)
    with AppClient(create_app(replica)) as client:
        yield client


def _predict(client, digits, start: int, images: int = 1, headers=None, **body) -> dict:
    x = digits.test.x[start : start + images].tolist()
    response = client.request("POST", "/v1/predict", json={"inputs": x, **body}, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_label_for_a_served_batch_is_joined_to_its_predictions(client, digits, sink):
    """Two images predicted, then labelled with their true classes: accepted, with the
    variant and tier that served them and the number predicted right; the sink counts it."""
    answer = _predict(client, digits, 0, images=2)
    truth = digits.test.y[:2].tolist()
    right = sum(p["index"] == y for p, y in zip(answer["predictions"], truth, strict=True))
    response = client.request(
        "POST", "/v1/feedback", json={"request_id": answer["request_id"], "label": truth}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result == {
        "request_id": answer["request_id"], "outcome": "accepted", "variant": answer["variant"],
        "tier": "balanced", "labelled": 2, "correct": right,
    }  # fmt: skip
    assert sink.feedback_items[-1] == ("accepted", answer["variant"], 2, right)


def test_a_v2_answer_is_labelled_by_its_id(client, digits):
    """A v2 infer's answer, by the id it echoed, takes a label; the item reports it accepted."""
    model = client.app.replica.registry.info.model
    x = digits.test.x[5:6]
    body = {"id": "v2-req-1", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                          "data": x.ravel().tolist()}]}  # fmt: skip
    assert client.request("POST", f"/v2/models/{model}/infer", json=body).status_code == 200
    labelled = {"items": [{"request_id": "v2-req-1", "label": int(digits.test.y[5])}]}
    response = client.request("POST", "/v1/feedback", json=labelled)
    assert response.json()["accepted"] == 1 and response.json()["results"][0]["labelled"] == 1


@pytest.mark.parametrize(
    ("request_id", "status", "outcome"), [("never-served", 404, "unknown"), ("twice", 409, "duplicate")]
)
def test_a_single_label_refused_answers_its_status_and_names_the_outcome(
    client, digits, request_id, status, outcome
):
    """The one-label form answers a refusal with its status (404 unknown, 409 duplicate),
    naming the outcome and the request_id field."""
    served = _predict(client, digits, 7)["request_id"]
    body = {"request_id": request_id if request_id == "never-served" else served, "label": 1}
    if outcome == "duplicate":
        client.request("POST", "/v1/feedback", json=body)
    response = client.request("POST", "/v1/feedback", json=body)
    assert response.status_code == status, response.text
    assert response.json()["outcome"] == outcome and response.json()["field"] == "request_id"


def test_an_answer_pushed_out_of_the_store_is_expired(client, digits):
    """Past serving.feedback.max_answers (8) the oldest answer is gone: 410, outcome expired;
    in the batch form the same item is named expired beside an accepted one."""
    first = _predict(client, digits, 10)["request_id"]
    later = [_predict(client, digits, 11 + i)["request_id"] for i in range(8)]
    single = client.request("POST", "/v1/feedback", json={"request_id": first, "label": 0})
    assert single.status_code == 410 and single.json()["outcome"] == "expired"
    items = [{"request_id": first, "label": 0}, {"request_id": later[-1], "label": 0}]
    batch = client.request("POST", "/v1/feedback", json={"items": items}).json()
    assert [r["outcome"] for r in batch["results"]] == ["expired", "accepted"] and batch["accepted"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [({"label": 10}, "label"), ({"label": -1}, "label"), ({"label": "3"}, "label"),
     ({"label": [1, 2]}, "label"), ({"items": [{"label": 1}]}, "items.0.request_id"), ({}, "body")],
)  # fmt: skip
def test_invalid_labels_are_422_naming_the_field(client, digits, body, field):
    """A label that is no class index (10 of 10 classes, negative, a string), labels that do
    not match the request's one image, or a missing field: 422 naming it; nothing taken."""
    served = _predict(client, digits, 30)["request_id"]
    body = {"request_id": served, **body} if "label" in body else body
    response = client.request("POST", "/v1/feedback", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith(field)
    assert client.request("POST", "/v1/feedback", json={"request_id": served, "label": 1}).status_code == 200


def test_only_a_key_that_may_use_the_serving_tier_may_label(tiny_menu, tmp_path, digits):
    """With keys on: no key is 401; the [fast] key labels its own fast answer but is refused
    (403, outcome forbidden) on an answer served under balanced; the all-tiers key may."""
    replica = keyed_replica(tiny_menu, TIERS, tmp_path / "keys.yaml")
    with AppClient(create_app(replica)) as client:
        fast = _predict(client, digits, 40, headers=bearer(LIMITED))
        balanced = _predict(client, digits, 41, headers=bearer(ALL_TIERS), tier="balanced")
        assert fast["tier"] == "fast" and balanced["tier"] == "balanced"
        label = {"request_id": balanced["request_id"], "label": 1}
        assert client.request("POST", "/v1/feedback", json=label).status_code == 401
        refused = client.request("POST", "/v1/feedback", json=label, headers=bearer(LIMITED))
        assert refused.status_code == 403 and refused.json()["outcome"] == "forbidden"
        own = {"request_id": fast["request_id"], "label": 1}
        assert client.request("POST", "/v1/feedback", json=own, headers=bearer(LIMITED)).status_code == 200
        assert (
            client.request("POST", "/v1/feedback", json=label, headers=bearer(ALL_TIERS)).status_code == 200
        )
