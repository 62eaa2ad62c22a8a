"""``serve run tiergate.application:app_builder`` (the KubeRay path) on an empty cache: the
application comes up on fp32 alone and a detached coordinator actor builds the rest
behind it, which then joins the live menu."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
import yaml

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-appbuilder", "/appbuilder"


def test_app_builder_serves_fp32_first_and_its_coordinator_adds_the_rest(
    digits_config, tiny_weights, tmp_path, digits
):
    """The app built by app_builder from a cold cache lists fp32 alone at first; int8 is then
    serving on it, built by the coordinator actor after app_builder returned."""
    import ray
    from ray import serve

    from tests.conftest import tiny_config
    from tests.integration.conftest import SERVE_OVERRIDES
    from tiergate.application import app_builder
    from tiergate.build.coordinator import COORDINATOR_NAME
    from tiergate.serving.board import BOARD_NAMESPACE, board_actor

    serving = digits_config().serving
    overrides = {"tiers": SERVE_OVERRIDES["tiers"], "model.weights": str(tiny_weights),
                 "compress.live.quick_eval_samples": 100}  # fmt: skip
    config = tiny_config(tmp_path / "cache", overrides)
    path = tmp_path / "tiergate.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    args = {"config": str(path), "serving.http.port": serving.http.port,
            "serving.routing.menu_watch_interval_s": 0.2}  # fmt: skip
    application = app_builder(args)
    try:
        serve.run(application, name=APP, route_prefix=PREFIX)
        url = f"http://127.0.0.1:{serving.http.port}{PREFIX}"
        names = [row["name"] for row in httpx.get(f"{url}/v1/variants", timeout=10).json()["variants"]]
        assert names[0] == "fp32"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = {r["name"]: r for r in httpx.get(f"{url}/v1/variants", timeout=10).json()["variants"]}
            if rows.get("int8", {}).get("state") == "serving":
                break
            time.sleep(0.5)
        assert rows["int8"]["state"] == "serving"
        answer = httpx.post(
            f"{url}/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "variant": "int8"}
        )
        assert answer.status_code == 200
    finally:
        serve.delete(APP)
        with contextlib.suppress(ValueError):  # no coordinator: app_builder failed before it
            ray.kill(ray.get_actor(COORDINATOR_NAME, namespace=BOARD_NAMESPACE))
        board = board_actor()
        if board is not None:
            ray.kill(board)
