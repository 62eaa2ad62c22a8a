"""Measure every built variant on the serving hardware and assemble the menu.

    menu = profile_variants(variants, splits, ProfileConfig(threads=1), cache_dir)

Measurements are cached by (artifact sha256, data, settings, CPU, ORT version):
a warm start re-reads them instead of re-timing. Each record is sealed (tiergate.compression
.integrity) together with the sha256 of the artifact it measured and of its predicted
labels; a record whose seal does not vouch for it, or that measured another artifact, is
logged as stale and measured again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tiergate.compression.cache import cache_key
from tiergate.compression.data import Splits
from tiergate.compression.integrity import Sealer
from tiergate.compression.progress import progress
from tiergate.profiles.graph import count_params_and_flops
from tiergate.profiles.measure import (
    measure_latency,
    open_session,
    predict,
    wilson_interval,
)
from tiergate.profiles.menu import LatencyStats, MenuEntry, mark_pareto

log = logging.getLogger(__name__)


class ProfileConfig(BaseModel):
    """How variants are timed; threads should match what a serving replica gets."""

    model_config = ConfigDict(extra="forbid")

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    threads: int = Field(1, ge=1, description="ORT intra-op threads while timing")
    warmup_runs: int = Field(3, ge=0)
    min_runs: int = Field(10, ge=3, description="runs per batch size even past budget_s")
    budget_s: float = Field(1.0, gt=0, description="timing per variant and batch size")
    eval_batch_size: int = Field(256, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _includes_one(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if 1 not in sizes or min(sizes) < 1:
            raise ValueError("must include 1 (speed-ups and the Pareto front use batch-1 latency)")
        return tuple(sorted(set(sizes)))


@dataclass(frozen=True)
class Candidate:
    """A built variant handed to the profiler (kept free of compression's build types)."""

    name: str
    recipe: tuple[str, ...]
    path: Path
    sha256: str
    build_s: float
    cache_hit: bool
    details: dict[str, object]


def hardware_id() -> str:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{os.cpu_count()} {platform.machine()}"


def profile_variants(
    candidates: Sequence[Candidate],
    splits: Splits,
    config: ProfileConfig,
    cache_dir: Path,
    reprofile: bool = False,
    sealer: Sealer | None = None,
) -> list[MenuEntry]:
    """One MenuEntry per candidate, the first being the fp32 reference. ``sealer``: seals
    the cached records (with the menu key, when there is one)."""
    store = MeasurementStore(Path(cache_dir) / "profiles", sealer or Sealer())
    measured = []
    for candidate in progress(candidates, desc="profiling", unit="variant"):
        key = cache_key({
            "sha256": candidate.sha256, "data": splits.fingerprint, "config": config.model_dump(),
            "hardware": hardware_id(), "onnxruntime": ort.__version__,
        })[:32]  # fmt: skip
        cached = store.load(key, candidate) if not reprofile else None
        if cached is None:
            log.info("%s: measuring accuracy and latency", candidate.name)
            cached = _measure(candidate, splits, config)
            store.save(key, candidate, *cached)
        measured.append((candidate, *cached))
    return mark_pareto(_entries(measured, splits, config))


RECORD_FIELDS = frozenset({"latency_ms", "params", "flops", "size_bytes"})


class MeasurementStore:
    """Measurement records, one ``<key>.json`` (figures, seal) and ``<key>.npy`` (predicted
    test labels) each. The seal covers the figures, the artifact's sha256 and the labels'
    sha256, so an edited record, or one copied from another artifact, is not taken."""

    def __init__(self, root: Path, sealer: Sealer) -> None:
        self.root, self.sealer = root, sealer

    def save(self, key: str, candidate: Candidate, record: dict, labels: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, labels)
        body = {**record, "artifact_sha256": candidate.sha256,
                "labels_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / f"{key}.npy").write_bytes(buffer.getvalue())
        (self.root / f"{key}.json").write_text(json.dumps({**body, "seal": self.sealer.seal(body)}))

    def load(self, key: str, candidate: Candidate) -> tuple[dict, np.ndarray] | None:
        """The record for ``key`` if there is one the seal vouches for, else None (a stale
        one is logged with the reason)."""
        record_file = self.root / f"{key}.json"
        try:
            body = json.loads(record_file.read_text())
            raw = (self.root / f"{key}.npy").read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            return self._stale(record_file, candidate, f"it does not read: {error}")
        problem = self._problem(body, raw, candidate)
        if problem is not None:
            return self._stale(record_file, candidate, problem)
        try:
            return body, np.load(io.BytesIO(raw))
        except ValueError as error:  # only a record sealed without a key can get here
            return self._stale(record_file, candidate, f"its labels do not read: {error}")

    def _problem(self, body: object, raw: bytes, candidate: Candidate) -> str | None:
        if not isinstance(body, dict):
            return "it is not a JSON object"
        problem = self.sealer.problem({k: v for k, v in body.items() if k != "seal"}, body.get("seal"))
        if problem is not None:
            return problem
        if body.get("artifact_sha256") != candidate.sha256:
            return f"it measured another artifact ({str(body.get('artifact_sha256'))[:12]})"
        if body.get("labels_sha256") != hashlib.sha256(raw).hexdigest():
            return "its labels file does not match its sha256"
        missing = sorted(RECORD_FIELDS - body.keys())
        return f"it lacks {', '.join(missing)}" if missing else None

    @staticmethod
    def _stale(record_file: Path, candidate: Candidate, problem: str) -> None:
        log.warning("profiles: %s is stale (%s); measuring %s again", record_file, problem, candidate.name)
        return None


def _measure(candidate: Candidate, splits: Splits, config: ProfileConfig) -> tuple[dict, np.ndarray]:
    evaluator = open_session(candidate.path, threads=0)
    labels = predict(evaluator, splits.test.x, config.eval_batch_size).argmax(1).astype(np.int64)
    del evaluator
    session = open_session(candidate.path, threads=config.threads)
    latency = measure_latency(
        session, splits.test.x[:64], config.batch_sizes, config.warmup_runs, config.min_runs,
        config.budget_s,
    )  # fmt: skip
    params, flops = count_params_and_flops(candidate.path)
    record = {
        "latency_ms": {str(b): vars(p) for b, p in latency.items()},
        "params": params, "flops": flops, "size_bytes": candidate.path.stat().st_size,
    }  # fmt: skip
    return record, labels


def _entries(measured: list, splits: Splits, config: ProfileConfig) -> list[MenuEntry]:
    reference_labels = measured[0][2]
    reference_p50 = measured[0][1]["latency_ms"]["1"]["p50"]
    largest = str(max(config.batch_sizes))
    entries = []
    for candidate, record, labels in measured:
        accuracy, interval = None, None
        if splits.test.y is not None:
            correct = int((labels == splits.test.y).sum())
            accuracy, interval = correct / len(labels), wilson_interval(correct, len(labels))
        latency = {b: LatencyStats(**stats) for b, stats in record["latency_ms"].items()}
        entries.append(MenuEntry(
            name=candidate.name, recipe=list(candidate.recipe), path=str(candidate.path),
            sha256=candidate.sha256, accuracy=accuracy, accuracy_ci95=interval,
            fidelity=float((labels == reference_labels).mean()), test_samples=len(labels),
            latency_ms=latency, threads=config.threads,
            throughput_per_s=int(largest) * 1000 / latency[largest].p50,
            speedup=reference_p50 / latency["1"].p50 if "1" in latency else float("nan"),
            size_bytes=record["size_bytes"], params=record["params"], flops=record["flops"],
            build_s=candidate.build_s, cache_hit=candidate.cache_hit, details=candidate.details,
        ))  # fmt: skip
    return entries
