"""From a config to a measured menu, all at once (``tiergate compress``) or while serving
(``tiergate serve``: ``tiergate.build.live``, one Ray task per variant).

    menu = build_menu(load_config())

Names resolve lazily: ``tiergate.build.plan`` alone does not import torch.
"""

from tiergate._lazy import lazy_exports

_EXPORTS = dict.fromkeys(
    ["MenuFiles", "assemble_menu", "build_menu", "candidate_of", "ensure_base_weights", "load_inputs",
     "menu_files"],
    ".menu",
)  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
