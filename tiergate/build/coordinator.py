"""The live build in a detached Ray actor, for ``serve run tiergate.application:app_builder``
and KubeRay: Serve calls the app builder once and moves on, so the build that goes on
behind the first menu needs a process of its own. ``tiergate serve`` runs the same
``LiveBuild`` in its driver instead, where its progress bar has a terminal.

    menu, config = first_menu(config, config_path, overrides)   # then build_application(config, menu)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tiergate.build.live import LiveBuild
from tiergate.build.menu import menu_files
from tiergate.config import AppConfig
from tiergate.profiles import Menu
from tiergate.serving.board import BOARD_NAMESPACE, board_actor

COORDINATOR_NAME = "tiergate-coordinator"


class Coordinator:
    """One ``LiveBuild``, started once: a second app build (a redeploy) gets the menu as it
    stands, not a second build."""

    def __init__(self, config: AppConfig, config_path: Path | None, overrides: dict[str, Any]) -> None:
        self.live = LiveBuild(config, board_actor(create=True), config_path, overrides)
        self.started = False
        self._lock = threading.Lock()  # the actor runs calls concurrently: one first menu at a time

    def first_menu(self) -> tuple[dict, dict]:
        """The menu to serve now and the config it was built with (paths made absolute,
        base weights found), both as JSON."""
        with self._lock:
            if not self.started:
                menu = self.live.first_menu()
                self.live.start()
                self.started = True
            else:
                menu = Menu.read(menu_files(self.live.config).manifest)
        return menu.model_dump(mode="json"), self.live.config.model_dump(mode="json")

    def pending(self) -> list[str]:
        return self.live.pending()


def first_menu(
    config: AppConfig, config_path: Path | None = None, overrides: dict[str, Any] | None = None
) -> tuple[Menu, AppConfig]:
    """The menu to serve now, from the cluster's coordinator (started here when there is
    none), which goes on building the rest after this returns."""
    import ray

    options = {"name": COORDINATOR_NAME, "namespace": BOARD_NAMESPACE, "lifetime": "detached",
               "get_if_exists": True, "num_cpus": 0, "max_concurrency": 4}  # fmt: skip
    actor = ray.remote(Coordinator).options(**options).remote(config, config_path, overrides or {})
    menu, built_with = ray.get(actor.first_menu.remote())
    return Menu.model_validate(menu), AppConfig.model_validate(built_with)
