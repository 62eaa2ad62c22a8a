from __future__ import annotations

import pytest

from tiergate.config import ConfigError, load_config
from tiergate.settings import DEFAULT_CONFIG


def _write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_default_config_is_valid():
    """The default config in the repo loads, with all seven variants."""
    config = load_config(DEFAULT_CONFIG)
    assert config.version == 1 and len(config.compress.variants) == 7
    assert config.model.weights is not None and config.model.weights.is_absolute()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("version: 1\nmodel: {widht: 3}\n", "model.widht"),
        ("version: 2\n", "version"),
        (
            "version: 1\ncompress: {recipes: {pruned: {method: prune, ratio: 1.5}}}\n",
            "compress.recipes.pruned.prune.ratio",
        ),
        ("version: 1\ndata: {source: npz}\n", "data"),
        ("version: 1\nprofile: {threads: 0}\n", "profile.threads"),
    ],
)
def test_invalid_field_is_named_in_the_error(tmp_path, text, field):
    """A wrong field fails at load time and the message carries its path."""
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert field in str(error.value)


def test_unknown_variant_fails_at_load(tmp_path):
    """A variant naming an undefined recipe fails when the config is loaded."""
    with pytest.raises(ConfigError, match="unknown recipe 'tiny'"):
        load_config(_write(tmp_path, "version: 1\ncompress: {variants: [fp32, tiny+int8]}\n"))


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    """model.weights relative to the config file becomes an absolute path beside it."""
    config = load_config(_write(tmp_path, "version: 1\nmodel: {weights: w/base.pt}\n"))
    assert config.model.weights == tmp_path / "w" / "base.pt"


def test_unreadable_and_non_mapping_configs(tmp_path):
    """A missing file and a YAML list are both refused with the path in the message."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_overrides_are_copied_not_shared(tmp_path):
    """A dict given as an override is copied into the config: a deeper override in the same
    call does not change the caller's dict, so the next config made from it is unchanged."""
    path = _write(tmp_path, "version: 1\n")
    shared = {"serving.routing": {"default_tier": "fast"}}
    load_config(path, {**shared, "serving.routing.failure_cooldown_s": 9.0})
    assert shared == {"serving.routing": {"default_tier": "fast"}}
    assert load_config(path, shared).serving.routing.failure_cooldown_s == 5.0
