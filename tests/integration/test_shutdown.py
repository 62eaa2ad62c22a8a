"""Graceful shutdown on Ray Serve over real HTTP: requests in flight when the application is
deleted (as on a redeploy or `serve shutdown`) are answered before its replica exits."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-drain", "/drain"


def test_requests_in_flight_finish_when_the_application_is_deleted(digits_config, digits):
    """Four requests each held 1.5 s in the model are all answered 200 although the
    application is deleted 0.3 s after they were sent; afterwards the route is gone."""
    from ray import serve

    from tests.support.deployments import HOOKED
    from tiergate import runtime

    # a deadline well past the held runs, so that none is refused for its deadline
    config = digits_config(admission={"request_timeout_s": 10})
    url = runtime.deploy(config, name=APP, route_prefix=PREFIX, deployments=HOOKED)
    ingress = serve.get_deployment_handle("Ingress", app_name=APP)
    ingress.set_fault.remote("fp32", 0.0, 1.5).result()
    body = {"inputs": digits.test.x[:1].tolist(), "variant": "fp32"}
    answers: list[int] = []

    def send() -> None:
        try:
            answers.append(httpx.post(f"{url}/v1/predict", json=body, timeout=30).status_code)
        except httpx.HTTPError as error:
            answers.append(type(error).__name__)

    senders = [threading.Thread(target=send) for _ in range(4)]
    try:
        for sender in senders:
            sender.start()
        time.sleep(0.3)
    finally:
        serve.delete(APP)  # returns once the application is gone
    for sender in senders:
        sender.join()
    assert answers == [200] * 4, answers
    try:
        after = httpx.post(f"{url}/v1/predict", json=body, timeout=10).status_code
    except httpx.HTTPError as error:
        after = type(error).__name__
    assert after != 200
