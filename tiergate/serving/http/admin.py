"""/v1/admin/*: operations on the replicas. Without a build board each replica answers for
itself; with one (``tiergate.serving.board``), re-profile and key reload reach every
replica: the one that answers posts the command, runs it too, and lists each replica's
result. Rebuild asks the build coordinator, through the board.

add_admin_routes(app, access)
run_command(replica, "reprofile", {})   # a broadcast command, as each replica runs it
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request

from tiergate.serving import schemas
from tiergate.serving.errors import Conflict, NotFound, ServingError, Unavailable, echo
from tiergate.serving.http.access import Access
from tiergate.serving.http.errors import status_of
from tiergate.serving.registry import VariantState
from tiergate.serving.replica import Replica
from tiergate.serving.schemas import error_responses as errors

log = logging.getLogger(__name__)


def add_admin_routes(app: FastAPI, access: Access) -> None:
    @app.post("/v1/admin/reprofile", responses=errors(401, 403, 408, 413, 429, 503))
    async def reprofile(request: Request):
        """Time every variant again, as each replica runs now, and route on that: one at a time
        and at most once per serving.admission.reprofile_min_interval_s (429), and only while
        the replica is quiet (503 and the old profile stays; Retry-After on both). With a build
        board, every replica does (``replicas``: each one's result); the status is this one's."""
        replica = access.admin(request)
        # admission admitted this call (RequestContext or FrontDoor): it is one of those in flight
        return await everywhere(replica, "reprofile", lambda: _reprofile(replica, own_in_flight=1))

    @app.post("/v1/admin/reload-keys", responses=errors(401, 403, 408, 409, 413, 503))
    async def reload_keys(request: Request):
        """Read the API keys again (rotation without a restart); rate-limit buckets carry over.
        With a build board, every replica does (``replicas``: each one's result)."""
        replica = access.admin(request)
        return await everywhere(replica, "reload-keys", lambda: _reload_keys(replica))

    @app.post("/v1/admin/rebuild", status_code=202, responses=errors(401, 403, 404, 408, 409, 413, 422, 503))
    async def rebuild(request: Request, body: schemas.RebuildRequest | None = None):
        """Ask the build coordinator to build ``variant`` again (``force``: even though
        cached); without ``variant``, to read its config file again and build what changed.
        202 with the command's number; 409 when no coordinator runs (no build board); 503
        when the board does not answer."""
        replica = access.admin(request)
        body = body or schemas.RebuildRequest()
        link = replica.board
        if link is None or not await link.connected():
            raise Conflict("no build coordinator is running (no build board): nothing can be rebuilt")
        try:
            if body.variant is not None:
                configured = {v.name for v in replica.registry if v.state is not VariantState.RETIRED}
                known = configured | set(await link.call("status"))
                if body.variant not in known:
                    raise NotFound(
                        f"variant: unknown variant {echo(body.variant)}", field="variant", known=sorted(known)
                    )
            seq = await link.post("rebuild", {"variant": body.variant, "force": body.force}, to="coordinator")
        except ServingError:
            raise
        except Exception as error:  # the board went away between the look-up and the call
            raise Unavailable(f"the build board did not answer: {error}", retry_after_s=5) from None
        return {"accepted": seq}


async def _reprofile(replica: Replica, own_in_flight: int = 0) -> dict:
    timings = await replica.reprofile(own_in_flight=own_in_flight)
    return {"variants": {name: {str(b): ms for b, ms in p95.items()} for name, p95 in timings.items()}}


async def _reload_keys(replica: Replica) -> dict:
    return {"keys": replica.reload_keys()}


COMMANDS: dict[str, Callable[[Replica], Awaitable[dict]]] = {
    "reprofile": _reprofile,
    "reload-keys": _reload_keys,
}


def failure(error: Exception) -> dict:
    """A replica's result for a command it could not carry out."""
    if isinstance(error, ServingError):
        return {"ok": False, "status": status_of(error), "error": str(error)}
    return {"ok": False, "error": f"{type(error).__name__}: {error}"}


async def run_command(replica: Replica, kind: str, args: dict) -> dict:
    """A command from the board, run on ``replica``: ``{"ok": true, ...}`` with what the
    admin route would answer, or ``{"ok": false, "status", "error"}``."""
    command = COMMANDS.get(kind)
    if command is None:
        return {"ok": False, "status": 400, "error": f"kind: unknown command {echo(kind)}"}
    try:
        return {"ok": True, **await command(replica)}
    except Exception as error:  # an answer for the board, whatever went wrong
        return failure(error)


async def everywhere(replica: Replica, kind: str, here: Callable[[], Awaitable[dict]]) -> dict:
    """``here()``'s answer; with a build board, the command goes to every replica as well and
    the answer lists each one's result under ``replicas`` (this one's error, if it fails,
    carries them too)."""
    link = replica.board
    try:
        seq = await link.post(kind) if link is not None else None
    except Exception as error:  # the board went away: this replica still answers for itself
        log.warning("build board did not take %s (%s); this replica only", kind, error)
        seq = None
    if seq is None:
        return await here()
    others = asyncio.ensure_future(link.gather(seq))
    try:
        own = await here()
    except ServingError as error:
        error.details["replicas"] = {link.member: failure(error), **await _answers(others)}
        raise
    except BaseException:
        others.cancel()
        raise
    return {**own, "replicas": {link.member: {"ok": True, **own}, **await _answers(others)}}


async def _answers(others: asyncio.Future) -> dict[str, dict]:
    try:
        return await others
    except Exception as error:
        log.warning("build board: answers not gathered: %s", error)
        return {}
