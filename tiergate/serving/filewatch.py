"""Whether a file's content changed since the last look: the API keys file and the menu
manifest are watched this way by every replica.

    watch = FileWatch(path)    # before the first read, so a change meanwhile is seen
    if watch.changed(): reload()

By digest, not mtime: a Kubernetes Secret volume swaps a symlink, and an editor may keep
the mtime.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class FileWatch:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen = self._digest()

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None  # gone for a moment (being replaced): not a change to act on

    def changed(self) -> bool:
        current = self._digest()
        if current is None or current == self._seen:
            return False
        self._seen = current
        return True
