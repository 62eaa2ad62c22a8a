"""From a config to a measured menu: load data and base, build variants, profile them,
write ``manifest.json`` and ``pareto.png`` into the cache.

    menu = build_menu(load_config())
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tiergate import settings
from tiergate.compression import (
    Builder,
    ModelError,
    Splits,
    VariantSpec,
    load_base,
    load_splits,
    parse_variants,
    train_base,
)
from tiergate.compression.cache import Artifact, cache_key
from tiergate.compression.integrity import Sealer
from tiergate.compression.source import read_weights
from tiergate.config import AppConfig
from tiergate.profiles import Candidate, Menu, MenuEntry, plot_pareto, profile_variants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MenuFiles:
    manifest: Path
    chart: Path


def menu_files(config: AppConfig) -> MenuFiles:
    folder = config.compress.cache_dir / config.model.name
    return MenuFiles(folder / "manifest.json", folder / "pareto.png")


def build_menu(config: AppConfig, reprofile: bool = False) -> Menu:
    """Build (or load from cache) and measure every configured variant. With
    ``$TIERGATE_MENU_KEY`` set, cached entries must carry its HMAC (else they are built or
    measured again) and the menu written is signed with it."""
    key = settings.menu_key()
    sealer = Sealer(key)
    config, splits = load_inputs(config)
    base = load_base(config.model, splits)
    builder = Builder(config.model, splits, base, config.compress.cache_dir,
                      config.compress.finetune_samples, sealer)  # fmt: skip
    built, skipped = builder.build_all(parse_variants(config.compress.variants, config.compress.recipes))
    candidates = [candidate_of(v.spec, v.artifact) for v in built]
    entries = profile_variants(
        candidates, splits, config.profile, config.compress.cache_dir, reprofile, sealer
    )
    menu = assemble_menu(config, splits, entries, skipped, key)
    files = menu_files(config)
    menu.write(files.manifest)
    plot_pareto(menu, files.chart)
    return menu


def load_inputs(config: AppConfig) -> tuple[AppConfig, Splits]:
    """The data's splits, and the config with base weights (trained first when allowed)."""
    log.info("loading data (%s)", config.data.source)
    splits = load_splits(config.data)
    log.info(
        "data: %d train, %d calibration, %d validation, %d test images of shape %s",
        len(splits.train), len(splits.calibration), len(splits.validation), len(splits.test),
        splits.input_shape,
    )  # fmt: skip
    return ensure_base_weights(config, splits), splits


def candidate_of(spec: VariantSpec, artifact: Artifact) -> Candidate:
    """A built variant as the profiler takes it."""
    return Candidate(
        name=spec.name, recipe=spec.recipe, path=artifact.path, sha256=artifact.sha256,
        build_s=float(artifact.meta["build_s"]), cache_hit=artifact.cache_hit,
        details=dict(artifact.meta.get("details", {})),
    )  # fmt: skip


def assemble_menu(
    config: AppConfig, splits: Splits, entries: list[MenuEntry], skipped: dict[str, str], key: bytes | None
) -> Menu:
    """The menu of ``entries`` (the reference first), signed with ``key`` when there is one."""
    return Menu(
        model=config.model.name, dataset=config.data.source, labelled=splits.labelled,
        quality_metric="accuracy" if splits.labelled else "fidelity", variants=entries,
        skipped=skipped, classes=list(splits.classes), input_shape=splits.input_shape,
    ).signed(key)  # fmt: skip


def ensure_base_weights(config: AppConfig, splits: Splits) -> AppConfig:
    """For a built-in ResNet without weights, train one into the cache when allowed."""
    model = config.model
    if model.source != "resnet" or (model.weights is not None and model.weights.is_file()):
        return config
    if not config.compress.train_base_if_missing:
        return config  # load_base names the missing file and the command that makes it
    key = cache_key({"arch": model.model_dump(exclude={"weights"}), "data": splits.fingerprint})
    path = Path(config.compress.cache_dir) / "base" / f"{key[:32]}.npz"
    if not _readable(path):
        log.info("model.weights missing: training a %s base on %s first", model.name, config.data.source)
        train_base(model, splits, path)
    return config.model_copy(update={"model": model.model_copy(update={"weights": path})})


def _readable(path: Path) -> bool:
    try:
        read_weights(path)
    except ModelError:
        return False
    return True
