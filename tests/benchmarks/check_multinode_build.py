"""Check: the live build's tasks spread over the nodes of a multi-node Ray cluster. Two
raylets on this machine (a head with 1 CPU, a worker with 2; the cache folder is shared,
being on one disk) build the tiny digits menu from an empty cache; the Ray state API then
says which node ran each build task.

    .venv/bin/python -m tests.benchmarks.check_multinode_build

It starts its own cluster with ``ray start`` and ends with ``ray stop --force``, which
stops every Ray process on the machine: it refuses to start when Ray runs already.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
PORT = "6391"


def main() -> None:
    if subprocess.run([RAY, "status"], capture_output=True).returncode == 0:
        sys.exit("Ray runs on this machine already; stop it first (this check ends with ray stop --force)")
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.urandom(32).hex())
    subprocess.run([RAY, "start", "--head", f"--port={PORT}", "--num-cpus=1", "--disable-usage-stats",
                    "--include-dashboard=true"], check=True, capture_output=True)  # fmt: skip
    subprocess.run([RAY, "start", f"--address=127.0.0.1:{PORT}", "--num-cpus=2", "--disable-usage-stats"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        print(build_on_the_cluster())
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True)


def build_on_the_cluster() -> str:
    import ray
    from ray.util.state import list_tasks

    from tests.conftest import tiny_config
    from tiergate.build.live import LiveBuild
    from tiergate.serving.board import board_actor

    ray.init(address=f"127.0.0.1:{PORT}", log_to_driver=False)
    cpus = {n["NodeID"][:8]: n["Resources"].get("CPU") for n in ray.nodes() if n["Alive"]}
    config = tiny_config(
        Path(tempfile.mkdtemp(prefix="tiergate-multinode-")), {"compress.live.quick_eval_samples": 100}
    )
    live = LiveBuild(config, board_actor(create=True))
    live.first_menu()
    live.start()
    deadline = time.monotonic() + 600
    while (live.pending() or not live._complete) and time.monotonic() < deadline:
        time.sleep(1)
    live.stop()
    tasks = [
        t
        for t in list_tasks(filters=[("type", "=", "NORMAL_TASK")], limit=1000)
        if t.name.startswith("build-")
    ]
    lines = [f"nodes (id: CPUs): {cpus}"]
    lines += [f"{t.name}: node {t.node_id[:8]}" for t in tasks]
    lines.append(f"on the menu: {sorted(live.measured)}; skipped: {live.skipped or 'none'}")
    lines.append(f"build tasks ran on {len({t.node_id for t in tasks})} of {len(cpus)} nodes")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
