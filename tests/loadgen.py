"""A lean open-loop HTTP load generator for 127.0.0.1 (benchmarks and the overload test).

answers = asyncio.run(open_loop(port, body, rate_per_s=300, seconds=3, timeout_s=10))
[a.status for a in answers]  # 200, 429, 503, or the client-side error's name
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass


class Connections:
    """A lean HTTP/1.1 keep-alive client on asyncio streams (httpx costs several times more
    CPU per request, which on 2 shared cores would be taken from the gateway it measures).
    Every arrival takes an idle connection or opens a new one, so nothing queues client-side."""

    def __init__(self, port: int, body: bytes, timeout_s: float, path: str = "/v1/predict") -> None:
        self.port, self.timeout_s = port, timeout_s
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.stale = 0  # idle connections found closed by the server, request re-sent

    async def post(self) -> tuple[int, dict[str, str], bytes]:
        """One request. A kept-alive connection the server closed while idle (as every HTTP
        client does) is replaced and the request sent again on a new one, and counted."""
        if self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as error:
                if isinstance(error, asyncio.IncompleteReadError) and error.partial:
                    raise  # the server had started to answer: a real failure
                self.stale += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return await self._exchange(reader, writer)

    async def _exchange(self, reader, writer) -> tuple[int, dict[str, str], bytes]:
        try:
            writer.write(self.request)
            status, headers, body = await asyncio.wait_for(_read_response(reader), self.timeout_s)
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, headers, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionResetError(f"malformed status line {lines[0]!r}")
    status = int(parts[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


@dataclass(frozen=True)
class Answer:
    status: int | str  # the HTTP status, or the name of the client-side error
    sent_at_s: float  # scheduled send time, since the run started
    latency_ms: float  # from the scheduled send time (the client's own lateness included)
    headers: dict[str, str]
    body: bytes
    late_ms: float = 0.0  # how far behind its schedule the client sent it (its own lateness)


async def open_loop(
    port: int, body: bytes, rate_per_s: float, seconds: float, timeout_s: float, seed: int = 0,
    path: str = "/v1/predict", max_connections: int | None = None,
) -> list[Answer]:  # fmt: skip
    """Poisson arrivals at ``rate_per_s`` for ``seconds`` (each request leaves on schedule,
    whether or not earlier ones were answered); every answer once the stragglers are in.
    With ``max_connections`` (a load balancer's cap), an arrival that finds them all busy
    waits for one. Every latency counts from the request's scheduled send time, so a
    client that falls behind its schedule shows in the figures instead of hiding them."""
    connections = Connections(port, body, timeout_s, path)
    slots = asyncio.Semaphore(max_connections) if max_connections else None
    rng = random.Random(seed)
    start = time.perf_counter()
    tasks, next_at = [], 0.0
    while next_at < seconds:
        delay = start + next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(connections, start, next_at, slots)))
        next_at += rng.expovariate(rate_per_s)
    answers = await asyncio.gather(*tasks)
    connections.close()
    return answers


async def _one(
    connections: Connections, start: float, sent_at_s: float, slots: asyncio.Semaphore | None
) -> Answer:
    scheduled = start + sent_at_s
    late_ms = (time.perf_counter() - scheduled) * 1000
    try:
        async with slots or contextlib.nullcontext():
            status, headers, body = await connections.post()
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
        status, headers, body = type(error).__name__, {}, b""
    return Answer(status, sent_at_s, (time.perf_counter() - scheduled) * 1000, headers, body, late_ms)
