"""One YAML file -> one validated config tree.

    config = load_config(Path("tiergate/configs/default.yaml"))
    config.compress.variants  # ['fp32', 'int8', ...]

Unknown fields are refused and every error names its field path, e.g.
``compress.recipes.pruned.ratio: Input should be less than 1``. Relative paths
are resolved against the config file's folder.

Each model records which of its fields the file or an override gave (pydantic's
``model_fields_set``), as opposed to those left at their defaults:
``config.serving.is_set("ray.ingress")``. A Ray flag that follows from a field set so wins
over an inherited environment variable (tiergate.serving.ray_env).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tiergate import settings
from tiergate.compression import DataConfig, ModelConfig, Recipe, default_recipes, parse_variants
from tiergate.profiles import ProfileConfig
from tiergate.profiles.tiers import Tier, default_tiers
from tiergate.serving.config import ServingConfig

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = ["fp32", "int8", "pruned", "distilled", "lowrank", "pruned+int8", "distilled+int8"]


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message names the field."""


class LiveBuildConfig(BaseModel):
    """How ``tiergate serve`` builds the variants it does not have yet while it serves: one
    Ray task per variant, niced and on a CPU budget that leaves a core to the replicas."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="serve fp32 first and add the rest as built (false: build all first)"
    )
    max_parallel: int | None = Field(
        None, ge=1, description="build tasks at once; default: the cluster's CPUs less one, at least 1"
    )
    task_cpus: float = Field(1.0, gt=0, description="Ray CPUs each build task declares")
    threads: int | None = Field(
        None, ge=1, description="torch and ORT threads per task (default: the node's cores)"
    )
    niceness: int = Field(19, ge=0, le=19, description="OS priority of build tasks (serving runs at 0 to 10)")
    quick_eval_samples: int = Field(
        2000, ge=0, description="cold fp32 first serves on this many test images' accuracy (0: all)"
    )


class CompressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_dir: Path = Path(".tiergate-cache")
    finetune_samples: int = Field(20000, ge=1, description="training images shared by fine-tunes")
    train_base_if_missing: bool = Field(
        False, description="resnet without weights: train it on first use (small data only)"
    )
    recipes: dict[str, Recipe] = Field(default_factory=default_recipes)
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    live: LiveBuildConfig = Field(default_factory=LiveBuildConfig)

    @field_validator("recipes")
    @classmethod
    def _recipe_names(cls, recipes: dict[str, Recipe]) -> dict[str, Recipe]:
        for name in recipes:
            if name == "fp32" or "+" in name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"recipe name {name!r} must be alphanumeric (with - or _), not 'fp32'")
        return recipes

    @model_validator(mode="after")
    def _variants_parse(self) -> CompressConfig:
        parse_variants(self.variants, self.recipes)
        return self


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    compress: CompressConfig = CompressConfig()
    profile: ProfileConfig = ProfileConfig()
    tiers: dict[str, Tier] = Field(default_factory=default_tiers)
    serving: ServingConfig = ServingConfig()

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, tiers: dict[str, Tier]) -> dict[str, Tier]:
        if not tiers:
            raise ValueError("at least one tier is required")
        for name in tiers:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"tier name {name!r} must be alphanumeric (with - or _)")
        return tiers


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AppConfig:
    """Read, merge ``overrides`` (dotted keys like ``model.weights``), resolve paths, validate.
    Values taken from tiergate's environment variables are logged (they are documented
    overrides: $TIERGATE_CONFIG when no path is given, $TIERGATE_CACHE_DIR over the file)."""
    if path is None and settings.config_path() != settings.DEFAULT_CONFIG:
        log.info("config: %s (from $TIERGATE_CONFIG)", settings.config_path())
    path = Path(path or settings.config_path())
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"config: cannot read {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config: {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping at the top level")
    _resolve_paths(raw, path.parent.resolve())
    for dotted, value in (overrides or {}).items():
        *parents, field = dotted.split(".")
        block = raw
        for name in parents:
            if not isinstance(block.setdefault(name, {}), dict):
                raise ConfigError(f"{dotted}: {name} is not a section")
            block = block[name]
        block[field] = copy.deepcopy(value)  # never share the caller's mutable values
    cache_dir = settings.cache_dir_override()
    if cache_dir is not None:
        raw.setdefault("compress", {})["cache_dir"] = str(cache_dir)
        log.info("compress.cache_dir: %s (from $TIERGATE_CACHE_DIR)", cache_dir)
    try:
        return AppConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"config {path}:\n{_describe(error)}") from None


_PATH_FIELDS = {"model": ("path", "weights"), "data": ("path",), "compress": ("cache_dir",)}


def _resolve_paths(raw: dict[str, Any], root: Path) -> None:
    for section, fields in _PATH_FIELDS.items():
        block = raw.get(section)
        if not isinstance(block, dict):
            continue
        for field in fields:
            value = block.get(field)
            if isinstance(value, str) and not Path(value).is_absolute() and section != "compress":
                block[field] = str(root / value)
    auth = (raw.get("serving") or {}).get("auth")
    if (
        isinstance(auth, dict)
        and isinstance(auth.get("keys_file"), str)
        and not Path(auth["keys_file"]).is_absolute()
    ):
        auth["keys_file"] = str(root / auth["keys_file"])


def _describe(error: ValidationError) -> str:
    lines = []
    for issue in error.errors():
        where = ".".join(str(part) for part in issue["loc"] if not str(part).startswith("function-"))
        lines.append(f"  {where or '(top level)'}: {issue['msg']}")
    return "\n".join(lines)
