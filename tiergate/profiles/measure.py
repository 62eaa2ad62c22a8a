"""Run and time one ONNX variant in ONNX Runtime: predictions, accuracy with its 95%
interval, latency percentiles per batch size. Needs ORT only (serving replicas use it).

    session = open_session(Path("model.onnx"), threads=1)
    latency = measure_latency(session, sample, batch_sizes=(1, 8, 32))
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


def open_session(path: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """An ORT CPU session pinned to ``threads`` intra-op threads (0 = ORT's default), of
    the ONNX file at ``path`` or of the model's bytes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def predict(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (N, K) for ``x`` (N, C, H, W)."""
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: x[start : start + batch_size]})[0] for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: honest near 0 and 1, unlike p +- z*se."""
    if total == 0:
        return (0.0, 1.0)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # the min/max only guard float rounding at p = 0 or 1, where the bound equals p
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    runs: int


def measure_latency(
    session: ort.InferenceSession,
    sample: np.ndarray,
    batch_sizes: Sequence[int] = (1, 8, 32),
    warmup_runs: int = 3,
    min_runs: int = 10,
    budget_s: float = 1.0,
    max_runs: int = 2000,
    pause_s: float = 0.0,
) -> dict[int, Percentiles]:
    """Wall-clock ms per ``session.run`` at each batch size: warm-up, then runs for
    ``budget_s`` (at least ``min_runs``, at most ``max_runs``). ``pause_s``: a sleep after
    each run, untimed, that leaves the GIL to the process's other threads (a serving
    replica's event loop, which a tight loop of short runs would otherwise hold back for
    the interpreter's whole switch interval each time it wants the GIL)."""
    name = session.get_inputs()[0].name
    results = {}
    for batch_size in batch_sizes:
        batch = np.ascontiguousarray(np.resize(sample, (batch_size, *sample.shape[1:])))
        feed = {name: batch.astype(np.float32)}
        for _ in range(warmup_runs):
            session.run(None, feed)
        timings_ms: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(timings_ms) < min_runs or time.perf_counter() < deadline:
            started = time.perf_counter()
            session.run(None, feed)
            timings_ms.append((time.perf_counter() - started) * 1000)
            if len(timings_ms) >= max_runs:
                break
            if pause_s:
                time.sleep(pause_s)
        p50, p95, p99 = np.percentile(timings_ms, [50, 95, 99])
        results[batch_size] = Percentiles(float(p50), float(p95), float(p99), len(timings_ms))
    return results
