"""The build board in-process: a plain ``Board`` behind a handle that answers as a Ray
actor's does (``await handle.method.remote(...)``), for a ``BoardLink`` without Ray."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tiergate.serving.board import Board


class LocalBoardHandle:
    """``handle.poll.remote(...)`` runs ``board.poll(...)``, awaitable as an actor call is."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def __getattr__(self, name: str) -> SimpleNamespace:
        method = getattr(self.board, name)

        async def remote(*args: Any) -> Any:
            return method(*args)

        return SimpleNamespace(remote=remote)
