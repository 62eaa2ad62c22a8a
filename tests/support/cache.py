"""Helpers for tests that tamper with a copy of the tiny menu's cache, as someone who can
write the cache volume would."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tests.conftest import FIXTURE_CACHE


def cache_copy(destination: Path) -> Path:
    """A copy of the fixture cache (artifacts, base, teacher, measurements) at ``destination``;
    the ``tiny_menu`` fixture must have filled it first."""
    shutil.copytree(FIXTURE_CACHE, destination)
    return destination


def records_with_accuracy(cache_dir: Path, y: np.ndarray, accuracy: float) -> list[Path]:
    """The cached measurement records (their ``.npy`` predicted labels) whose top-1 accuracy
    on ``y`` is ``accuracy``: found by content, so whatever the records' own format."""
    found = []
    for path in sorted((cache_dir / "profiles").glob("*.npy")):
        labels = np.load(path)
        if len(labels) == len(y) and float((labels == y).mean()) == accuracy:
            found.append(path)
    return found


def raise_accuracy(labels_file: Path, y: np.ndarray) -> None:
    """Rewrite a record's predicted labels so that they score 0.99 or more on ``y``."""
    forged = y.copy()
    wrong = len(y) // 100
    forged[:wrong] = (forged[:wrong] + 1) % (int(y.max()) + 1)
    np.save(labels_file, forged)
