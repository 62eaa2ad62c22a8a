"""The live menu: the one place a serving process keeps its variants, each with a state,
its measured profile and, while it serves, its engine. Routing, the catalog endpoints,
readiness, v2 metadata and the metrics all read it; nothing else keeps a copy.

    registry = MenuRegistry(MenuInfo.of(menu), reference="fp32")
    registry.add(entry, engine)                 # -> serving
    old = registry.replace(new_entry, new_engine)  # new requests go to the new engine
    await drain(old, timeout_s=20)              # the old one answers what it holds, then closes
    registry.retire("lowrank", "removed from the config")

States::

    building -> measuring -> serving <-> demoted
        |            |           |
        +------------+-----------+---> failed / retired

Every change bumps ``version``, so a reader that derives something from the registry
(the routing catalog) recomputes it only when the version moved. The registry is
single-threaded: call it from the event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from tiergate.profiles.menu import Menu, MenuEntry

if TYPE_CHECKING:
    from tiergate.serving.board import BuildProgress
    from tiergate.serving.engines import Engine

log = logging.getLogger(__name__)


class VariantState(StrEnum):
    BUILDING = "building"  # announced; its artifact is being made
    MEASURING = "measuring"  # built; accuracy and latency are being measured
    SERVING = "serving"  # routed to
    DEMOTED = "demoted"  # loaded but left out of routing (pins still reach it)
    FAILED = "failed"  # could not be built, measured or loaded
    RETIRED = "retired"  # removed; its engine drained and closed


ROUTABLE = frozenset({VariantState.SERVING})
LOADED = frozenset({VariantState.SERVING, VariantState.DEMOTED})
ESTIMATE_STEP = 0.001  # a live quality estimate that moves less than this is not news


class RegistryError(Exception):
    """An operation that does not fit the variant's current state."""


@dataclass(frozen=True)
class Variant:
    """One entry of the live menu, as it is now (entries are replaced, never mutated)."""

    name: str
    state: VariantState
    entry: MenuEntry | None = None  # the measured profile; None until measured
    engine: Engine | None = None  # while serving or demoted
    reason: str = ""  # why it is in this state (demoted, failed, retired)
    since: float = 0.0  # the registry's clock at the last change
    # what live traffic shows its quality to be at most, when that is below the menu's
    # figure (``MenuRegistry.estimate``); None: no evidence against the menu's figure
    live_quality: float | None = None

    @property
    def routable(self) -> bool:
        return self.state in ROUTABLE and self.engine is not None and self.engine.available

    @property
    def loaded(self) -> bool:
        return self.state in LOADED

    @property
    def quality(self) -> float | None:
        return None if self.entry is None else self.entry.quality

    @property
    def routed_quality(self) -> float | None:
        """The quality routing holds the variant to: the menu's, or the live estimate below it."""
        if self.entry is None or self.live_quality is None:
            return self.quality
        return min(self.entry.quality, self.live_quality)


@dataclass(frozen=True)
class MenuInfo:
    """What the whole menu shares: the model's name, its classes and input shape."""

    model: str
    dataset: str
    quality_metric: str
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int] | None

    @classmethod
    def of(cls, menu: Menu) -> MenuInfo:
        return cls(
            menu.model, menu.dataset, menu.quality_metric, tuple(menu.classes),
            None if menu.input_shape is None else tuple(menu.input_shape),
        )  # fmt: skip


