"""From a config to a measured menu, all at once (``tiergate compress``) or while serving
(``tiergate serve``: ``tiergate.build.live``, one Ray task per variant).

    menu = build_menu(load_config())
"""

from tiergate.build.menu import (
    MenuFiles,
    assemble_menu,
    build_menu,
    candidate_of,
    ensure_base_weights,
    load_inputs,
    menu_files,
)

__all__ = [
    "MenuFiles", "assemble_menu", "build_menu", "candidate_of", "ensure_base_weights", "load_inputs",
    "menu_files",
]  # fmt: skip
