"""The live menu's states and operations (pure logic: fake engines, a fake clock)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tiergate.profiles.menu import LatencyStats, MenuEntry
from tiergate.serving.registry import MenuInfo, MenuRegistry, RegistryError, VariantState, drain

INFO = MenuInfo("m", "digits", "accuracy", ("a", "b"), (1, 8, 8))


def _entry(name: str, accuracy: float = 0.9) -> MenuEntry:
    stats = LatencyStats(p50=1.0, p95=1.0, p99=1.0, runs=10)
    return MenuEntry(
        name=name, recipe=[name], path=f"{name}.onnx", sha256="0" * 64, accuracy=accuracy,
        accuracy_ci95=None, fidelity=1.0, test_samples=10, latency_ms={"1": stats}, threads=1,
        throughput_per_s=1.0, speedup=1.0, size_bytes=1, params=1, flops=1, build_s=0.0, cache_hit=True,
    )  # fmt: skip


class FakeEngine:
    def __init__(self, name: str, in_flight: int = 0) -> None:
        self.name, self.available, self.closed = name, True, False
        self.stats = SimpleNamespace(in_flight=in_flight)

    def close(self) -> None:
        self.closed = True


def _registry() -> tuple[MenuRegistry, list[float]]:
    now = [100.0]
    registry = MenuRegistry(INFO, reference="fp32", clock=lambda: now[0])
    registry.add(_entry("fp32"), FakeEngine("fp32"))
    return registry, now


def test_a_variant_moves_from_building_to_serving_and_is_routable():
    """expect() announces a variant that is not routable; add() makes it serve."""
    registry, _ = _registry()
    registry.expect("int8")
    assert registry.get("int8").state == VariantState.BUILDING and not registry.get("int8").routable
    assert "int8" not in registry.loaded()
    registry.add(_entry("int8"), FakeEngine("int8"))
    assert registry.get("int8").state == VariantState.SERVING and registry.get("int8").routable
    assert [v.name for v in registry.measured()] == ["fp32", "int8"]


def test_every_change_bumps_the_version_and_stamps_the_clock():
    """Readers can cache on version; each entry records when it last changed."""
    registry, now = _registry()
    version = registry.version
    now[0] = 105.0
    registry.add(_entry("int8"), FakeEngine("int8"))
    registry.changed()
    assert registry.version == version + 2 and registry.get("int8").since == 105.0


def test_replace_returns_the_old_engine_and_keeps_the_state():
    """replace() swaps the engine (a demoted variant stays demoted) and hands back the old one."""
    registry, _ = _registry()
    old, new = FakeEngine("int8"), FakeEngine("int8")
    registry.add(_entry("int8"), old)
    registry.demote("int8", "live fidelity fell")
    assert registry.replace(_entry("int8", 0.95), new) is old
    assert registry.get("int8").engine is new and registry.get("int8").state == VariantState.DEMOTED
    assert registry.get("int8").quality == 0.95


def test_demoted_variants_leave_routing_and_come_back():
    """demote() keeps the engine loaded but not routable; restore() routes it again."""
    registry, _ = _registry()
    registry.add(_entry("int8"), FakeEngine("int8"))
    registry.demote("int8", "accuracy")
    assert not registry.get("int8").routable and "int8" in registry.loaded()
    registry.restore("int8")
    assert registry.get("int8").routable


def test_retire_and_fail_hand_back_engines_and_the_reference_stays():
    """retire()/fail() unload a variant; the reference variant cannot be retired."""
    registry, _ = _registry()
    engine = FakeEngine("int8")
    registry.add(_entry("int8"), engine)
    assert registry.retire("int8", "removed") is engine
    assert registry.get("int8").state == VariantState.RETIRED and "int8" not in registry.loaded()
    with pytest.raises(RegistryError, match="reference"):
        registry.retire("fp32", "no")
    registry.expect("pruned")
    assert registry.fail("pruned", "export failed") is None
    assert registry.get("pruned").reason == "export failed"


def test_operations_refuse_the_wrong_state():
    """add() on a loaded variant, demote() on an unloaded one and expect(serving) are refused."""
    registry, _ = _registry()
    with pytest.raises(RegistryError, match="replace"):
        registry.add(_entry("fp32"), FakeEngine("fp32"))
    with pytest.raises(RegistryError, match="absent"):
        registry.demote("int8", "x")
    with pytest.raises(RegistryError):
        registry.expect("int8", VariantState.SERVING)


def test_readiness_follows_the_reference_variant():
    """The menu is ready while its reference variant is loaded, and not before."""
    registry = MenuRegistry(INFO, reference="fp32")
    registry.add(_entry("int8"), FakeEngine("int8"))
    assert not registry.ready() and registry.reference_quality() is None
    registry.add(_entry("fp32", 0.93), FakeEngine("fp32"))
    assert registry.ready() and registry.reference_quality() == 0.93


def test_drain_waits_for_in_flight_requests_then_closes():
    """drain() closes an engine only once it holds no requests (or at its timeout)."""

    async def scenario():
        engine = FakeEngine("int8", in_flight=1)
        waiter = asyncio.create_task(drain(engine, timeout_s=5, poll_s=0.001))
        await asyncio.sleep(0.01)
        assert not engine.closed
        engine.stats.in_flight = 0
        assert await waiter and engine.closed
        stuck = FakeEngine("fp32", in_flight=2)
        assert not await drain(stuck, timeout_s=0.01, poll_s=0.001) and stuck.closed

    asyncio.run(scenario())
