"""Progress bars for long work: live on a terminal, a line every 10 s in logs and CI.

for batch in progress(batches, desc="teacher logits"): ...
with observed(lambda step, done, total, rate: ...):   # a build task reports its progress
    builder.artifact(steps, name)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from tqdm.auto import tqdm

# (description, steps done, steps in all or None, steps per second or None)
Observer = Callable[[str, float, float | None, float | None], None]
_observer: ContextVar[Observer | None] = ContextVar("tiergate_progress_observer", default=None)


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    interactive = sys.stderr.isatty()
    observer = _observer.get()
    kwargs.setdefault("mininterval", 0.5 if interactive or observer else 10.0)
    kwargs.setdefault("leave", False)
    if observer is not None:
        return _Observed(iterable, observer=observer, file=sys.stderr, dynamic_ncols=interactive, **kwargs)
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=interactive, **kwargs)


@contextmanager
def observed(observer: Observer) -> Iterator[None]:
    """Within the block, every progress bar also tells ``observer`` where it is."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


class _Observed(tqdm):
    def __init__(self, *args: Any, observer: Observer, **kwargs: Any) -> None:
        self._observer = observer
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self._observer(self.desc, self.n, self.total, self.format_dict.get("rate"))
        return shown
