"""A client that sends its headers and then dribbles its body, over Ray Serve's HAProxy
ingress: HAProxy forwards the headers at once (it does not buffer bodies, and its client
timeout is an hour of silence, reset by every byte), so the replica admits the request
before its body is in. The replica's own body-read limit frees the slot."""

from __future__ import annotations

import re
import socket
import threading
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import deployed

pytestmark = pytest.mark.integration

BODY_READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def one_slot_url(digits_config):
    config = digits_config(
        admission={"max_in_flight": 1}, limits={"body_read_timeout_s": BODY_READ_TIMEOUT_S}
    )
    yield from deployed(config, "tiergate-slow-body", "/slow")


def _dribbler(url: str, stop: threading.Event) -> socket.socket:
    """A connection that has sent a POST /v1/predict's headers (Content-Length 5000) and
    then sends one byte of the body every 0.2 s until ``stop`` or the server closes it."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (
        f"POST {parts.path}/v1/predict HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"
    )
    sock.sendall(head.encode())

    def dribble():
        while not stop.wait(0.2):
            try:
                sock.sendall(b" ")
            except OSError:
                return

    threading.Thread(target=dribble, daemon=True).start()
    return sock


def _read_answer(sock: socket.socket) -> str:
    """The whole HTTP answer on ``sock``: its head, then as many body bytes as it declares
    (one recv may return the head alone)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
    while length and len(body) < int(length.group(1)) and (chunk := sock.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def _hold_the_slot(url: str, client: httpx.Client, body: dict, stop: threading.Event):
    """A dribbler that holds the only slot: the 503 another request gets, and the dribbler's
    answer. A dribbler refused itself (the slot of the request before it is freed just after
    that one's answer goes out) is tried again."""
    for _ in range(10):
        sock = _dribbler(url, stop)
        try:
            for _ in range(20):  # until the dribbler's headers have reached the replica
                refused = client.post("/v1/predict", json=body)
                if refused.status_code != 200:
                    break
            answer = _read_answer(sock)  # blocks until the gateway answers
        finally:
            sock.close()
        if not answer.startswith("HTTP/1.1 503"):
            return refused, answer
    raise AssertionError(f"the dribbler never got the slot: {answer}")


def test_a_dribbling_client_holds_its_slot_only_until_the_body_read_timeout(one_slot_url, digits):
    """With max_in_flight 1, a client that dribbles its body holds the only slot (another
    request gets 503 naming max_in_flight), then gets 408 naming
    serving.limits.body_read_timeout_s although it keeps sending; the next request is served."""
    body = {"inputs": digits.test.x[:1].tolist(), "variant": "fp32"}
    stop = threading.Event()
    with httpx.Client(base_url=one_slot_url, timeout=10) as client:
        assert client.post("/v1/predict", json=body).status_code == 200  # deployed and warm
        try:
            refused, answer = _hold_the_slot(one_slot_url, client, body, stop)
        finally:
            stop.set()
        assert refused.status_code == 503, refused.text
        assert "serving.admission.max_in_flight 1" in refused.json()["error"]
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "serving.limits.body_read_timeout_s" in answer
        # its slot is freed just after its answer goes out: the next request or one soon after
        assert any(client.post("/v1/predict", json=body).status_code == 200 for _ in range(10))
