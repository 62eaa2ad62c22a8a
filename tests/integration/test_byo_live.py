"""A user's own model served while compressing, on real Ray Serve: ``--model
package.module:factory --weights W --data D.npz`` serves fp32 from an empty cache, and a
build task, which imports the user's module in its own worker, adds int8 behind it."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-byo", "/byo"


def test_a_factory_model_serves_fp32_first_and_gets_int8_from_a_build_task(digits_config, tmp_path, digits):
    """From a cold cache, the user's small CNN serves as fp32 alone at first; its int8, built
    by a Ray task that imported tests.integration.user_model, then serves too."""
    import ray
    from ray import serve

    from tests.integration.conftest import SERVE_OVERRIDES
    from tests.integration.user_model import small_cnn
    from tests.support.deployments import HOOKED
    from tiergate import runtime
    from tiergate.build.live import LiveBuild
    from tiergate.config import load_config
    from tiergate.serving.board import board_actor

    torch.manual_seed(0)
    torch.save(small_cnn().state_dict(), tmp_path / "weights.pt")
    np.savez(tmp_path / "data.npz", x=digits.test.x, y=digits.test.y)
    serving = digits_config().serving
    config = load_config(None, {  # what `tiergate serve --model ... --weights ... --data ...` sets
        "model.source": "factory", "model.factory": "tests.integration.user_model:small_cnn",
        "model.name": "small_cnn", "model.weights": str(tmp_path / "weights.pt"),
        "data.source": "npz", "data.path": str(tmp_path / "data.npz"),
        "compress.variants": ["fp32", "int8"], "compress.cache_dir": str(tmp_path / "cache"),
        "tiers": SERVE_OVERRIDES["tiers"], "serving.http": serving.http.model_dump(),
        "serving.routing.menu_watch_interval_s": 0.2,
    })  # fmt: skip
    board = board_actor(create=True)
    build = LiveBuild(config, board, poll_s=0.2)
    try:
        menu = build.first_menu()
        assert [entry.name for entry in menu.variants] == ["fp32"]
        url = runtime.deploy(build.config, name=APP, route_prefix=PREFIX, menu=menu, deployments=HOOKED)
        build.start()
        deadline, rows = time.monotonic() + 120, {}
        while time.monotonic() < deadline and rows.get("int8", {}).get("state") != "serving":
            time.sleep(0.3)
            rows = {r["name"]: r for r in httpx.get(f"{url}/v1/variants", timeout=10).json()["variants"]}
        assert rows["int8"]["state"] == "serving", rows.get("int8")
        answer = httpx.post(
            f"{url}/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "variant": "int8"}
        )
        assert answer.status_code == 200
    finally:
        build.stop()
        serve.delete(APP)
        ray.kill(board)
