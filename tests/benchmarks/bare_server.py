"""The baseline for gateway overhead: one ONNX file behind a single uvicorn process,
parsing the same JSON and answering with the same top-1 label and score.

    python -m tests.benchmarks.bare_server MODEL.onnx --port 8100
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI, Request

from tiergate.profiles.measure import open_session


def create_app(path: str, threads: int) -> FastAPI:
    session = open_session(path, threads=threads)
    name = session.get_inputs()[0].name
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.json()
        x = np.asarray(body["inputs"], dtype=np.float32)
        x = x[None] if x.ndim == 3 else x
        logits = session.run(None, {name: x})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return {"predictions": [{"index": int(p.argmax()), "score": float(p.max())} for p in probabilities]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.threads), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
