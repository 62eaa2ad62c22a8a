"""Cached measurements are covered by a seal bound to their artifact: a record edited in the
cache, or one moved from another artifact, is measured again by the next build (real files,
real ORT, the tiny digits menu)."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import tiny_config
from tests.support.cache import cache_copy, raise_accuracy, records_with_accuracy
from tiergate.build import build_menu

LOGGER = "tiergate.profiles.profiler"


@pytest.fixture
def cache(tiny_menu, tmp_path):
    return cache_copy(tmp_path / "cache")


def _worst(menu):
    return min(menu.variants, key=lambda entry: entry.quality)


def _best(menu):
    return max(menu.variants, key=lambda entry: entry.quality)


def _entry(menu, name):
    return next(entry for entry in menu.variants if entry.name == name)


def test_edited_labels_of_the_worst_variant_are_measured_again(tiny_menu, digits, cache, caplog):
    """Predicted labels edited in the cache to lift the worst variant to >= 0.99 accuracy:
    the next build logs the record's file as stale and the menu keeps the true accuracy."""
    worst = _worst(tiny_menu)
    forged = records_with_accuracy(cache, digits.test.y, worst.accuracy)
    assert forged and worst.accuracy < 0.99
    for path in forged:
        raise_accuracy(path, digits.test.y)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        menu = build_menu(tiny_config(cache))
    assert _entry(menu, worst.name).accuracy == worst.accuracy
    assert any(path.stem in caplog.text for path in forged)


def test_edited_latency_of_the_worst_variant_is_measured_again(tiny_menu, digits, cache, caplog):
    """The worst variant's cached batch-1 p95 cut to 0.0001 ms in its JSON record: the next
    build measures it again instead of routing on the forged figure."""
    worst = _worst(tiny_menu)
    for labels in records_with_accuracy(cache, digits.test.y, worst.accuracy):
        record_file = labels.with_suffix(".json")
        record = json.loads(record_file.read_text())
        record["latency_ms"]["1"]["p95"] = 0.0001
        record_file.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        menu = build_menu(tiny_config(cache))
    assert _entry(menu, worst.name).p95_ms(1) != 0.0001
    assert "stale" in caplog.text


def test_a_record_moved_from_another_artifact_is_measured_again(tiny_menu, digits, cache, caplog):
    """The best variant's record copied over the worst one's (same file names): the next
    build sees it measured another artifact and measures the worst variant again."""
    worst, best = _worst(tiny_menu), _best(tiny_menu)
    source = records_with_accuracy(cache, digits.test.y, best.accuracy)[0]
    for labels in records_with_accuracy(cache, digits.test.y, worst.accuracy):
        labels.write_bytes(source.read_bytes())
        labels.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        menu = build_menu(tiny_config(cache))
    assert _entry(menu, worst.name).accuracy == worst.accuracy
    assert "stale" in caplog.text
