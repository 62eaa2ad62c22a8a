"""A multi-node Ray cluster on this machine for integration tests: each node is its own
raylet, started with ``ray start`` (the head with the GCS and the dashboard), on ports and
in a temporary folder of its own, so it cannot meet another Ray instance on the machine.

    cluster = RayNodes(root, env, free_port)
    head = cluster.start("head", cpus=1, resources={"head_node": 1}, head=True)
    worker = cluster.start("worker-1", cpus=1, resources={"worker_node": 1})
    cluster.kill(worker)      # SIGKILL its raylet, by PID: the node dies
    cluster.stop()            # SIGKILL every process the cluster started, by PID

``ray stop`` would stop every Ray process of the machine, other test runs' included; here
each node's processes are found by a marker in their environment, which the raylet hands
down to every worker it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
MARKER = "TIERGATE_TEST_RAY_NODE"


@dataclass(frozen=True)
class RayNode:
    name: str
    marker: str  # the value of MARKER in the environment of each of the node's processes
    temp_dir: Path
    metrics_port: int
    agent_port: int  # the node agent's HTTP API (behind Ray's token authentication)
    gcs_port: int | None = None  # the head's
    dashboard_port: int | None = None  # the head's


class RayNodes:
    """Nodes started with ``ray start`` in ``env`` (Ray's flags, its token), each in a
    folder of its own below ``root`` (short: Ray's socket paths must fit in 107 characters)."""

    def __init__(self, root: Path, env: dict[str, str], free_port: Callable[[], int]) -> None:
        self.root, self.env, self.free_port = root, env, free_port
        self.nodes: list[RayNode] = []
        self.head: RayNode | None = None

    @property
    def address(self) -> str:
        assert self.head is not None and self.head.gcs_port is not None
        return f"127.0.0.1:{self.head.gcs_port}"

    def start(self, name: str, cpus: int, resources: dict[str, float], head: bool = False) -> RayNode:
        """Start one node (``head``: the GCS, the dashboard and this cluster's Serve) and
        return once ``ray start`` has; its raylet registers with the GCS shortly after."""
        marker = f"{self.root.name}:{name}"
        temp_dir = self.root / name
        node = RayNode(
            name, marker, temp_dir, metrics_port=self.free_port(), agent_port=self.free_port(),
            gcs_port=self.free_port() if head else None, dashboard_port=self.free_port() if head else None,
        )  # fmt: skip
        ports = {
            "node-manager-port": self.free_port(),
            "object-manager-port": self.free_port(),
            "metrics-export-port": node.metrics_port,
            "dashboard-agent-listen-port": node.agent_port,
            "dashboard-agent-grpc-port": self.free_port(),
            "runtime-env-agent-port": self.free_port(),
        }
        command = [RAY, "start", f"--num-cpus={cpus}", "--num-gpus=0", f"--resources={json.dumps(resources)}",
                   f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
                   "--disable-usage-stats"]  # fmt: skip
        command += [f"--{option}={port}" for option, port in ports.items()]
        if head:
            command += ["--head", f"--port={node.gcs_port}", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={node.dashboard_port}",
                        f"--ray-client-server-port={self.free_port()}"]  # fmt: skip
        else:
            command.append(f"--address={self.address}")
        self.nodes.append(node)  # before it starts: stop() then ends whatever a failed start left
        done = subprocess.run(command, env={**self.env, MARKER: marker}, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ray start for {name} failed ({done.returncode}): {done.stderr[-2000:]}")
        if head:
            self.head = node
        return node

    def raylet_pid(self, node: RayNode) -> int | None:
        return next((pid for pid, comm in _processes(node.marker) if comm == "raylet"), None)

    def kill(self, node: RayNode) -> int:
        """SIGKILL the node's raylet (its workers and agents then exit by themselves): the
        node is lost, as when its machine dies. Returns the raylet's PID."""
        pid = self.raylet_pid(node)
        if pid is None:
            raise RuntimeError(f"no raylet runs for node {node.name}")
        os.kill(pid, signal.SIGKILL)
        return pid

    def pids(self, node: RayNode) -> list[int]:
        return [pid for pid, _ in _processes(node.marker)]

    def stop(self, rounds: int = 10) -> None:
        """SIGKILL every process any node of this cluster started (found by its marker), again
        until none is left: a raylet may have started a worker while the first round ran."""
        for _ in range(rounds):
            pids = [pid for node in self.nodes for pid in self.pids(node)]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)  # let the kernel reap them before looking again


def _processes(marker: str) -> Iterator[tuple[int, str]]:
    """(PID, command name) of every process of this user whose environment holds
    ``MARKER=marker``."""
    wanted = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            yield int(entry.name), (entry / "comm").read_text().strip()
        except OSError:  # gone meanwhile, or another user's
            continue


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (from /proc), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def processes_titled(marker: str, title: str) -> list[int]:
    """PIDs of the cluster node's processes whose command line (Ray sets a worker's to
    ``ray::<actor class>``...) contains ``title``."""
    found = []
    for pid, _ in _processes(marker):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title in cmdline:
            found.append(pid)
    return found
