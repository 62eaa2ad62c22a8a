"""Ray's feature flags that tiergate sets, defined once: what each is for, and how its
value follows from the serving config. Ray reads them from the environment of every
process it starts, so ``prepare_ray_environment`` runs before Ray starts any; the deploy/
manifests are checked against ``ray_flags`` by a test.

    sources = prepare_ray_environment(config.serving)   # {"RAY_...": (value, where from)}

An explicit config setting always wins over an inherited variable; a flag the config
leaves open keeps an inherited value, and that is logged once. Ray's token authentication
(RAY_AUTH_MODE=token) is required: an inherited value that turns it off is overridden, and
a local cluster gets a random token per start unless one is given (``prepare_ray_token``).
In HAProxy ingress, Ray runs tiergate's wrapper as its HAProxy binary, which moves HAProxy's
stats and metrics ports to loopback (``tiergate.serving.haproxy_bind``); a binary inherited in
RAY_SERVE_HAPROXY_BINARY_PATH is the one the wrapper runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import sysconfig
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from tiergate.serving.config import ServingConfig
from tiergate.serving.haproxy_bind import QUEUE_MS, RAY_BINARY, REAL_BINARY, SERVER_MAXCONN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayFlag:
    """One of Ray's feature flags that tiergate sets. Ray reads them from the environment of
    every process it starts (Serve's controller and proxies as well as the replicas), so they
    are set before Ray starts any, and a deployment sets them on every node (deploy/)."""

    name: str
    value: Callable[[ServingConfig], str | None]  # for a serving config; None: not set for it
    field: str | None = None  # the serving field the value follows from; None: tiergate's own choice
    required: bool = False  # an inherited value that says otherwise is overridden, with a warning
    # the value is a program that runs the one an inherited value names, handed on in this
    # variable; the flag is left unset where that program is not installed
    hands_on: str | None = None


def _always(value: str) -> Callable[[ServingConfig], str | None]:
    return lambda serving: value


def _with_haproxy(value: str) -> Callable[[ServingConfig], str | None]:
    return lambda serving: value if serving.ray.ingress == "haproxy" else None


# the console script (pyproject.toml) where pip puts this interpreter's, as on the image
HAPROXY_WRAPPER = Path(sysconfig.get_path("scripts")) / "tiergate-haproxy"


RAY_FLAGS: tuple[RayFlag, ...] = (
    # Ray's token authentication on every Ray endpoint (GCS, dashboard and job API, Ray
    # client, raylets): without it anyone who reaches a Ray port runs code in the cluster
    RayFlag("RAY_AUTH_MODE", _always("token"), required=True),
    # counters once, as *_total
    RayFlag("RAY_EXPORT_COUNTER_AS_GAUGE", _always("0")),
    # Ray starts every worker (serving replicas, proxies) at nice 15; at 0 the replicas keep
    # their core against the variant builds, whose workers run under `nice -n 19`
    # (compress.live.niceness): at 15 against 19 a build took a third of a contended core
    RayFlag("RAY_worker_niceness", _always("0")),
    # Ray runs replica code on a second event loop in its own thread by default, shielding
    # Ray's loop from user code that blocks; tiergate's blocks at most for one short model
    # run (serving.batching.inline_run_max_ms; longer runs and image decoding are in worker
    # threads), and the hop between the loops costs each request CPU (BENCHMARKS.md)
    RayFlag("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", _always("0")),
    RayFlag(
        "RAY_SERVE_ENABLE_HA_PROXY",
        lambda serving: "1" if serving.ray.ingress == "haproxy" else "0",
        field="ray.ingress",
    ),
    # Ray's defaults drain for 30 s and let HAProxy linger 120 s at shutdown; a single
    # gateway drains its in-flight requests in far less
    RayFlag("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", _with_haproxy("2")),
    RayFlag("RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S", _with_haproxy("5")),
    # Ray's template binds HAProxy's stats and metrics ports on all interfaces, with no
    # setting for the address: Ray runs HAProxy through tiergate's wrapper, which puts them
    # on loopback (tiergate.serving.haproxy_bind)
    RayFlag(RAY_BINARY, _with_haproxy(str(HAPROXY_WRAPPER)), hands_on=REAL_BINARY),
    # and which queues requests in HAProxy past this many at a replica, answering 503 there
    # to one that waits too long: under overload a refusal in HAProxy costs a small part of
    # one in Python, and the wait in front of the replicas is bounded (BENCHMARKS.md)
    RayFlag(
        SERVER_MAXCONN,
        lambda serving: (
            str(serving.admission.ingress_max_in_flight) if serving.ray.ingress == "haproxy" else None
        ),
        field="admission.ingress_max_in_flight",
    ),
    RayFlag(
        QUEUE_MS,
        lambda serving: (
            str(serving.admission.ingress_queue_timeout_ms) if serving.ray.ingress == "haproxy" else None
        ),
        field="admission.ingress_queue_timeout_ms",
    ),
    # HAProxy logs each request to a socket that Ray parses in Python for its
    # ray_serve_num_http_requests_* series, a cost on every request (BENCHMARKS.md)
    RayFlag(
        "RAY_SERVE_HAPROXY_METRICS_ENABLED",
        lambda serving: (
            ("1" if serving.ray.ingress_metrics else "0") if serving.ray.ingress == "haproxy" else None
        ),
        field="ray.ingress_metrics",
    ),
    # admission ahead of Serve's per-request work in the replica (serving.frontdoor); in
    # either ingress, the outermost layer that checks a client's X-Request-Id before Serve echoes it
    RayFlag("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", _always("tiergate.serving.frontdoor:middlewares")),
)

FROM_ENVIRONMENT = "environment"
REQUIRED = "tiergate: required"
# where Ray looks for its token, in its order (docs.ray.io, "Ray token authentication")
TOKEN_VARIABLE, TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"


def _is_program(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def ray_flags(serving: ServingConfig) -> dict[str, str]:
    """Every Ray flag tiergate sets for ``serving``, whatever the environment holds: what a
    deployment manifest sets on every Ray node (deploy/kuberay/rayservice.yaml)."""
    return {flag.name: value for flag in RAY_FLAGS if (value := flag.value(serving)) is not None}


def ray_flag_sources(
    serving: ServingConfig,
    environ: Mapping[str, str] | None = None,
    installed: Callable[[str], bool] = _is_program,
) -> dict[str, tuple[str, str]]:
    """Each Ray flag's value for ``serving`` in ``environ`` (default: this process's), and
    where it comes from. A value that follows from a field the config sets explicitly wins
    over the environment (``config: serving.ray.ingress``); otherwise an inherited variable that
    says otherwise is kept (``environment``), and else the field's default
    (``default: serving.ray.ingress``) or tiergate's own choice (``tiergate``) applies. A flag
    that names a program (``hands_on``) is set only where ``installed`` says the program is,
    and an inherited value is handed on to it instead (``environment: RAY_...``)."""
    environ = os.environ if environ is None else environ
    sources = {}
    for flag in RAY_FLAGS:
        value = flag.value(serving)
        if value is None:
            continue
        inherited = environ.get(flag.name)
        if flag.hands_on is not None:
            sources.update(_handing_on(flag, value, inherited, installed))
        elif flag.required:
            sources[flag.name] = (value, REQUIRED)
        elif flag.field is not None and serving.is_set(flag.field):
            sources[flag.name] = (value, f"config: serving.{flag.field}")
        elif inherited is not None and inherited != value:
            sources[flag.name] = (inherited, FROM_ENVIRONMENT)
        elif flag.field is not None:
            sources[flag.name] = (value, f"default: serving.{flag.field}")
        else:
            sources[flag.name] = (value, "tiergate")
    return sources


def _handing_on(
    flag: RayFlag, value: str, inherited: str | None, installed: Callable[[str], bool]
) -> dict[str, tuple[str, str]]:
    """The sources for a flag whose value is a program that runs what an inherited value
    names (``flag.hands_on``): none where the program is not installed."""
    if not installed(value):
        return {}
    sources = {flag.name: (value, "tiergate")}
    if inherited and os.path.realpath(inherited) != os.path.realpath(value):
        sources[flag.hands_on] = (inherited, f"{FROM_ENVIRONMENT}: {flag.name}")
    return sources


def missing_programs(serving: ServingConfig, sources: Mapping[str, tuple[str, str]]) -> list[str]:
    """What goes unset for want of a program (a flag with ``hands_on`` missing from ``sources``),
    one line each, to warn about: `tiergate serve` logs them, `tiergate ray-env` prints them."""
    lines = []
    for flag in RAY_FLAGS:
        value = flag.value(serving)
        if flag.hands_on is not None and value is not None and flag.name not in sources:
            lines.append(f"{flag.name} is not set: {value} is not installed (reinstall tiergate), "
                         "so Ray's HAProxy keeps its stats and metrics ports on all interfaces")  # fmt: skip
    return lines


def prepare_ray_environment(
    serving: ServingConfig,
    installed: Callable[[str], bool] = _is_program,
) -> dict[str, tuple[str, str]]:
    """Set Ray's feature flags for ``serving`` in this process's environment, which every
    process Ray starts inherits (so: before Ray starts any). Values kept from the environment
    are logged, in one line, and a program flag left unset for want of the program is warned
    about; returns where each value came from (``ray_flag_sources``)."""
    sources = ray_flag_sources(serving, installed=installed)
    for line in missing_programs(serving, sources):
        log.warning("%s", line)
    for name, (value, source) in sources.items():
        if source == REQUIRED and os.environ.get(name, value) != value:
            log.warning("%s=%s in the environment is overridden: tiergate requires %s=%s",
                        name, os.environ[name], name, value)  # fmt: skip
        os.environ[name] = value
    inherited = [f"{name}={value} (from the {source})" for name, (value, source) in sources.items()
                 if source.startswith(FROM_ENVIRONMENT)]  # fmt: skip
    if inherited:
        log.info("Ray flags the config leaves open, kept as inherited: %s", ", ".join(inherited))
    return sources


def prepare_ray_token(environ: MutableMapping[str, str] | None = None, home: Path | None = None) -> str:
    """Make sure the Ray cluster about to start has a token (RAY_AUTH_MODE=token): one given
    in $RAY_AUTH_TOKEN, in the file $RAY_AUTH_TOKEN_PATH or in Ray's default file
    (~/.ray/auth_token) is used; otherwise a random one (256 bits) for this start only, put
    in ``environ`` (default: this process's) for every Ray process to inherit and written
    nowhere. Returns where the token comes from, never the token itself."""
    environ = os.environ if environ is None else environ
    if environ.get(TOKEN_VARIABLE):
        return f"${TOKEN_VARIABLE}"
    if environ.get(TOKEN_PATH_VARIABLE):
        return f"${TOKEN_PATH_VARIABLE} ({environ[TOKEN_PATH_VARIABLE]})"
    default = (home or Path.home()) / ".ray" / "auth_token"
    if default.is_file():
        return str(default)
    environ[TOKEN_VARIABLE] = secrets.token_hex(32)
    return "a random one for this start"
