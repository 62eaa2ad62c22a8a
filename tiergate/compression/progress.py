"""Progress bars for long work: live on a terminal, a line every 10 s in logs and CI."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 10.0)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=interactive, **kwargs)
