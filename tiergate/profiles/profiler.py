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


@dataclass(frozen=True)
class Measurement:
    """One candidate's figures and its predicted test labels: on the whole test split
    (``samples`` None) or on the first ``samples`` of a fixed shuffle of it (a quick,
    provisional estimate; its interval is as wide as that sample makes it)."""

    candidate: Candidate
    record: dict
    labels: np.ndarray
    samples: int | None = None


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
    measured = [
        measure_candidate(candidate, splits, config, store, reprofile)
        for candidate in progress(candidates, desc="profiling", unit="variant")
    ]
    return menu_entries(measured, splits, config)


def measure_candidate(
    candidate: Candidate,
    splits: Splits,
    config: ProfileConfig,
    store: MeasurementStore,
    reprofile: bool = False,
    samples: int | None = None,
    cached_only: bool = False,
    eval_threads: int = 0,
) -> Measurement | None:
    """``candidate`` measured (or its sealed record read back): accuracy on the test split
    (``samples``: on that many of it) and latency per batch size. ``cached_only``: None
    instead of measuring when nothing is cached; ``eval_threads``: ORT threads for the
    accuracy pass (0: every core)."""
    samples = None if samples is None or samples >= len(splits.test) else samples
    key = cache_key({
        "sha256": candidate.sha256, "data": splits.fingerprint, "config": config.model_dump(),
        "hardware": hardware_id(), "onnxruntime": ort.__version__,
        **({"samples": samples} if samples is not None else {}),
    })[:32]  # fmt: skip
    cached = store.load(key, candidate) if not reprofile else None
    if cached is None:
        if cached_only:
            return None
        what = f"{samples} test images" if samples is not None else "the test split"
        log.info("%s: measuring accuracy (%s) and latency", candidate.name, what)
        images = _test_images(splits, samples)
        cached = _measure(candidate, images, splits.test.x[:64], config, eval_threads)
        store.save(key, candidate, *cached)
    return Measurement(candidate, *cached, samples=samples)


def evaluation_indices(total: int, samples: int | None) -> np.ndarray:
    """The test images, in order, a measurement of ``samples`` uses: all of them, or a
    fixed shuffle's first ``samples`` (a smaller estimate sees a subset of a larger one's)."""
    if samples is None:
        return np.arange(total)
    return np.sort(np.random.default_rng(0).permutation(total)[:samples])


def _test_images(splits: Splits, samples: int | None) -> np.ndarray:
    return splits.test.x if samples is None else splits.test.x[evaluation_indices(len(splits.test), samples)]


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


def _measure(
    candidate: Candidate,
    images: np.ndarray,
    timing_sample: np.ndarray,
    config: ProfileConfig,
    eval_threads: int = 0,
) -> tuple[dict, np.ndarray]:
    """Accuracy in one batched session on ``eval_threads`` (0: every core), then latency in
    another, set up as a serving replica runs it (``config.threads``), per batch size."""
    evaluator = open_session(candidate.path, threads=eval_threads)
    labels = predict(evaluator, images, config.eval_batch_size).argmax(1).astype(np.int64)
    del evaluator
    session = open_session(candidate.path, threads=config.threads)
    latency = measure_latency(
        session, timing_sample, config.batch_sizes, config.warmup_runs, config.min_runs, config.budget_s
    )
    params, flops = count_params_and_flops(candidate.path)
    record = {
        "latency_ms": {str(b): vars(p) for b, p in latency.items()},
        "params": params, "flops": flops, "size_bytes": candidate.path.stat().st_size,
    }  # fmt: skip
    return record, labels


def menu_entries(measured: Sequence[Measurement], splits: Splits, config: ProfileConfig) -> list[MenuEntry]:
    """The menu's entries, Pareto-marked: ``measured[0]`` is the reference every speed-up
    and fidelity counts from (fidelity on the test images both were measured on)."""
    reference = measured[0]
    reference_p50 = reference.record["latency_ms"]["1"]["p50"]
    total = len(splits.test)
    entries = []
    for m in measured:
        indices = evaluation_indices(total, m.samples)
        accuracy, interval = None, None
        if splits.test.y is not None:
            correct = int((m.labels == splits.test.y[indices]).sum())
            accuracy, interval = correct / len(m.labels), wilson_interval(correct, len(m.labels))
        _, mine, theirs = np.intersect1d(
            indices, evaluation_indices(total, reference.samples), return_indices=True
        )
        latency = {b: LatencyStats(**stats) for b, stats in m.record["latency_ms"].items()}
        largest = str(max(int(b) for b in latency))  # its own: records of other settings may be mixed
        c = m.candidate
        entries.append(MenuEntry(
            name=c.name, recipe=list(c.recipe), path=str(c.path), sha256=c.sha256, accuracy=accuracy,
            accuracy_ci95=interval, fidelity=float((m.labels[mine] == reference.labels[theirs]).mean()),
            test_samples=len(m.labels), latency_ms=latency, threads=config.threads,
            throughput_per_s=int(largest) * 1000 / latency[largest].p50,
            speedup=reference_p50 / latency["1"].p50 if "1" in latency else float("nan"),
            size_bytes=m.record["size_bytes"], params=m.record["params"], flops=m.record["flops"],
            build_s=c.build_s, cache_hit=c.cache_hit, details=c.details,
        ))  # fmt: skip
    return mark_pareto(entries)
