"""A menu still building, over HTTP on a real replica (real FastAPI, real ORT; no Ray):
only fp32 serves while the board reports int8 building or failed."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.asgi import call as _call
from tests.support.board import LocalBoardHandle
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.board import Board, BuildProgress, BuildState
from tiergate.serving.boardlink import BoardLink
from tiergate.serving.config import AdmissionConfig, ServingConfig
from tiergate.serving.metrics import build_percents, variant_states

# "fast": a bound no variant meets, so a request falls back (or, strict, is refused)
TIERS = {"fast": Tier(max_latency_ms=0.001, min_accuracy=0.5), "accurate": Tier(max_latency_ms=1000.0)}
SERVING = ServingConfig(admission=AdmissionConfig(max_loop_lag_ms=3_600_000))  # as test_app.py
INT8_BUILDING = {"int8": BuildProgress("int8", BuildState.BUILDING, "calibrate", 40.0, 95.0)}
NOTE = "the menu is still building (1 variants not serving yet: int8)"


def _fp32_only(tiny_menu, serving: ServingConfig = SERVING):
    return replica_for(tiny_menu, TIERS, variants=["fp32"], serving=serving)


@pytest.fixture
def building(tiny_menu):
    """fp32 serving; the board says int8 is 40% built."""
    replica = _fp32_only(tiny_menu)
    replica.apply_build_status(INT8_BUILDING)
    return replica


def test_the_catalog_shows_a_building_variant_with_its_progress(building):
    """/v1/variants lists int8 as building with its build progress, and a summary of what is pending."""
    body = _call(building, "GET", "/v1/variants").json()
    rows = {row["name"]: row for row in body["variants"]}
    assert rows["int8"]["state"] == "building" and not rows["int8"]["ready"] and rows["int8"]["live"] is None
    assert rows["int8"]["build"] == {
        "state": "building", "step": "calibrate", "percent": 40.0, "eta_s": 95.0, "reason": None,
    }  # fmt: skip
    assert rows["fp32"]["build"] is None
    assert body["build"] == {"pending": ["int8"], "failed": [], "complete": False}


def test_a_fallback_says_the_menu_is_still_building(building, digits):
    """A fast-tier request nothing fits falls back to fp32; /v1/route, /v1/predict and /v1/tiers say why."""
    route = _call(building, "POST", "/v1/route", json={"tier": "fast"}).json()
    assert route["reason"] == "fallback" and route["explanation"].endswith(NOTE)
    predict = _call(
        building, "POST", "/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "tier": "fast"}
    )
    assert predict.status_code == 200 and predict.json()["explanation"].endswith(NOTE)
    assert _call(building, "GET", "/v1/tiers").json()["fast"]["explanation"].endswith(NOTE)


def test_a_strict_request_nothing_serving_fits_is_refused_with_the_note(building, digits):
    """A strict fast-tier prediction is refused (422) as without a build, saying the menu is building."""
    body = {"inputs": digits.test.x[:1].tolist(), "tier": "fast", "strict": True}
    response = _call(building, "POST", "/v1/predict", json=body)
    assert response.status_code == 422 and response.json()["error"].endswith(NOTE)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/predict", {"inputs": [[[0.0] * 8] * 8], "variant": "int8"}),
        ("POST", "/v1/route", {"variant": "int8"}),
        ("GET", "/v2/models/int8", None),
        ("GET", "/v2/models/int8/ready", None),
    ],
)
def test_pinning_a_building_variant_is_503_with_retry_after(building, method, path, body):
    """A pin of int8 while it builds: 503 with Retry-After (its ETA) naming int8, its state and percent."""
    response = _call(building, method, path, json=body)
    assert response.status_code == 503 and response.headers["retry-after"] == "95"
    assert "int8 is building (40% built" in response.json()["error"]


def test_pinning_a_variant_whose_build_failed_is_refused_with_the_reason(tiny_menu):
    """A pin of a variant whose build failed: the not-ready refusal (422) with the build's reason."""
    replica = _fp32_only(tiny_menu)
    replica.apply_build_status(
        {"int8": BuildProgress("int8", BuildState.FAILED, reason="calibration diverged")}
    )
    response = _call(replica, "POST", "/v1/route", json={"variant": "int8"})
    assert response.status_code == 422 and "calibration diverged" in response.json()["error"]
    assert _call(replica, "GET", "/v1/variants").json()["build"]["failed"] == ["int8"]


