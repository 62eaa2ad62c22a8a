"""With TIERGATE_MENU_KEY set, a replica serves only a menu signed with it: at start-up and
in the live manifest watch (in-process replica, real ORT, real files; no Ray)."""

from __future__ import annotations

import asyncio
import logging
import shutil

import pytest

from tests.support.replicas import replica_for
from tiergate.profiles.menu import Menu, MenuSignatureError
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.filewatch import FileWatch
from tiergate.serving.inputs import Preprocess
from tiergate.serving.registry import VariantState
from tiergate.serving.replica import Replica, ReplicaSpec
from tiergate.serving.upkeep import watch_menu

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5), "any": Tier()}
KEY = "test-menu-key-0123456789abcdef"


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("TIERGATE_MENU_KEY", KEY)
    return KEY.encode()


def _worst(menu: Menu) -> str:
    return min(menu.variants, key=lambda entry: entry.quality).name


def _lifted(menu: Menu, name: str, accuracy: float = 0.99) -> Menu:
    """``menu`` with ``name``'s accuracy raised, its signature (if any) kept as it was."""
    variants = [e.model_copy(update={"accuracy": accuracy}) if e.name == name else e for e in menu.variants]
    return menu.model_copy(update={"variants": variants})


def test_an_unsigned_menu_is_refused_at_start(tiny_menu, keyed):
    """Key set, menu unsigned: the replica does not start; the error names the menu's source
    and the variable."""
    with pytest.raises(MenuSignatureError, match="unsigned and TIERGATE_MENU_KEY is set"):
        replica_for(tiny_menu, TIERS)


@pytest.mark.parametrize("damage", ["worst variant's accuracy raised", "signed with another key"])
def test_an_altered_signed_menu_is_refused_at_start(tiny_menu, keyed, damage):
    """Key set, a signed menu whose worst variant's accuracy was then raised to 0.99, or one
    signed with another key: the replica does not start."""
    if damage == "signed with another key":
        menu = tiny_menu.signed(b"another-key-0123456789abcdef")
    else:
        menu = _lifted(tiny_menu.signed(keyed), _worst(tiny_menu))
    with pytest.raises(MenuSignatureError, match="signature does not match TIERGATE_MENU_KEY"):
        replica_for(menu, TIERS)


def test_a_signed_menu_loads_from_its_file_and_through_the_replica_spec(tiny_menu, keyed, tmp_path):
    """Key set: a menu signed with it, written to its manifest, read back and handed to the
    replica as JSON (as the composition root does), starts a replica serving every variant."""
    manifest = tmp_path / "manifest.json"
    tiny_menu.signed(keyed).write(manifest)
    spec = ReplicaSpec(
        serving=ServingConfig(), tiers=TIERS, preprocess=Preprocess(), menu=Menu.read(manifest),
        manifest=str(manifest),
    )  # fmt: skip
    replica = Replica.build(ReplicaSpec.model_validate(spec.model_dump(mode="json")))
    assert set(replica.registry.loaded()) == {entry.name for entry in tiny_menu.variants}


def test_without_a_key_signed_and_unsigned_menus_both_load(tiny_menu, monkeypatch):
    """No key set: a signed menu (even one signed with a key this replica lacks) starts a
    replica, as an unsigned one does."""
    monkeypatch.delenv("TIERGATE_MENU_KEY", raising=False)
    assert replica_for(tiny_menu.signed(b"some-key-0123456789abcdef"), TIERS).registry.ready()
    assert replica_for(tiny_menu, TIERS).registry.ready()


def test_reconcile_refuses_an_unsigned_menu_and_keeps_serving_the_current_one(tiny_menu, keyed):
    """Key set: reconcile() with an unsigned menu that lifts the worst variant raises, and
    the live menu keeps the worst variant's true accuracy."""
    replica = replica_for(tiny_menu.signed(keyed), TIERS)
    worst = _worst(tiny_menu)
    with pytest.raises(MenuSignatureError, match="unsigned"):
        asyncio.run(replica.reconcile(_lifted(tiny_menu, worst)))
    assert replica.registry.get(worst).entry.accuracy == _accuracy(tiny_menu, worst)


def _accuracy(menu: Menu, name: str) -> float | None:
    return next(entry.accuracy for entry in menu.variants if entry.name == name)


async def _until(condition, turns: int = 10_000) -> bool:
    """Yield to the event loop until ``condition()`` holds (a bounded number of turns)."""
    for _ in range(turns):
        if condition():
            return True
        await asyncio.sleep(0)
    return False


def test_the_manifest_watch_refuses_an_altered_menu_then_applies_a_signed_one(
    tiny_menu, keyed, tmp_path, caplog
):
    """Key set: the watched manifest rewritten with the worst variant lifted (signature kept)
    is logged as refused, naming the file and the variable, and the live menu is unchanged;
    a correctly signed re-measurement written next is applied."""
    manifest, worst = tmp_path / "manifest.json", _worst(tiny_menu)
    tiny_menu.signed(keyed).write(manifest)
    replica, watch = replica_for(tiny_menu.signed(keyed), TIERS), FileWatch(manifest)

    async def scenario():
        task = asyncio.create_task(watch_menu(replica.reconcile, watch, interval_s=0))
        _lifted(tiny_menu.signed(keyed), worst).write(manifest)
        refused = await _until(lambda: "not applied" in caplog.text)
        kept = replica.registry.get(worst).entry.accuracy
        _lifted(tiny_menu, worst, accuracy=0.5).signed(keyed).write(manifest)
        applied = await _until(lambda: replica.registry.get(worst).entry.accuracy == 0.5)
        task.cancel()
        return refused, kept, applied

    with caplog.at_level(logging.INFO, logger="tiergate.serving.upkeep"):
        refused, kept, applied = asyncio.run(scenario())
    assert refused and kept == _accuracy(tiny_menu, worst) and applied
    assert str(manifest) in caplog.text and "TIERGATE_MENU_KEY" in caplog.text


def test_an_artifact_swapped_under_a_signed_menu_is_not_loaded(tiny_menu, keyed, tmp_path):
    """Key set, signed menu: int8's ONNX file replaced by distilled's bytes is checked
    against the menu's sha256 (not a file beside it) and not loaded; the others serve."""
    variants = []
    for entry in tiny_menu.variants:
        copy = tmp_path / f"{entry.name}.onnx"
        shutil.copyfile(entry.path, copy)
        variants.append(entry.model_copy(update={"path": str(copy)}))
    menu = tiny_menu.model_copy(update={"variants": variants}).signed(keyed)
    shutil.copyfile(tmp_path / "distilled.onnx", tmp_path / "int8.onnx")
    replica = replica_for(menu, TIERS)
    int8 = replica.registry.get("int8")
    assert int8.state == VariantState.FAILED and "sha256" in int8.reason
    assert set(replica.registry.loaded()) == {"fp32", "distilled"}


def test_a_short_menu_key_is_refused_by_name(monkeypatch):
    """TIERGATE_MENU_KEY shorter than 16 characters is refused with an error naming the
    variable, not used as a weak key."""
    from tiergate import settings

    monkeypatch.setenv("TIERGATE_MENU_KEY", "short")
    with pytest.raises(ValueError, match="TIERGATE_MENU_KEY is 5 characters"):
        settings.menu_key()
