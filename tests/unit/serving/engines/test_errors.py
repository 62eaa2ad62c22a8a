"""remote_reason: one clean line from the text of an error Ray delivered."""

from __future__ import annotations

from tiergate.serving.engines import remote_reason


def test_remote_reason_drops_rays_coloured_actor_header():
    """A dead actor's error text starts with Ray's coloured "ray::... (pid=..., ip=...)"
    header; the reason is the first line after it."""
    error = RuntimeError(
        "\x1b[36mray::ServeReplica:app:variant-int8\x1b[39m (pid=4242, ip=10.0.0.1, actor_id=ab12)\n"
        "The actor died unexpectedly before finishing this task.\n\tclass_name: ServeReplica"
    )
    assert remote_reason(error) == "RuntimeError: The actor died unexpectedly before finishing this task."
