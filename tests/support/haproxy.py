"""HAProxy configs as Ray Serve writes them, rendered by Ray's own generator (HAProxyApi and
its template, so a Ray upgrade that changes the template shows up in the tests), and the
addresses a port listens on, from the kernel's socket tables."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
from ray.serve.config import HTTPOptions


@dataclass(frozen=True)
class Ports:
    """The three ports an HAProxy config of Ray's binds."""

    serve: int
    stats: int
    metrics: int


def free_ports() -> Ports:
    """Three ports free on this machine just now (the kernel's picks)."""
    sockets = [socket.socket() for _ in range(3)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return Ports(*(sock.getsockname()[1] for sock in sockets))
    finally:
        for sock in sockets:
            sock.close()


def ray_haproxy_config(folder: Path, ports: Ports, host: str = "0.0.0.0") -> Path:
    """The config file Ray's HAProxy ingress writes (in ``folder``) for one app with one
    replica, serving on ``host`` (0.0.0.0: all interfaces), with its stats and metrics ports;
    everything else it names (admin socket, server state, metrics socket) is in ``folder``."""
    config = HAProxyConfig(
        http_options=HTTPOptions(host=host, port=ports.serve),
        stats_port=ports.stats,
        metrics_port=ports.metrics,
        socket_path=str(folder / "admin.sock"),
        server_state_base=str(folder),
        server_state_file=str(folder / "server-state"),
        metrics_socket_path=str(folder / "metrics.sock"),
        is_head=True,
    )
    backend = BackendConfig(
        name="tiergate", path_prefix="/", app_name="tiergate",
        servers=[ServerConfig(name="replica-1", host="127.0.0.1", port=ports.serve + 1)],
    )  # fmt: skip
    api = HAProxyApi(
        cfg=config, backend_configs={"tiergate": backend}, config_file_path=str(folder / "haproxy.cfg")
    )
    api._generate_config_file_internal()
    return Path(api.config_file_path)


def listening(port: int) -> set[str]:
    """The addresses TCP sockets listen on at ``port`` in this network namespace
    (/proc/net/tcp and tcp6), e.g. {"127.0.0.1"} or {"0.0.0.0"}; empty when none."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # the kernel writes each 32-bit word of the address in host (little-endian) order
                words = bytes.fromhex(address)
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, width, 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found
