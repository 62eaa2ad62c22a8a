"""The build board on real Ray Serve: two ingress replicas follow the named board actor
(created after they started), so an admin's re-profile over HTTP reaches both, and the
progress the board holds shows in the catalog."""

from __future__ import annotations

import httpx
import pytest

from tests.support.polling import until

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-board", "/board"


@pytest.fixture(scope="module")
def served(digits_config):
    """(base URL, the board's actor handle): two replicas, then the board."""
    import ray

    from tests.integration.conftest import deployed
    from tiergate.serving.board import board_actor

    for url in deployed(digits_config(ray={"replicas": 2}), APP, PREFIX):
        board = board_actor(create=True)
        try:
            yield url, board
        finally:
            ray.kill(board)


def test_reprofile_over_http_reaches_both_replicas(served):
    """With the board up, POST /v1/admin/reprofile lists a result from each of the two replicas
    polling it (a run or a refusal with its status, never "no answer"); a reported build
    progress shows in /v1/variants."""
    import ray

    from tiergate.serving.board import BuildProgress, BuildState

    url, board = served

    def both_polling():
        members = ray.get(board.members.remote())
        return members if len(members) == 2 else None

    members = until(both_polling)
    assert members is not None, "two replicas never polled the board"
    response = httpx.post(f"{url}/v1/admin/reprofile", timeout=60)
    assert response.status_code in (200, 429, 503), response.text
    replicas = response.json()["replicas"]
    assert set(replicas) == set(members)
    assert all(result["ok"] or "status" in result for result in replicas.values()), replicas
    ray.get(board.report.remote(BuildProgress("int8", BuildState.BUILDING, "export", 55.0).to_json()))

    def int8_build():
        rows = httpx.get(f"{url}/v1/variants", timeout=10).json()["variants"]
        return next(row for row in rows if row["name"] == "int8")["build"]

    assert (until(int8_build) or {}).get("percent") == 55.0
