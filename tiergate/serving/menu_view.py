"""The live menu as routing reads it, at one registry version: rebuilt only when the
registry changes, since every request reads it.

    view = MenuView.of(registry)       # view.catalog, view.quality, view.engines, view.local
    view.live(overhead_ms, run_slots)  # what routing predicts each loaded variant's latency from
"""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.profiles.policy import LiveStats, VariantProfile
from tiergate.serving.engines import Engine, RunSlots
from tiergate.serving.registry import MenuRegistry, Variant


@dataclass(frozen=True)
class MenuView:
    version: int
    catalog: list[VariantProfile]  # every variant a request may name, in menu order
    quality: dict[str, float]  # of those, by name
    engines: dict[str, Engine]  # loaded (serving or demoted), by name
    local: tuple[Engine, ...]  # of those, the ones in this process
    reference_quality: float | None

    @classmethod
    def empty(cls) -> MenuView:
        return cls(-1, [], {}, {}, (), None)

    @classmethod
    def of(cls, registry: MenuRegistry) -> MenuView:
        engines, catalog = registry.loaded(), [profile_of(v) for v in registry.known()]
        return cls(
            registry.version,
            catalog,
            {profile.name: profile.quality for profile in catalog},
            engines,
            tuple(engine for engine in engines.values() if engine.local),
            registry.reference_quality(),
        )

    def live(self, overhead_ms: float, run_slots: RunSlots | None) -> dict[str, LiveStats]:
        """Each loaded variant's live figures, with the gateway's own ``overhead_ms``."""
        shared = self.shared_wait_ms(run_slots)
        return {
            name: LiveStats(
                in_flight=engine.stats.in_flight,
                replicas=engine.replicas,
                overhead_ms=overhead_ms + engine.stats.hop_ms,
                slowdown=engine.stats.slowdown,
                shared_wait_ms=shared if engine.local else None,
            )
            for name, engine in self.engines.items()
        }

    def shared_wait_ms(self, run_slots: RunSlots | None) -> float | None:
        """The wait a new run of an in-process variant has for one of the ``run_slots`` they
        share: the run time queued on all of them, spread over the slots. Even with a slot
        free a run waits, since the cores are the event loop's too."""
        if run_slots is None:
            return None
        return sum(engine.queued_work_ms() for engine in self.local) / run_slots.size


def profile_of(variant: Variant) -> VariantProfile:
    """p95 per batch size as timed in the serving process, else the menu's profile; the
    quality routing holds it to (``Variant.routed_quality``)."""
    engine, entry = variant.engine, variant.entry
    latency = engine.latency_p95_ms if engine is not None and variant.loaded else None
    if not latency:
        latency = {int(b): stats.p95 for b, stats in entry.latency_ms.items()}
    return VariantProfile(entry.name, variant.routed_quality, dict(latency), ready=variant.routable)
