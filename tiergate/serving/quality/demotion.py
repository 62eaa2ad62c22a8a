"""Automatic demotion and re-admission on live fidelity.

    demoter = Demoter(registry, live, serving.shadow, floor=lambda: 0.9)
    demoter.observe("int8", agreed=0, compared=1)   # "demoted", "readmitted" or None

A serving variant other than the reference is demoted (``MenuRegistry.demote``: routing
leaves it out, pins still reach it) once it has ``min_samples`` images compared in its
window and either

- the upper bound of its live fidelity's Wilson interval at ``demote_z`` is below the lower
  bound of its offline fidelity's 95% interval (the menu's fidelity to fp32, on its
  ``test_samples`` images), or
- its live accuracy estimate, at that same upper bound, is below the loosest accuracy floor
  of the tiers (then it qualifies for none); the estimate is its offline accuracy less the
  fidelity it lost: each image more that disagrees with fp32 counts as one more wrong.

Short of that, a serving variant whose estimate is below its offline accuracy is held to
the estimate in routing (``MenuRegistry.estimate``, ``live_estimate``): it leaves the tiers
whose floor it no longer meets and stays in the others.

A demoted variant keeps being compared (shadow sampling probes it), its window restarted at
the demotion, and it is re-admitted once ``readmit_samples`` images were compared and its
live fidelity (the rate itself) is at least the offline lower bound, with its estimate at or
above the floor. Only variants demoted here are re-admitted here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tiergate.profiles.measure import wilson_interval
from tiergate.profiles.menu import MenuEntry
from tiergate.serving.config import ShadowConfig
from tiergate.serving.quality.fidelity import Fidelity, LiveFidelity
from tiergate.serving.registry import MenuRegistry, VariantState

log = logging.getLogger(__name__)

DEMOTED, READMITTED = "demoted", "readmitted"


@dataclass(frozen=True)
class Offline:
    """What the menu measured of a variant: fidelity to fp32 on ``samples`` test images, and
    the quality it is routed on (accuracy, or fidelity for an unlabelled menu)."""

    fidelity: float
    samples: int
    quality: float

    @classmethod
    def of(cls, entry: MenuEntry) -> Offline:
        return cls(entry.fidelity, entry.test_samples, entry.quality)

    def low(self) -> float:
        """Lower bound of the offline fidelity's Wilson 95% interval."""
        return wilson_interval(round(self.fidelity * self.samples), self.samples)[0]

    def accuracy_at(self, fidelity: float) -> float:
        """The accuracy estimate at a live ``fidelity``: each image lost to disagreement is one wrong more."""
        return self.quality - (self.fidelity - fidelity)


def why_demote(live: Fidelity, offline: Offline, floor: float | None, config: ShadowConfig) -> str | None:
    """Why a serving variant with these figures leaves routing; None while it may stay."""
    if live.compared < config.min_samples:
        return None
    high = live.interval(config.demote_z)[1]
    seen = f"live fidelity {live.rate:.1%} on {live.compared} shadowed images (at most {high:.1%})"
    if high < offline.low():
        return f"{seen} is below its offline fidelity's 95% interval (from {offline.low():.1%})"
    if floor is not None and offline.quality >= floor and offline.accuracy_at(high) < floor:
        return (
            f"{seen} puts its accuracy at most at {offline.accuracy_at(high):.1%}, below every tier's "
            f"floor (the loosest: {floor:.1%})"
        )
    return None


def live_estimate(live: Fidelity, offline: Offline, config: ShadowConfig) -> float | None:
    """The accuracy a serving variant is held to in routing: its estimate at the upper bound
    of its live fidelity (at ``demote_z``), when that is below its offline figure; None
    before ``min_samples`` or while live traffic shows nothing against the offline figure.
    With it, a variant leaves the tiers whose floor it no longer meets and stays in the
    others (below the loosest floor it is demoted instead: ``why_demote``)."""
    if live.compared < config.min_samples:
        return None
    estimate = offline.accuracy_at(live.interval(config.demote_z)[1])
    return estimate if estimate < offline.quality else None


def may_readmit(live: Fidelity, offline: Offline, floor: float | None, config: ShadowConfig) -> bool:
    """Whether a variant demoted on its live fidelity has earned its way back."""
    if live.compared < config.readmit_samples:
        return False
    rate = live.rate
    return rate >= offline.low() and (floor is None or offline.accuracy_at(rate) >= floor)


class Demoter:
    """Applies ``why_demote`` and ``may_readmit`` to the live menu; ``floor()`` gives the
    loosest tier floor now (None: no tier has one); ``on_change(variant, DEMOTED or
    READMITTED)`` is told of each change (metrics)."""

    def __init__(
        self,
        registry: MenuRegistry,
        live: LiveFidelity,
        config: ShadowConfig,
        floor: Callable[[], float | None] = lambda: None,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.registry, self.live, self.config = registry, live, config
        self.floor, self.on_change = floor, on_change
        self.demoted: set[str] = set()  # demoted here, so re-admitted here
        self._artifacts: dict[str, str] = {}  # the sha256 each variant's window was counted on

    def observe(self, name: str, agreed: int, compared: int) -> str | None:
        """Count one comparison of ``name`` and ``check`` it. A variant whose artifact changed
        (swapped in while serving or demoted) starts a new window: the old file's answers
        say nothing of the new one."""
        variant = self.registry.get(name)
        sha256 = variant.entry.sha256 if variant is not None and variant.entry is not None else None
        if sha256 is not None and self._artifacts.setdefault(name, sha256) != sha256:
            self._artifacts[name] = sha256
            self.live.reset(name)
        return self.check(name, self.live.add(name, agreed, compared))

    def check(self, name: str, figures: Fidelity) -> str | None:
        """Demote or re-admit ``name`` on its latest ``figures``; what changed, if anything."""
        variant = self.registry.get(name)
        if variant is None or variant.entry is None or name == self.registry.reference:
            return None
        offline = Offline.of(variant.entry)
        if variant.state is VariantState.SERVING:
            reason = why_demote(figures, offline, self.floor(), self.config)
            if reason is None:
                self.registry.estimate(name, live_estimate(figures, offline, self.config))
                return None
            self.registry.demote(name, reason)
            self.demoted.add(name)
            self.live.reset(name)  # re-admission counts from here
            return self._changed(name, DEMOTED)
        if variant.state is VariantState.DEMOTED and name in self.demoted:
            if not may_readmit(figures, offline, self.floor(), self.config):
                return None
            self.registry.restore(name)
            self.demoted.discard(name)
            log.info("variant %s re-admitted: live fidelity %.1f%% on %d images", name, 100 * figures.rate,
                     figures.compared)  # fmt: skip
            return self._changed(name, READMITTED)
        return None

    def _changed(self, name: str, change: str) -> str:
        if self.on_change is not None:
            self.on_change(name, change)
        return change