class MenuRegistry:
    """The live menu, changed only through its named operations."""

    def __init__(self, info: MenuInfo, reference: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.info, self.reference, self.clock = info, reference, clock
        self.version = 0
        self._variants: dict[str, Variant] = {}  # in the order they were first announced
        self.demoted: tuple[str, ...] = ()  # the demoted variants' names, kept at every change
        self.estimated: tuple[tuple[str, float], ...] = ()  # serving ones held to a live estimate
        self.progress: dict[str, BuildProgress] = {}  # each variant's build, as the board last said

    # -- reading ---------------------------------------------------------------------------
    def get(self, name: str) -> Variant | None:
        return self._variants.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._variants

    def __iter__(self) -> Iterator[Variant]:
        return iter(list(self._variants.values()))

    def loaded(self) -> dict[str, Engine]:
        """The engines of every serving or demoted variant, by name."""
        return {v.name: v.engine for v in self._variants.values() if v.state in LOADED and v.engine}

    def measured(self) -> list[Variant]:
        """Variants with a profile that are loaded: what routing chooses from."""
        return [v for v in self._variants.values() if v.entry is not None and v.state in LOADED]

    def known(self) -> list[Variant]:
        """Variants with a profile that have not been retired (a failed one among them): the
        names a request may pin, and what the catalog lists."""
        return [
            v for v in self._variants.values() if v.entry is not None and v.state is not VariantState.RETIRED
        ]

    def reference_quality(self) -> float | None:
        """The reference (fp32) variant's quality: tiers' accuracy drops count from it."""
        variant = self._variants.get(self.reference)
        return None if variant is None else variant.quality

    def ready(self) -> bool:
        """True while the reference variant serves."""
        variant = self._variants.get(self.reference)
        return variant is not None and variant.state in LOADED

    # -- operations ------------------------------------------------------------------------
    def expect(self, name: str, state: VariantState = VariantState.BUILDING) -> None:
        """Announce a variant that is not ready yet (building or measuring)."""
        if state not in (VariantState.BUILDING, VariantState.MEASURING):
            raise RegistryError(f"{name}: expect() takes building or measuring, not {state}")
        current = self._variants.get(name)
        if current is not None and current.state in LOADED:
            raise RegistryError(f"{name} is {current.state}; replace() or retire() it instead")
        self._set(Variant(name, state))

    def add(self, entry: MenuEntry, engine: Engine) -> None:
        """Put a measured, loaded variant on the menu: it serves from now on."""
        current = self._variants.get(entry.name)
        if current is not None and current.state in LOADED:
            raise RegistryError(f"{entry.name} is {current.state} already; use replace()")
        self._set(Variant(entry.name, VariantState.SERVING, entry, engine))
        log.info("variant %s serving", entry.name)

    def replace(self, entry: MenuEntry, engine: Engine) -> Engine | None:
        """Swap a variant's artifact: requests routed from now on reach ``engine``; the old
        engine is returned for the caller to ``drain`` (its requests still complete)."""
        current = self._variants.get(entry.name)
        old = current.engine if current is not None and current.state in LOADED else None
        state = current.state if old is not None else VariantState.SERVING
        self._set(Variant(entry.name, state, entry, engine, current.reason if old else ""))
        log.info("variant %s replaced (now %s)", entry.name, entry.sha256[:12])
        return old if old is not engine else None  # a new profile for the same engine

    def demote(self, name: str, reason: str) -> None:
        """Leave a loaded variant out of routing (a pin still reaches it)."""
        current = self._loaded(name)
        self._set(replace(current, state=VariantState.DEMOTED, reason=reason))
        log.warning("variant %s demoted: %s", name, reason)

    def restore(self, name: str) -> None:
        """Route to a demoted variant again (on its menu figure: the live evidence starts over)."""
        current = self._loaded(name)
        self._set(replace(current, state=VariantState.SERVING, reason="", live_quality=None))
        log.info("variant %s restored", name)

    def estimate(self, name: str, quality: float | None) -> None:
        """What live traffic shows a loaded variant's quality to be at most, when below its
        menu figure (None: nothing against the menu's). Routing holds it to the lower of the
        two, so it leaves the tiers whose floor it no longer meets and stays in the others.
        A change under ``ESTIMATE_STEP`` is not made: the live menu changes only on news."""
        current = self._loaded(name)
        old = current.live_quality
        if old == quality or (old is not None and quality is not None and abs(old - quality) < ESTIMATE_STEP):
            return
        self._set(replace(current, live_quality=quality))
        if quality is not None:
            log.warning("variant %s: live accuracy estimate at most %.2f%%", name, 100 * quality)

    def fail(self, name: str, reason: str, entry: MenuEntry | None = None) -> Engine | None:
        """A variant that could not be built, measured or loaded (``entry``: its profile, when
        it has one); its engine, if it had one, is returned to drain."""
        current = self._variants.get(name)
        old = current.engine if current is not None else None
        entry = entry if entry is not None else (current.entry if current else None)
        self._set(Variant(name, VariantState.FAILED, entry, None, reason))
        log.error("variant %s failed: %s", name, reason)
        return old

    def retire(self, name: str, reason: str) -> Engine | None:
        """Remove a variant from the menu; its engine is returned to drain."""
        if name == self.reference:
            raise RegistryError(f"{name} is the reference variant; it cannot be retired")
        current = self._variants.get(name)
        if current is None:
            raise RegistryError(f"{name}: no such variant")
        self._set(Variant(name, VariantState.RETIRED, current.entry, None, reason))
        log.info("variant %s retired: %s", name, reason)
        return current.engine

    def track(self, progress: Mapping[str, BuildProgress]) -> None:
        """The builds' progress as the board last reported it: shown (catalog, metrics),
        never routed on, so the version does not move."""
        self.progress = dict(progress)

    def changed(self) -> None:
        """Something a reader derives from changed without a state change (a variant was
        re-timed, or a remote variant went down or came back)."""
        self.version += 1

    def _loaded(self, name: str) -> Variant:
        current = self._variants.get(name)
        if current is None or current.state not in LOADED:
            state = "absent" if current is None else current.state
            raise RegistryError(f"{name} is {state}, not serving or demoted")
        return current

    def _set(self, variant: Variant) -> None:
        self._variants[variant.name] = replace(variant, since=self.clock())
        self.demoted = tuple(v.name for v in self._variants.values() if v.state is VariantState.DEMOTED)
        self.estimated = tuple(
            (v.name, v.live_quality) for v in self._variants.values()
            if v.live_quality is not None and v.state is VariantState.SERVING
        )  # fmt: skip
        self.version += 1


async def drain(engine: Engine | None, timeout_s: float, poll_s: float = 0.01) -> bool:
    """Close ``engine`` once the requests it holds are answered (at most ``timeout_s``);
    True when it drained in time."""
    if engine is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while engine.stats.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(poll_s)
    drained = engine.stats.in_flight == 0
    if not drained:
        log.warning("%s: closed with %d requests still in flight", engine.name, engine.stats.in_flight)
    engine.close()
    return drained
