"""Serving while compressing, on real Ray Serve over HTTP from an empty cache: the gateway
serves fp32 first, the other variants join the live menu as Ray build tasks land, a
killed build task skips its variant cleanly, and a recipe changed in the config file is
rebuilt and swapped in, all while requests flow."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.polling import catalog, until

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-live", "/live"
# distilled trains long enough (tens of seconds) for the kill test to catch it building
SLOW_DISTILL = {"method": "distill", "width": 4, "fit": {"epochs": 150, "batch_size": 64}}


class Stream:
    """Requests to ``url`` one after another (tier ``fast``), every status kept."""

    def __init__(self, url: str, image: list) -> None:
        self.url, self.body = url, {"inputs": [image], "tier": "fast"}
        self.statuses: list[int] = []
        self.errors: list[str] = []  # the bodies of answers other than 200
        self.variants: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                answer = client.post(f"{self.url}/v1/predict", json=self.body)
                self.statuses.append(answer.status_code)
                if answer.status_code == 200:
                    self.variants.add(answer.json()["variant"])
                else:
                    self.errors.append(answer.text)
                time.sleep(0.02)


@pytest.fixture(scope="module")
def live(digits_config, tiny_weights, tmp_path_factory):
    """(base URL, the running build, its config file, the catalog as deployed) for the tiny
    digits menu plus a slow distilled, served from an empty cache (the base's weights
    aside) through a config file the build follows."""
    import ray
    from ray import serve

    from tests.conftest import tiny_config
    from tests.integration.conftest import SERVE_OVERRIDES
    from tests.support.deployments import HOOKED
    from tiergate import runtime
    from tiergate.build.live import LiveBuild
    from tiergate.config import load_config
    from tiergate.serving.board import board_actor

    serving = digits_config().serving
    cache = tmp_path_factory.mktemp("cold-cache")
    config = tiny_config(cache, {
        "tiers": SERVE_OVERRIDES["tiers"],  # the session's tiers: the metrics test reads every app's
        "model.weights": str(tiny_weights), "compress.recipes.distilled": SLOW_DISTILL,
        "compress.live.quick_eval_samples": 100,
        "serving.http": serving.http.model_dump(), "serving.routing.menu_watch_interval_s": 0.2,
        "serving.routing.replica_profile_budget_s": 0.05,
    })  # fmt: skip
    path = tmp_path_factory.mktemp("config") / "tiergate.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    board = board_actor(create=True)
    build = LiveBuild(load_config(path), board, config_path=path, poll_s=0.2)
    try:
        menu = build.first_menu()
        assert [entry.name for entry in menu.variants] == ["fp32"]  # nothing cached: fp32 alone first
        url = runtime.deploy(build.config, name=APP, route_prefix=PREFIX, menu=menu, deployments=HOOKED)
        at_start = httpx.get(f"{url}/v1/variants", timeout=10).json()  # before anything more is built
        build.start()
        yield url, build, path, at_start
    finally:
        build.stop()
        serve.delete(APP)
        ray.kill(board)


def _processes_titled(title: str) -> list[int]:
    """The processes whose command line (a Ray worker's title: ``ray::<task name>``) starts with ``title``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(title.encode()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_gateway_knows_from_its_start_what_is_still_building(live):
    """As soon as the app is deployed, its catalog lists int8 and distilled as building and
    calls the menu incomplete (the replica looked at the board before it reported ready)."""
    at_start = live[3]
    states = {row["name"]: row["state"] for row in at_start["variants"]}
    assert states == {"fp32": "serving", "int8": "building", "distilled": "building"}
    assert at_start["build"]["complete"] is False


def test_variants_join_the_live_menu_while_requests_flow(live, digits):
    """Started on fp32 alone, the gateway gets int8 on its menu from a build task and routes
    to it, while a stream of requests gets only 200s."""
    url, _, _, _ = live
    with Stream(url, digits.test.x[0].tolist()) as stream:
        assert until(lambda: catalog(url).get("int8", {}).get("state") == "serving", 120)
        assert until(lambda: "int8" in stream.variants, 30)
    assert stream.statuses and set(stream.statuses) == {200}, stream.errors[:3]


def test_a_killed_build_task_skips_its_variant_and_leaves_no_files(live, digits):
    """The worker building distilled is killed: distilled shows failed with the reason, no
    partial build is left in the cache, the menu's other variants keep serving, and the
    build goes on (fp32's full measurement lands)."""
    url, build, _, _ = live
    assert until(
        lambda: ((catalog(url).get("distilled", {}).get("build") or {}).get("percent") or 0) > 5, 120
    )
    workers = _processes_titled("ray::build-distilled")
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    assert until(lambda: catalog(url)["distilled"]["state"] == "failed", 60)
    row = catalog(url)["distilled"]
    assert "died" in (row["state_reason"] or "").lower() or "crash" in (row["state_reason"] or "").lower()
    artifacts = build.config.compress.cache_dir / "artifacts"
    assert not [p.name for p in artifacts.iterdir() if p.name.startswith(".")]  # no scratch, no staging
    assert {name for name, r in catalog(url).items() if r["state"] == "serving"} == {"fp32", "int8"}
    assert "distilled" in build.skipped
    # the build went on: fp32's full measurement (queued last) replaces its quick estimate
    assert until(lambda: catalog(url)["fp32"]["test_samples"] == len(digits.test), 120)


def test_a_recipe_changed_in_the_config_is_rebuilt_and_swapped_in_without_a_failed_request(live, digits):
    """int8's calibration changed in the watched config file: a new int8 artifact is built
    and served in place of the old, while requests pinned to int8 all get 200s."""
    url, _, path, _ = live
    assert until(lambda: catalog(url).get("int8", {}).get("state") == "serving", 120)
    before = catalog(url)["int8"]["sha256"]
    config = yaml.safe_load(path.read_text())
    config["compress"]["recipes"]["int8"]["calibration_samples"] = 32
    with Stream(url, digits.test.x[0].tolist()) as stream:
        stream.body = {"inputs": stream.body["inputs"], "variant": "int8"}
        path.write_text(yaml.safe_dump(config))
        assert until(lambda: catalog(url)["int8"]["sha256"] != before, 120)
        time.sleep(1)  # requests on the new artifact
    assert stream.statuses and set(stream.statuses) == {200}, stream.errors[:3]
