"""The live menu follows its manifest file on real Ray Serve over HTTP: a changed artifact
is swapped in and a removed variant retired while requests flow, none of them failing."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.support.polling import catalog, until

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-watch", "/watch"


@pytest.fixture(scope="module")
def served(digits_config, tmp_path_factory):
    """(base URL, the watched manifest, the menu it started with)."""
    from tests.integration.conftest import deployed
    from tiergate.build import build_menu

    config = digits_config(routing={"menu_watch_interval_s": 0.2})
    menu = build_menu(config)
    manifest = tmp_path_factory.mktemp("watched") / "manifest.json"
    menu.write(manifest)
    for url in deployed(config, APP, PREFIX, manifest=manifest):
        yield url, manifest, menu


def test_a_rewritten_manifest_swaps_and_retires_variants_without_a_failed_request(served, digits):
    """int8 moved to another artifact and distilled removed in the manifest: within seconds
    /v1/variants shows int8's new sha256 and distilled retired, and back again; a stream of
    requests pinned to int8 meanwhile gets only 200s."""
    url, manifest, menu = served
    fp32, int8, distilled = menu.variants
    changed = menu.model_copy(update={"variants": [fp32, distilled.model_copy(update={"name": "int8"})]})
    statuses: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        body = {"inputs": digits.test.x[:1].tolist(), "variant": "int8"}
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.post(f"{url}/v1/predict", json=body).status_code)

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        changed.write(manifest)
        swapped = until(
            lambda: (
                (rows := catalog(url))["int8"]["sha256"] == distilled.sha256
                and rows["distilled"]["state"] == "retired"
            )
        )
        menu.write(manifest)
        restored = until(
            lambda: (
                (rows := catalog(url))["int8"]["sha256"] == int8.sha256
                and rows["distilled"]["state"] == "serving"
            )
        )
    finally:
        stop.set()
        sender.join()
    assert swapped and restored
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
