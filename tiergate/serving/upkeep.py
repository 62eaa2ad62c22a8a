"""A serving replica's background loops: hand metrics to Ray every second, reload the API
keys when their file changes, apply a changed menu manifest to the live menu, and follow
the build board.

    loop.create_task(report_metrics(metrics))
    loop.create_task(watch_keys(replica.reload_keys, FileWatch(path), interval_s=5))
    loop.create_task(watch_menu(replica.reconcile, FileWatch(manifest), interval_s=2))
    loop.create_task(follow_board(replica, replica.board, run, interval_s=1))
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

from tiergate.profiles.menu import Menu
from tiergate.serving.boardlink import BoardLink, RunCommand
from tiergate.serving.filewatch import FileWatch
from tiergate.serving.metrics import Metrics

log = logging.getLogger(__name__)


async def report_metrics(metrics: Metrics, every_s: float = 1.0) -> None:
    """Sample the live gauges, then flush what was recorded to Ray in a worker thread."""
    while True:
        await asyncio.sleep(every_s)
        try:
            metrics.sample()
            await asyncio.to_thread(metrics.flush)
        except Exception:  # metrics must never stop serving
            log.exception("metrics flush failed")


async def watch_keys(reload: Callable[[], int], watch: FileWatch, interval_s: float) -> None:
    """Reload the keys whenever the file's content changes. Every replica runs this, so a key
    removed from the file stops working on all of them within ``interval_s``."""
    while True:
        await asyncio.sleep(interval_s)
        if not watch.changed():
            continue
        try:
            reload()
        except Exception as error:  # the watch must outlive any bad file
            log.error("%s changed but did not load: %s", watch.path, error)


async def watch_menu(
    reconcile: Callable[[Menu, str], Awaitable[dict[str, list[str]]]], watch: FileWatch, interval_s: float
) -> None:
    """Apply the menu manifest whenever its content changes (``tiergate compress`` rewrote
    it, say). Every replica runs this, so every replica follows the same file. A manifest
    that does not apply (unreadable, or refused for its signature) is logged and the
    current menu keeps serving."""
    while True:
        await asyncio.sleep(interval_s)
        if not watch.changed():
            continue
        try:
            changes = await reconcile(Menu.read(watch.path), f"menu {watch.path}")
        except Exception as error:  # the watch must outlive any bad manifest
            log.error("%s changed but was not applied, the current menu keeps serving: %s", watch.path, error)
            continue
        log.info("menu %s applied: %s", watch.path, {k: v for k, v in changes.items() if v} or "no change")


async def first_look(replica, link: BoardLink, run: RunCommand, timeout_s: float = 5.0) -> None:
    """One poll of the board before the replica reports ready, so that it does not call a
    menu complete (``/readyz`` with ``ready_when: all``, the catalog's ``build``) that the
    board knows is still building. A board that does not answer in ``timeout_s`` is left
    to ``follow_board``."""
    try:
        await asyncio.wait_for(link.turn(replica.apply_build_status, run), timeout_s)
    except Exception as error:  # start anyway: the next turns will tell
        log.warning("build board: no first look at start-up (%s); following it from now on", error)


async def follow_board(replica, link: BoardLink, run: RunCommand, interval_s: float) -> None:
    """Each interval, once the board exists: apply its build status to ``replica`` and run
    the commands posted to every replica (``run(kind, args)``), answering each. Looks the
    board up again while it does not exist, or after it stopped answering; never stops."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await link.turn(replica.apply_build_status, run)
        except Exception:  # the loop must outlive a board that went away or a bad status
            log.exception("build board: poll failed (looking it up again next time)")


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive after start-up (modules, sessions, Ray's
    and FastAPI's state) to the garbage collector's permanent generation: full collections
    would otherwise scan them again and again, stalling every request meanwhile. Objects
    made later are collected as usual."""
    gc.collect()
    gc.freeze()
