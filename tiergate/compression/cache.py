"""Content-addressed artifact store: one folder per key, a sha256 per file.

    cache = ArtifactCache(Path(".tiergate-cache"))
    artifact = cache.lookup(key) or cache.store(key, built_onnx, meta)

A file whose sha256 no longer matches is logged, deleted and reported as a miss,
so a corrupt or truncated artifact is rebuilt, never loaded. ``meta.json`` (which holds
that sha256) is sealed too: with a menu key, an entry whose seal has no valid HMAC is
rebuilt the same way, so whoever can write the cache cannot swap an artifact in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate.compression.integrity import Sealer

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
META_FILE = "meta.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of a JSON-able description of everything an artifact depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    key: str
    path: Path  # the ONNX file
    sha256: str
    meta: dict[str, Any]
    cache_hit: bool


class ArtifactCache:
    def __init__(self, root: Path, sealer: Sealer | None = None) -> None:
        self.root = Path(root) / "artifacts"
        self.sealer = sealer or Sealer()

    def lookup(self, key: str) -> Artifact | None:
        """The stored artifact for ``key`` if present and intact, else None."""
        folder = self.root / key[:32]
        model, meta_file = folder / MODEL_FILE, folder / META_FILE
        if not folder.exists():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            problem = self._problem(meta, key, model)
        except (OSError, ValueError, KeyError, TypeError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            log.warning(
                "cache: artifact %s is corrupt or incomplete (%s); deleting and rebuilding", folder, problem
            )
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return Artifact(key, model, meta["sha256"], meta, cache_hit=True)

    def _problem(self, meta: dict[str, Any], key: str, model: Path) -> str | None:
        """What is wrong with a cached entry, None if nothing. An entry from before seals
        passes without a key (its file's sha256 is still checked), not with one."""
        if meta["key"] != key:
            return "meta.json belongs to another key"
        if "seal" in meta or self.sealer.keyed:
            problem = self.sealer.problem({k: v for k, v in meta.items() if k != "seal"}, meta.get("seal"))
            if problem is not None:
                return f"meta.json: {problem}"
        return None if file_sha256(model) == meta["sha256"] else "model.onnx does not match its sha256"

    def store(self, key: str, built: Path, meta: dict[str, Any]) -> Artifact:
        """Move ``built`` into the cache under ``key``; written to a temp folder, then renamed."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / key[:32]
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        shutil.move(str(built), staging / MODEL_FILE)
        meta = json.loads(
            json.dumps({**meta, "key": key, "sha256": file_sha256(staging / MODEL_FILE)}, default=str)
        )
        meta["seal"] = self.sealer.seal(meta)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return Artifact(key, folder / MODEL_FILE, meta["sha256"], meta, cache_hit=False)
