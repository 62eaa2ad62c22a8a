"""A real Prometheus (Debian's) for the integration tests: started on a folder holding its
``prometheus.yml``, on a given port, and stopped afterwards; and a PromQL query.

    with running_prometheus(folder, port) as url:
        series = query(url, "ray_tiergate_requests_total")
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.polling import until


@contextlib.contextmanager
def running_prometheus(folder: Path, port: int, ready_s: float = 60.0) -> Iterator[str]:
    """Prometheus on ``folder/prometheus.yml`` (its data in ``folder/data``), once ready; its URL."""
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert until(lambda: _ready(url), timeout_s=ready_s, every_s=0.5), (
            f"prometheus not ready in {ready_s:g} s"
        )
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, expr: str) -> list:
    """The result vector of ``expr`` at Prometheus ``url`` (the query must succeed)."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]
