"""A serving replica's link to the build board (``tiergate.serving.board``): the board's
actor is looked up by name until it exists (a replica may start before or after the
coordinator creates it), polled for the build status and the commands posted to every
replica, and used to broadcast an admin's command to all of them.

    link = BoardLink(member="replica-1")
    await link.turn(replica.apply_build_status, run)      # every interval (upkeep.follow_board)
    seq = await link.post("reprofile")                    # None without a board
    results = await link.gather(seq)                      # member -> result, within answer_timeout_s

Without a board every call is a no-op, so a replica behaves exactly as it did before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tiergate.serving.board import BuildProgress, board_actor

log = logging.getLogger(__name__)

ApplyStatus = Callable[[Mapping[str, BuildProgress]], None]
RunCommand = Callable[[str, dict], Awaitable[dict]]


class BoardLink:
    def __init__(
        self,
        member: str,
        find: Callable[[], Any] = board_actor,
        answer_timeout_s: float = 30.0,
        members_within_s: float = 10.0,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.member, self.find, self.answer_timeout_s = member, find, answer_timeout_s
        self.members_within_s, self.poll_s, self.clock = members_within_s, poll_s, clock
        self.board: Any = None  # the actor's handle, once found
        self.after = -1  # the last command number this member has seen (-1: none yet)

    async def connected(self) -> bool:
        """Whether the board exists, looking it up by name (off the event loop) when not known yet."""
        if self.board is None:
            self.board = await asyncio.to_thread(self.find)
            self.after = -1  # a board found anew: its commands from now on, none replayed
        return self.board is not None

    async def call(self, method: str, *args: Any) -> Any:
        """One of the board's methods; a board that does not answer is looked up again next time."""
        try:
            return await getattr(self.board, method).remote(*args)
        except Exception:
            self.board = None
            raise

    async def turn(self, apply: ApplyStatus, run: RunCommand) -> None:
        """One poll: apply the build status, run each command new to this member (once; not
        those it posted itself, which it ran as it posted them) and answer it."""
        if not await self.connected():
            return
        polled = await self.call("poll", self.member, self.after)
        apply({name: BuildProgress.from_json(progress) for name, progress in polled["status"].items()})
        for command in polled["commands"]:
            self.after = max(self.after, command["seq"])
            if command["args"].get("by") == self.member:
                continue
            result = await run(command["kind"], command["args"])
            await self.call("answer", self.member, command["seq"], result)
        self.after = max(self.after, polled["seq"])

    async def post(self, kind: str, args: dict | None = None, to: str = "replicas") -> int | None:
        """Post a command (signed with this member, who runs it itself); None without a board."""
        if not await self.connected():
            return None
        return await self.call("post", kind, {**(args or {}), "by": self.member}, to)

    async def gather(self, seq: int) -> dict[str, dict]:
        """The results of command ``seq`` from every other replica that polled within
        ``members_within_s``, waiting at most ``answer_timeout_s``; a replica that did not
        answer in time is listed as such."""
        members = [
            m for m in await self.call("members", "replicas", self.members_within_s) if m != self.member
        ]
        deadline = self.clock() + self.answer_timeout_s
        answers = await self.call("answers", seq)
        while any(m not in answers for m in members) and self.clock() < deadline:
            await asyncio.sleep(self.poll_s)
            answers = await self.call("answers", seq)
        missing = {"ok": False, "error": f"no answer in {self.answer_timeout_s:g} s"}
        return {member: answers.get(member, missing) for member in members}
