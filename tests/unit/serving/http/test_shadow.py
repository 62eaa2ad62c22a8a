"""Shadow sampling over the real app and a replica with real ORT (no Ray, no mocks of the
engine): a variant whose file is broken is demoted after a stated number of shadowed
requests at the default rate, a distribution shift drops live fidelity, clean traffic
demotes nothing, and a fixed artifact is re-admitted by probing."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.asgi import AppClient
from tests.support.metrics import Statuses
from tests.support.replicas import replica_for
from tests.support.shadow import broken_variant, sampled_ids
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.http import create_app

TIERS = {"balanced": Tier(min_accuracy=0.5)}
SERVING = ServingConfig(admission={"max_loop_lag_ms": 60_000}, routing={"default_tier": "balanced"})
MIN_SAMPLES = SERVING.shadow.min_samples  # 100: shadowed one-image requests until a verdict


def _app(menu, sink, **entries):
    """A client of the app over ``menu`` with some entries replaced (``distilled=broken``)."""
    variants = [entries.get(entry.name, entry) for entry in menu.variants]
    replica = replica_for(menu.model_copy(update={"variants": variants}), TIERS, serving=SERVING,
                          metrics=lambda registry: sink)  # fmt: skip
    return AppClient(create_app(replica))


def _predict(client, x: np.ndarray, request_id: str, **body) -> dict:
    """One request (its shadow run, if any, finished before this returns)."""
    response = client.request("POST", "/v1/predict", json={"inputs": x.tolist(), **body},
                              headers={"X-Request-Id": request_id})  # fmt: skip
    assert response.status_code == 200, response.text
    client.run(client.app.replica.shadow.drain())
    return response.json()


def _row(client, name: str) -> dict:
    (row,) = [row for row in client.request("GET", "/v1/variants").json()["variants"] if row["name"] == name]
    return row


@pytest.fixture
def sink():
    return Statuses()


def test_a_broken_variant_is_demoted_after_min_samples_shadowed_requests(tiny_menu, digits, tmp_path, sink):
    """distilled with its weights spoiled (about 15% agreement with fp32, against 93.6%
    offline), pinned: ids not sampled at the default rate are never shadowed; 99 sampled
    one-image requests leave it serving, the 100th demotes it. /v1/variants shows the state,
    reason and live fidelity; a pin still reaches it, with a warning; tiers name it demoted."""
    broken = broken_variant(tiny_menu.variants[2], tmp_path, noise=1.0)
    x = digits.test.x
    with _app(tiny_menu, sink, distilled=broken) as client:
        for i, request_id in enumerate(sampled_ids(20, chosen=False)):
            _predict(client, x[i : i + 1], request_id, variant="distilled")
        assert {o[1] for o in sink.shadow_outcomes} == {"not_sampled"}
        sampled = sampled_ids(MIN_SAMPLES)
        for i, request_id in enumerate(sampled[:-1]):
            assert _predict(client, x[i : i + 1], request_id, variant="distilled")["warning"] is None
        assert _row(client, "distilled")["state"] == "serving" and not sink.demotions
        _predict(client, x[99:100], sampled[-1], variant="distilled")
        row = _row(client, "distilled")
        assert row["state"] == "demoted" and not row["routed"] and "offline fidelity" in row["state_reason"]
        assert sink.demotions == [("distilled", "demoted")]
        assert row["shadow"]["compared"] == 0 and row["shadow"]["probed"]  # counts again from the demotion
        shadowed = [o for o in sink.shadow_outcomes if o[0] == "distilled" and o[1] == "shadowed"]
        assert len(shadowed) == MIN_SAMPLES and sum(o[3] for o in shadowed) < 0.3 * MIN_SAMPLES
        pinned = _predict(client, x[:1], "after-1", variant="distilled")
        assert pinned["variant"] == "distilled" and "distilled is demoted" in pinned["warning"]
        assert "demoted" in pinned["explanation"]
        routed = client.request("POST", "/v1/route", json={"tier": "balanced"}).json()
        assert routed["variant"] != "distilled" and "demoted: distilled" in routed["explanation"]


def test_a_distribution_shift_drops_live_fidelity_and_demotes(tiny_menu, digits, sink):
    """Inverted images (1 - x) pinned to the healthy distilled: its live fidelity falls far
    below the offline figure (fp32 and the student disagree off the training distribution),
    and it is demoted once min_samples images are compared."""
    x = 1.0 - digits.test.x
    with _app(tiny_menu, sink) as client:
        for i, request_id in enumerate(sampled_ids(MIN_SAMPLES - 1, prefix="shift")):
            _predict(client, x[i : i + 1], request_id, variant="distilled")
        live = _row(client, "distilled")["shadow"]
        assert live["compared"] == MIN_SAMPLES - 1 and live["ci95"][1] < live["offline_low"]
        _predict(client, x[100:101], sampled_ids(MIN_SAMPLES, prefix="shift")[-1], variant="distilled")
        assert _row(client, "distilled")["state"] == "demoted"


def test_clean_traffic_demotes_nothing(tiny_menu, digits, sink):
    """Every test image (359), shadowed in sampled requests of ten pinned to int8 and to
    distilled: neither is demoted, and each one's live 95% interval holds its offline fidelity
    (measured on the same images, in other batches: int8's dynamic quantization moves an image)."""
    x = digits.test.x
    with _app(tiny_menu, sink) as client:
        for name in ("int8", "distilled"):
            for n, request_id in enumerate(sampled_ids(36, prefix=name)):
                _predict(client, x[10 * n : 10 * n + 10], request_id, variant=name)
            row = _row(client, name)
            assert row["state"] == "serving"
            low, high = row["shadow"]["ci95"]
            assert row["shadow"]["compared"] == len(x) and low <= row["fidelity"] <= high
        assert not sink.demotions


def test_a_fixed_artifact_is_readmitted_by_probing(tiny_menu, digits, tmp_path, sink):
    """Broken distilled demoted; its good file swapped back in (still demoted); tier traffic,
    served by another variant, probes it on sampled requests, and after readmit_samples (200)
    agreeing images it serves again."""
    broken = broken_variant(tiny_menu.variants[2], tmp_path, noise=1.0)
    x = digits.test.x
    with _app(tiny_menu, sink, distilled=broken) as client:
        for n, request_id in enumerate(sampled_ids(10, prefix="break")):
            _predict(client, x[10 * n : 10 * n + 10], request_id, variant="distilled")
        assert _row(client, "distilled")["state"] == "demoted"
        client.run(client.app.replica.load_variant(tiny_menu.variants[2]))
        assert _row(client, "distilled")["state"] == "demoted"
        readmit = SERVING.shadow.readmit_samples // 10
        for n, request_id in enumerate(sampled_ids(readmit, prefix="probe")):
            assert _predict(client, x[10 * n : 10 * n + 10], request_id)["variant"] != "distilled"
        assert _row(client, "distilled")["state"] == "serving"
        assert sink.demotions == [("distilled", "demoted"), ("distilled", "readmitted")]
        assert any(o[:2] == ("distilled", "probed") for o in sink.shadow_outcomes)
