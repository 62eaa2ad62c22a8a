"""The baseline for gateway overhead: one ONNX file behind a plain Starlette app on uvicorn,
as many worker processes as the machine has cores (each on its own SO_REUSEPORT socket),
parsing the same JSON with orjson and answering with the same top-1 label and score. Each
worker runs its own ORT session on one thread, at the priority Ray gives tiergate's
replicas (nice 0). This is the server an engineer would write by hand for one model.

    python -m tests.benchmarks.bare_server MODEL.onnx --port 8100 [--workers N] [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiergate.profiles.measure import open_session

MODEL_ENV, THREADS_ENV = "TIERGATE_BARE_MODEL", "TIERGATE_BARE_THREADS"


def create_app() -> Starlette:
    """The app of one worker (uvicorn's factory: each worker process builds its own)."""
    session = open_session(os.environ[MODEL_ENV], threads=int(os.environ.get(THREADS_ENV, "1")))
    name = session.get_inputs()[0].name

    async def predict(request: Request) -> Response:
        body = orjson.loads(await request.body())
        x = np.asarray(body["inputs"], dtype=np.float32)
        x = x[None] if x.ndim == 3 else x
        logits = session.run(None, {name: x})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        answer = {"predictions": [{"index": int(p.argmax()), "score": float(p.max())} for p in probabilities]}
        return Response(orjson.dumps(answer), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b"ready")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])


def serve_worker(port: int) -> None:
    """One worker process: its own socket on ``port`` with SO_REUSEPORT, so the kernel spreads
    connections evenly over the workers (a shared socket, uvicorn's ``--workers``, lets one
    worker accept most of a burst of connections and leaves the other cores idle)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(create_app(), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])  # not fd=: uvicorn takes an fd for a UNIX socket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads per worker")
    args = parser.parse_args()
    os.environ[MODEL_ENV], os.environ[THREADS_ENV] = args.model, str(args.threads)
    workers = [multiprocessing.Process(target=serve_worker, args=(args.port,)) for _ in range(args.workers)]
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGINT, lambda *_: [w.terminate() for w in workers])
    signal.signal(signal.SIGTERM, lambda *_: [w.terminate() for w in workers])
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
