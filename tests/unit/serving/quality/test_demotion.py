"""Demotion and re-admission on live fidelity: the rule (pure), and the live menu's state
changes it makes (a registry with fake engines, a fake clock)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support.engines import FakeClock
from tiergate.profiles.menu import LatencyStats, MenuEntry
from tiergate.serving.config import ShadowConfig
from tiergate.serving.quality import DEMOTED, READMITTED, Demoter, Fidelity, LiveFidelity, Offline
from tiergate.serving.quality.demotion import may_readmit, why_demote
from tiergate.serving.registry import MenuInfo, MenuRegistry, VariantState

CONFIG = ShadowConfig()  # min_samples 100, demote_z 3.29, readmit_samples 200
INT8 = Offline(fidelity=0.95, samples=10_000, quality=0.92)  # offline interval from about 0.9455


def _entry(name: str, fidelity: float = 0.95, sha256: str = "0" * 64) -> MenuEntry:
    stats = LatencyStats(p50=1.0, p95=1.0, p99=1.0, runs=10)
    return MenuEntry(
        name=name, recipe=[name], path=f"{name}.onnx", sha256=sha256, accuracy=0.92, accuracy_ci95=None,
        fidelity=fidelity, test_samples=10_000, latency_ms={"1": stats}, threads=1, throughput_per_s=1.0,
        speedup=1.0, size_bytes=1, params=1, flops=1, build_s=0.0, cache_hit=True,
    )  # fmt: skip


def _engine(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        available=True,
        closed=False,
        stats=SimpleNamespace(in_flight=0),
        latency_p95_ms=None,
        local=False,
    )


@pytest.fixture
def menu() -> tuple[MenuRegistry, Demoter, list]:
    registry = MenuRegistry(MenuInfo("m", "d", "accuracy", (), None), reference="fp32", clock=FakeClock())
    registry.add(_entry("fp32", fidelity=1.0), _engine("fp32"))
    registry.add(_entry("int8"), _engine("int8"))
    changes = []
    live = LiveFidelity(CONFIG.window_samples, CONFIG.window_s, FakeClock())
    demoter = Demoter(registry, live, CONFIG, floor=lambda: 0.89, on_change=lambda *c: changes.append(c))
    return registry, demoter, changes


def test_no_verdict_before_min_samples():
    """Below min_samples images nothing is demoted, however bad the agreement."""
    assert why_demote(Fidelity(99, 0), INT8, None, CONFIG) is None
    assert why_demote(Fidelity(100, 0), INT8, None, CONFIG) is not None


def test_demoted_when_the_live_upper_bound_is_below_the_offline_lower_bound():
    """90/100 agreeing: upper bound (z 3.29) about 0.96, above 0.9455: stays; 85/100: about
    0.93, below: demoted, and the reason names both bounds."""
    assert why_demote(Fidelity(100, 90), INT8, None, CONFIG) is None
    reason = why_demote(Fidelity(100, 85), INT8, None, CONFIG)
    assert "85.0% on 100 shadowed images" in reason and "from 94.6%" in reason


def test_demoted_when_the_accuracy_estimate_falls_below_every_tier_floor():
    """An offline interval too wide to rule on (30 test images, from 0.787) leaves the floor
    rule: 170/200 agreeing has an upper bound of 0.915, so 0.92 - (0.95 - 0.915) = 0.885 is
    below a loosest floor of 0.90 (and above 0.88)."""
    wide = Offline(fidelity=0.95, samples=30, quality=0.92)
    figures = Fidelity(200, 170)
    assert why_demote(figures, wide, None, CONFIG) is None
    assert why_demote(figures, wide, 0.88, CONFIG) is None
    assert "below every tier's floor" in why_demote(figures, wide, 0.90, CONFIG)


def test_readmitted_only_after_readmit_samples_at_the_offline_lower_bound():
    """Re-admission needs readmit_samples images and a live rate at or above 0.9455."""
    assert not may_readmit(Fidelity(199, 199), INT8, None, CONFIG)
    assert not may_readmit(Fidelity(200, 188), INT8, None, CONFIG)  # 94.0%
    assert may_readmit(Fidelity(200, 190), INT8, None, CONFIG)  # 95.0%


def test_a_broken_variant_is_demoted_then_readmitted_once_it_agrees_again(menu):
    """100 disagreeing images demote int8 (state, reason, on_change); its window restarts, and
    200 agreeing images re-admit it."""
    registry, demoter, changes = menu
    assert demoter.observe("int8", agreed=0, compared=99) is None
    assert demoter.observe("int8", agreed=0, compared=1) == DEMOTED
    int8 = registry.get("int8")
    assert int8.state is VariantState.DEMOTED and "below its offline" in int8.reason
    assert demoter.live.of("int8") == Fidelity(0, 0)
    assert demoter.observe("int8", agreed=199, compared=199) is None
    assert demoter.observe("int8", agreed=1, compared=1) == READMITTED
    assert registry.get("int8").state is VariantState.SERVING
    assert changes == [("int8", DEMOTED), ("int8", READMITTED)]


def test_a_new_artifact_starts_a_new_window(menu):
    """Comparisons of a replaced artifact (another sha256) are forgotten when the new one's come in."""
    registry, demoter, _ = menu
    demoter.observe("int8", agreed=0, compared=60)
    registry.replace(_entry("int8", sha256="1" * 64), _engine("int8"))
    assert demoter.observe("int8", agreed=0, compared=60) is None
    assert demoter.live.of("int8") == Fidelity(60, 0)


def test_the_reference_and_variants_demoted_elsewhere_are_left_alone(menu):
    """fp32 is never demoted; a variant demoted by someone else is not re-admitted here."""
    registry, demoter, _ = menu
    assert demoter.observe("fp32", agreed=0, compared=500) is None
    registry.demote("int8", "by an operator")
    assert demoter.observe("int8", agreed=500, compared=500) is None
    assert registry.get("int8").state is VariantState.DEMOTED


def test_a_variant_below_a_strict_floor_leaves_that_tier_only(menu):
    """1,000 images at 92.5% agreement: upper bound about 0.948 is inside the offline interval
    (from 0.9455) and the estimate 0.92 - (0.95 - 0.948), about 0.918, is above the loosest
    floor (0.89): int8 stays serving, held to the estimate. A tier with a 0.919 floor then
    routes past it; one with a 0.90 floor still picks it."""
    from tiergate.profiles.policy import Constraints, choose
    from tiergate.serving.menu_view import MenuView

    registry, demoter, changes = menu
    demoter.observe("int8", agreed=925, compared=1000)
    int8 = registry.get("int8")
    assert int8.state is VariantState.SERVING and changes == []
    assert 0.917 < int8.live_quality < 0.919 and int8.routed_quality == int8.live_quality
    catalog = [p for p in MenuView.of(registry).catalog if p.name == "int8"]
    assert choose(catalog, Constraints(min_accuracy=0.919)).variant is None
    assert choose(catalog, Constraints(min_accuracy=0.90)).variant == "int8"


def test_a_variant_agreeing_as_offline_is_held_to_its_menu_figure(menu):
    """1,000 images at 95% agreement leave nothing against the menu's figure: no estimate."""
    registry, demoter, _ = menu
    demoter.observe("int8", agreed=950, compared=1000)
    assert registry.get("int8").live_quality is None and registry.estimated == ()