def test_a_loaded_variant_being_rebuilt_keeps_serving(tiny_menu):
    """A loaded int8 the board reports building again stays serving (pins reach it); its progress is shown."""
    replica = replica_for(tiny_menu, TIERS, variants=["fp32", "int8"], serving=SERVING)
    replica.apply_build_status(INT8_BUILDING)
    assert _call(replica, "POST", "/v1/route", json={"variant": "int8"}).json()["reason"] == "pinned"
    row = next(r for r in _call(replica, "GET", "/v1/variants").json()["variants"] if r["name"] == "int8")
    assert row["state"] == "serving" and row["build"]["percent"] == 40.0


def test_readiness_waits_for_the_whole_menu_only_when_asked(tiny_menu):
    """/readyz while int8 builds: 200 with ready_when any (the default), 503 with all until int8 loads."""
    everything = SERVING.model_copy(update={"http": SERVING.http.model_copy(update={"ready_when": "all"})})
    any_ready, all_ready = _fp32_only(tiny_menu), _fp32_only(tiny_menu, everything)
    for replica in (any_ready, all_ready):
        replica.apply_build_status(INT8_BUILDING)
    assert _call(any_ready, "GET", "/readyz").status_code == 200
    refused = _call(all_ready, "GET", "/readyz")
    assert refused.status_code == 503 and "int8" in refused.json()["error"] and refused.headers["retry-after"]
    int8 = next(entry for entry in tiny_menu.variants if entry.name == "int8")
    asyncio.run(all_ready.load_variant(int8))
    assert _call(all_ready, "GET", "/readyz").status_code == 200


def test_the_state_gauge_is_one_for_the_current_state_and_zero_for_the_others(tiny_menu):
    """tiergate_variant_state: 1 for int8 building (then failed), 0 for its other states; the
    build-percent gauge follows the board's figure."""
    replica = _fp32_only(tiny_menu)
    replica.apply_build_status(INT8_BUILDING)
    states = {(name, state): value for name, state, value in variant_states(replica.registry)}
    assert states["int8", "building"] == 1.0 and states["int8", "serving"] == 0.0
    assert (
        states["fp32", "serving"] == 1.0 and sum(v for (name, _), v in states.items() if name == "int8") == 1
    )
    assert build_percents(replica.registry) == {"int8": 40.0}
    replica.apply_build_status({"int8": BuildProgress("int8", BuildState.FAILED, reason="out of memory")})
    states = {(name, state): value for name, state, value in variant_states(replica.registry)}
    assert states["int8", "failed"] == 1.0 and states["int8", "building"] == 0.0


def _with_board(tiny_menu, board: Board, member: str = "r1"):
    """fp32 serving, linked to ``board`` in-process; each look at its clock is a second later."""
    ticks = iter(range(10**6))
    link = BoardLink(member, find=lambda: LocalBoardHandle(board), poll_s=0.0, answer_timeout_s=3.0,
                     clock=lambda: float(next(ticks)))  # fmt: skip
    return replica_for(tiny_menu, TIERS, variants=["fp32"], serving=SERVING, board=link)


def test_rebuild_posts_a_command_for_the_coordinator(tiny_menu):
    """POST /v1/admin/rebuild: 202 with the command's seq, which the coordinator's poll gets; an
    unknown variant is 404 naming it; without a board, 409 (nothing to ask)."""
    board = Board()
    board.report(BuildProgress("int8", BuildState.DONE).to_json())
    replica = _with_board(tiny_menu, board)
    accepted = _call(replica, "POST", "/v1/admin/rebuild", json={"variant": "int8", "force": True})
    assert accepted.status_code == 202 and accepted.json() == {"accepted": 1}
    commands = board.poll("driver", 0, role="coordinator")["commands"]
    assert [(c["kind"], c["args"]["variant"], c["args"]["force"]) for c in commands] == [
        ("rebuild", "int8", True)
    ]
    unknown = _call(replica, "POST", "/v1/admin/rebuild", json={"variant": "nope"})
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]
    assert _call(_fp32_only(tiny_menu), "POST", "/v1/admin/rebuild").status_code == 409


def test_reprofile_with_a_board_lists_every_replica(tiny_menu):
    """POST /v1/admin/reprofile with a board lists this replica's result and each other member's,
    one that never answers as such; the command went to the board for the others."""
    board = Board()
    board.poll("r2", -1)  # another replica, seen just now, that will not answer
    response = _call(_with_board(tiny_menu, board), "POST", "/v1/admin/reprofile")
    replicas = response.json()["replicas"]
    assert set(replicas) == {"r1", "r2"} and replicas["r2"] == {"ok": False, "error": "no answer in 3 s"}
    assert replicas["r1"]["ok"] == (response.status_code == 200)
    assert [c["kind"] for c in board.poll("r3", 0)["commands"]] == ["reprofile"]
