"""Build every variant of a menu, reusing cached artifacts and shared prefixes.

    builder = Builder(model_config, splits, base, cache_dir=Path(".tiergate-cache"))
    built, skipped = builder.build_all(parse_variants(["fp32", "pruned+int8"], recipes))

A variant's name is its recipe: ``fp32`` is the base, ``pruned+int8`` applies the
recipe named ``pruned`` and then the one named ``int8``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torch_pruning
from torch import nn

import tiergate.compression.methods  # noqa: F401  (registers the handlers)
from tiergate.compression.cache import Artifact, ArtifactCache, cache_key
from tiergate.compression.data import Dataset, Splits
from tiergate.compression.export import export_onnx
from tiergate.compression.integrity import Sealer
from tiergate.compression.progress import progress
from tiergate.compression.recipes import (
    BuildContext,
    Recipe,
    is_onnx_step,
    onnx_handler,
    torch_handler,
)
from tiergate.compression.source import ModelConfig, weights_digest
from tiergate.compression.train import bf16_available

log = logging.getLogger(__name__)

BASE_VARIANT = "fp32"
FORMAT_VERSION = 1  # bump when the artifact layout or the build code changes meaning


class CompressionError(RuntimeError):
    """A variant that must exist (fp32) could not be built."""


@dataclass(frozen=True)
class VariantSpec:
    name: str
    recipe: tuple[str, ...]  # recipe names, in order
    steps: tuple[Recipe, ...]


@dataclass(frozen=True)
class BuiltVariant:
    spec: VariantSpec
    artifact: Artifact


def parse_variants(names: Sequence[str], recipes: Mapping[str, Recipe]) -> list[VariantSpec]:
    """Turn names like ``pruned+int8`` into specs, fp32 first; raise ValueError naming the bad entry."""
    specs, seen = [], set()
    for index, name in enumerate(names):
        where = f"compress.variants[{index}] ({name!r})"
        if name in seen:
            raise ValueError(f"{where}: listed twice")
        seen.add(name)
        parts = () if name == BASE_VARIANT else tuple(name.split("+"))
        unknown = [part for part in parts if part not in recipes]
        if unknown:
            raise ValueError(
                f"{where}: unknown recipe {unknown[0]!r}; known: {BASE_VARIANT}, {', '.join(recipes)}"
            )
        steps = tuple(recipes[part] for part in parts)
        if any(is_onnx_step(step) for step in steps[:-1]):
            raise ValueError(f"{where}: int8 works on the exported ONNX file, so it must come last")
        specs.append(VariantSpec(name, parts, steps))
    if BASE_VARIANT not in seen:
        raise ValueError(f"compress.variants: must include {BASE_VARIANT!r}, the reference variant")
    return sorted(specs, key=lambda spec: spec.name != BASE_VARIANT)  # fp32 first: the reference


def library_versions() -> dict[str, str]:
    return {
        "torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
        "torch_pruning": torch_pruning.__version__, "format": str(FORMAT_VERSION),
    }  # fmt: skip


class Builder:
    """Builds variants of one base on one dataset into an artifact cache."""

    def __init__(
        self,
        model_config: ModelConfig,
        splits: Splits,
        base: nn.Module,
        cache_dir: Path,
        finetune_samples: int = 20000,
        sealer: Sealer | None = None,
        scratch: Path | None = None,
    ) -> None:
        """``scratch``: where builds are written before they are stored (default: the
        system's temporary folder); a build killed half-way leaves its files only there."""
        self.splits, self.base, self.scratch = splits, base, scratch
        self.cache = ArtifactCache(cache_dir, sealer)
        self._teacher_dir = Path(cache_dir) / "teacher"
        self._modules: dict[tuple[Recipe, ...], nn.Module] = {}
        order = np.random.default_rng(0).permutation(len(splits.train))[:finetune_samples]
        self._finetune = splits.train.take(np.sort(order))
        self._teacher: np.ndarray | None = None
        self._identity = {
            "base": weights_digest(model_config), "data": splits.fingerprint,
            "finetune_samples": finetune_samples, "versions": library_versions(),
        }  # fmt: skip
        self._mean, self._std = model_config.mean, model_config.std

    def build_all(self, specs: Sequence[VariantSpec]) -> tuple[list[BuiltVariant], dict[str, str]]:
        """Build each spec; a failure skips that variant (and is reported), except for fp32."""
        built, skipped = [], {}
        for spec in specs:
            try:
                built.append(BuiltVariant(spec, self.artifact(spec.steps, spec.name)))
            except Exception as error:
                if spec.name == BASE_VARIANT:
                    raise CompressionError(f"fp32: cannot export the base model: {error}") from error
                reason = f"{type(error).__name__}: {error}".splitlines()[0]
                log.error("variant %s skipped: %s", spec.name, reason)
                skipped[spec.name] = reason
        return built, skipped

    def key(self, steps: tuple[Recipe, ...]) -> str:
        """The cache key of the artifact ``steps`` make from this base and data."""
        return cache_key({**self._identity, "steps": [step.model_dump() for step in steps]})

    def cached(self, steps: tuple[Recipe, ...]) -> Artifact | None:
        """The artifact for ``steps`` if the cache holds an intact one (nothing is built)."""
        return self.cache.lookup(self.key(steps))

    def artifact(self, steps: tuple[Recipe, ...], name: str, fresh: bool = False) -> Artifact:
        """The cached or freshly built ONNX artifact for ``steps`` (``fresh``: built again even
        though cached; the cached one stays in place, in use, until the new one replaces it)."""
        key = self.key(steps)
        hit = None if fresh else self.cache.lookup(key)
        if hit is not None:
            log.info("%s: cache hit (%s)", name, hit.path.parent.name[:12])
            return hit
        log.info("%s: building", name)
        started = time.perf_counter()
        details: dict[str, object] = {}
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch) as scratch:
            out = Path(scratch) / "model.onnx"
            if steps and is_onnx_step(steps[-1]):
                parent = self.artifact(steps[:-1], name.rpartition("+")[0] or "fp32")
                started = time.perf_counter()  # the parent's own build time is its own
                onnx_handler(steps[-1])(steps[-1], parent.path, out, self._context(details))
            else:
                module = self.module(steps, details)
                details["max_abs_logit_diff"] = export_onnx(module, self.splits.test.x[:16], out)
            build_s = time.perf_counter() - started
            artifact = self.cache.store(key, out, {"name": name, "build_s": build_s, "details": details})
        log.info("%s: built in %.1f s", name, build_s)
        return artifact

    def module(self, steps: tuple[Recipe, ...], details: dict[str, object]) -> nn.Module:
        """The torch module after ``steps`` (all torch steps), memoised for shared prefixes."""
        if not steps:
            return self.base
        if steps not in self._modules:
            parent = self.module(steps[:-1], {})
            step = steps[-1]
            self._modules[steps] = torch_handler(step)(step, parent, self._context(details))
        return self._modules[steps]

    def _context(self, details: dict[str, object]) -> BuildContext:
        return BuildContext(
            splits=self.splits, base=self.base, finetune=self._finetune,
            teacher_logits=self.teacher_logits, input_mean=self._mean, input_std=self._std,
            details=details,
        )  # fmt: skip

    def teacher_logits(self) -> np.ndarray:
        """The base's logits on the fine-tuning pool: computed once, cached on disk."""
        if self._teacher is None:
            key = cache_key({**self._identity, "teacher": True})
            path = self._teacher_dir / f"{key[:32]}.npy"
            try:
                self._teacher = np.load(path)
            except (OSError, ValueError):
                log.info("teacher logits: computing on %d samples", len(self._finetune))
                self._teacher = _logits(self.base, self._finetune)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, self._teacher)
            if len(self._teacher) != len(self._finetune):  # a stale or truncated file
                self._teacher = _logits(self.base, self._finetune)
                np.save(path, self._teacher)
        return self._teacher


@torch.no_grad()
def _logits(model: nn.Module, data: Dataset, batch_size: int = 256) -> np.ndarray:
    outputs = []
    for start in progress(range(0, len(data), batch_size), desc="teacher logits"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_available()):
            outputs.append(model(torch.from_numpy(data.x[start : start + batch_size])).float().numpy())
    return np.concatenate(outputs)
