"""Cached measurements are covered by a seal bound to their artifact: a record edited in the
cache, or one moved from another artifact, is measured again by the next build (real files,
real ORT, the tiny digits menu)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.support.cache import cache_copy, raise_accuracy, records_with_accuracy
from tiergate.build import build_menu, menu_files
from tiergate.compression.cache import file_sha256
from tiergate.compression.integrity import Sealer
from tiergate.profiles.menu import Menu

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


KEY = "test-menu-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_cache(tiny_menu, tmp_path_factory):
    """The fixture cache built once with the key set: every entry sealed with its HMAC (the
    artifacts are rebuilt for it, so this takes a while)."""
    cache = cache_copy(tmp_path_factory.mktemp("keyed") / "cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIERGATE_MENU_KEY", KEY)
        build_menu(tiny_config(cache))
    return cache


@pytest.fixture
def keyed(keyed_cache, tmp_path, monkeypatch):
    """A copy of the keyed cache, with the key set for the test."""
    monkeypatch.setenv("TIERGATE_MENU_KEY", KEY)
    return Path(shutil.copytree(keyed_cache, tmp_path / "keyed"))


def _reseal_plain(record_file) -> None:
    """Recompute a record's plain seal after an edit, as anyone without the key can; the
    record's HMAC (if any) is dropped."""
    body = {k: v for k, v in json.loads(record_file.read_text()).items() if k != "seal"}
    labels = record_file.with_suffix(".npy")
    body["labels_sha256"] = hashlib.sha256(labels.read_bytes()).hexdigest()
    record_file.write_text(json.dumps({**body, "seal": Sealer().seal(body)}))


def test_with_a_key_a_plainly_resealed_edit_is_measured_again(digits, keyed, caplog):
    """Key set: the worst variant's labels edited to >= 0.99 accuracy and the record's plain
    sha256 recomputed (no key needed for that) is still refused for its missing HMAC and
    measured again; the built menu is signed with the key, in memory and on disk."""
    worst = _worst(Menu.read(menu_files(tiny_config(keyed)).manifest))
    for labels in records_with_accuracy(keyed, digits.test.y, worst.accuracy):
        raise_accuracy(labels, digits.test.y)
        _reseal_plain(labels.with_suffix(".json"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        menu = build_menu(tiny_config(keyed))
    assert _entry(menu, worst.name).accuracy == worst.accuracy
    assert "no HMAC" in caplog.text
    menu.verify(KEY.encode(), "built")
    Menu.read(menu_files(tiny_config(keyed)).manifest).verify(KEY.encode(), "written")


def test_with_a_key_an_artifact_swapped_with_its_meta_is_rebuilt(keyed, caplog):
    """Key set: int8's model.onnx replaced by distilled's and its meta.json's sha256 and
    plain seal rewritten to match: the build refuses the entry (no HMAC) and rebuilds int8,
    so the menu lists int8's own sha256."""
    first = build_menu(tiny_config(keyed))
    int8, distilled = (Path(_entry(first, name).path) for name in ("int8", "distilled"))
    int8.write_bytes(distilled.read_bytes())
    meta_file = int8.parent / "meta.json"
    meta = {k: v for k, v in json.loads(meta_file.read_text()).items() if k != "seal"}
    meta["sha256"] = file_sha256(int8)
    meta_file.write_text(json.dumps({**meta, "seal": Sealer().seal(meta)}))
    with caplog.at_level(logging.WARNING, logger="tiergate.compression.cache"):
        menu = build_menu(tiny_config(keyed))
    assert _entry(menu, "int8").sha256 == _entry(first, "int8").sha256 != _entry(first, "distilled").sha256
    assert "no HMAC" in caplog.text
