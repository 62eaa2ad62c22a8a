"""The artifact cache and the builder around it: hits, misses, corruption, skips."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tiergate.compression import Builder, CompressionError, ModelConfig, QuantizeInt8, parse_variants
from tiergate.compression.recipes import LowRank

RECIPES = {"int8": QuantizeInt8(calibration_samples=32), "lowrank": LowRank(energy=0.5)}


def _builder(tmp_path, digits, base, weights=None):
    config = ModelConfig(name="tiny", blocks=(1, 1, 1, 1), width=16, weights=weights)
    return Builder(config, digits, base, cache_dir=tmp_path, finetune_samples=256)


def _build(builder, names, recipes=RECIPES):
    return builder.build_all(parse_variants(names, recipes))


def test_second_build_is_all_cache_hits(tmp_path, digits, tiny_base, tiny_weights):
    """Building the same variants twice rebuilds nothing the second time."""
    first, _ = _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32", "int8"])
    second, _ = _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32", "int8"])
    assert [v.artifact.cache_hit for v in first] == [False, False]
    assert [v.artifact.cache_hit for v in second] == [True, True]
    assert [v.artifact.sha256 for v in first] == [v.artifact.sha256 for v in second]


def test_changed_recipe_settings_miss_the_cache(tmp_path, digits, tiny_base, tiny_weights):
    """Another calibration size is another artifact, not a stale hit."""
    _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32", "int8"])
    other = {"int8": QuantizeInt8(calibration_samples=16)}
    built, _ = _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32", "int8"], other)
    assert [v.artifact.cache_hit for v in built] == [True, False]


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_corrupt_artifact_is_rebuilt_not_loaded(tmp_path, digits, tiny_base, tiny_weights, damage, caplog):
    """A truncated, altered or unreadable artifact is logged and rebuilt with the right hash."""
    built, _ = _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32", "int8"])
    int8 = built[1].artifact
    if damage == "truncate":
        int8.path.write_bytes(int8.path.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(int8.path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        int8.path.write_bytes(bytes(data))
    else:
        (int8.path.parent / "meta.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="tiergate.compression.cache"):
        rebuilt, _ = _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32", "int8"])
    assert "corrupt" in caplog.text
    assert [v.artifact.cache_hit for v in rebuilt] == [True, False]
    assert rebuilt[1].artifact.sha256 == int8.sha256  # quantization is deterministic


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_method_that_cannot_apply_is_skipped_and_the_rest_built(tmp_path, digits, caplog):
    """lowrank on a model without convolutions is skipped with a logged reason, with its
    compositions; fp32 and int8 are still built."""
    with caplog.at_level(logging.ERROR, logger="tiergate.compression.pipeline"):
        built, skipped = _build(_builder(tmp_path, digits, _Mlp().eval()),
                                ["fp32", "lowrank", "lowrank+int8", "int8"])  # fmt: skip
    assert [v.spec.name for v in built] == ["fp32", "int8"]
    assert set(skipped) == {"lowrank", "lowrank+int8"}
    assert "no convolution gets cheaper" in skipped["lowrank"]
    assert "variant lowrank skipped" in caplog.text


class _Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.flatten(1)[:, :10]
        return logits if x.sum() > 0 else -logits  # data-dependent branch: torch.export refuses it


def test_fp32_failure_is_fatal_with_a_clear_error(tmp_path, digits):
    """If the base itself cannot be exported, the build stops with a CompressionError."""
    with pytest.raises(CompressionError, match="fp32: cannot export the base model"):
        _build(_builder(tmp_path, digits, _Unexportable().eval()), ["fp32", "int8"])


def test_cache_key_follows_weight_contents_not_their_path(tmp_path, digits, tiny_base, tiny_weights):
    """The same weights under another path hit the cache; different weights miss it."""
    _build(_builder(tmp_path, digits, tiny_base, tiny_weights), ["fp32"])
    moved = tmp_path / "elsewhere" / "same.pt"
    moved.parent.mkdir()
    moved.write_bytes(tiny_weights.read_bytes())
    built, _ = _build(_builder(tmp_path, digits, tiny_base, moved), ["fp32"])
    assert built[0].artifact.cache_hit
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {k: v + 1 for k, v in tiny_base.state_dict().items()}}, other)
    built, _ = _build(_builder(tmp_path, digits, tiny_base, other), ["fp32"])
    assert not built[0].artifact.cache_hit
