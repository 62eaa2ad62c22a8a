"""Content-addressed artifact store: one folder per key, a sha256 per file.

    cache = ArtifactCache(Path(".tiergate-cache"))
    artifact = cache.lookup(key) or cache.store(key, built_onnx, meta)

A file whose sha256 no longer matches is logged, deleted and reported as a miss,
so a corrupt or truncated artifact is rebuilt, never loaded.
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
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "artifacts"

    def lookup(self, key: str) -> Artifact | None:
        """The stored artifact for ``key`` if present and intact, else None."""
        folder = self.root / key[:32]
        model, meta_file = folder / MODEL_FILE, folder / META_FILE
        if not folder.exists():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            intact = meta["key"] == key and file_sha256(model) == meta["sha256"]
        except (OSError, ValueError, KeyError):
            intact = False
        if not intact:
            log.warning("cache: artifact %s is corrupt or incomplete; deleting and rebuilding", folder)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return Artifact(key, model, meta["sha256"], meta, cache_hit=True)

    def store(self, key: str, built: Path, meta: dict[str, Any]) -> Artifact:
        """Move ``built`` into the cache under ``key``; written to a temp folder, then renamed."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / key[:32]
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        shutil.move(str(built), staging / MODEL_FILE)
        meta = {**meta, "key": key, "sha256": file_sha256(staging / MODEL_FILE)}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return Artifact(key, folder / MODEL_FILE, meta["sha256"], meta, cache_hit=False)
