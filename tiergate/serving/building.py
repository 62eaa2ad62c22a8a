"""The replica's side of a menu that is still building: the board's build status applied to
the live menu, and what routing, pins, the catalog and readiness say about the variants
not serving yet.

    apply_build_status(registry, {"int8": BuildProgress("int8", BuildState.BUILDING, percent=40)})
    refuse_unready_pin(registry, "int8")     # Unavailable (503, Retry-After): int8 is building
    explained(registry, decision, pin=None)  # a fallback's why, with "the menu is still building"
    build_summary(registry)                  # {"pending": [...], "failed": [...], "complete": ...}

A variant not loaded that the board reports queued or building is announced as building
(measuring as measuring); one whose build failed is marked failed with the reason. A
loaded variant being rebuilt keeps serving its old artifact: its progress is only shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tiergate.profiles.policy import Decision, Reason
from tiergate.serving.board import BuildProgress, BuildState
from tiergate.serving.errors import Unavailable, Unsatisfiable
from tiergate.serving.registry import MenuRegistry, VariantState

PENDING = frozenset({VariantState.BUILDING, VariantState.MEASURING})
ANNOUNCED_AS = {
    BuildState.QUEUED: VariantState.BUILDING,
    BuildState.BUILDING: VariantState.BUILDING,
    BuildState.MEASURING: VariantState.MEASURING,
}
DEFAULT_RETRY_S = 10  # Retry-After for a pin of a building variant whose build gives no ETA
MAX_RETRY_S = 300


def apply_build_status(registry: MenuRegistry, status: Mapping[str, BuildProgress]) -> None:
    """Show ``status`` on the live menu: announce what is being built, fail what could not
    be, retire what the board stopped building before it served. The registry changes
    (and its version moves) only when a variant's state does."""
    before = registry.progress
    registry.track(status)
    for name, progress in status.items():
        _apply_one(registry, name, progress)
    for name in before.keys() - status.keys():
        variant = registry.get(name)
        if variant is not None and variant.entry is None and variant.state in PENDING | {VariantState.FAILED}:
            registry.retire(name, "no longer built (removed from the config)")


def _apply_one(registry: MenuRegistry, name: str, progress: BuildProgress) -> None:
    variant = registry.get(name)
    if variant is not None and variant.loaded:
        return  # keeps serving its current artifact while a new one is built
    wanted = ANNOUNCED_AS.get(progress.state)
    if wanted is not None and (variant is None or variant.state is not wanted):
        registry.expect(name, wanted)
    elif progress.state is BuildState.FAILED:
        reason = f"build failed: {progress.reason or 'no reason given'}"
        if variant is None or variant.state is not VariantState.FAILED or variant.reason != reason:
            registry.fail(name, reason)


def pending(registry: MenuRegistry) -> list[str]:
    """The variants announced but not serving yet (being built or measured), in menu order."""
    return [variant.name for variant in registry if variant.state in PENDING]


def still_building(registry: MenuRegistry) -> str:
    """The note a decision gets while variants are pending; "" when none is."""
    names = pending(registry)
    if not names:
        return ""
    return f"; the menu is still building ({len(names)} variants not serving yet: {', '.join(names)})"


def explained(registry: MenuRegistry, decision: Decision, pin: str | None) -> str:
    """``decision``'s why, plus what the menu still building means for it: a fallback or a
    refusal may be only because the variant that fits is not serving yet; a pinned
    variant that is not ready or demoted says why (its build failed, say); a tier's
    decision names the variants demoted (left out of routing) and those held to a live
    accuracy estimate (left out of the tiers whose floor it is below)."""
    why = decision.explanation
    if pin is not None:
        variant = registry.get(pin)
        shown = decision.reason == Reason.REJECTED or pin in registry.demoted
        if shown and variant is not None and variant.reason:
            return f"{why} ({variant.state}: {variant.reason})"
        return why
    if registry.demoted:
        why += f"; left out of routing, demoted: {', '.join(registry.demoted)}"
    if registry.estimated:
        held = ", ".join(f"{name} at most {quality:.1%}" for name, quality in registry.estimated)
        why += f"; held to live accuracy estimates below their menu figures: {held}"
    if decision.reason in (Reason.FALLBACK, Reason.REJECTED):
        return why + still_building(registry)
    return why


def demotion_warning(registry: MenuRegistry, served: str) -> str | None:
    """The answer's warning when a demoted variant served it (a pin reaches one): why it was demoted."""
    if served not in registry.demoted:
        return None
    variant = registry.get(served)
    return f"{served} is demoted ({variant.reason}); its answers may be less accurate than its menu figures"


def refuse_unready_pin(registry: MenuRegistry, name: str | None) -> None:
    """A pin of a variant the menu announced but has no profile of: Unavailable (503 with
    Retry-After) while it is built or measured, the not-ready refusal with the reason once
    its build failed. Nothing for a name the menu does not know (the caller's 404)."""
    variant = registry.get(name) if name is not None else None
    if variant is None or variant.entry is not None:
        return
    progress = registry.progress.get(variant.name)
    if variant.state in PENDING:
        raise Unavailable(
            f"variant: {variant.name} is {variant.state} ({describe(progress)}); not serving yet",
            field="variant", retry_after_s=retry_after_s(progress), state=variant.state.value,
            percent=progress.percent if progress is not None else None,
        )  # fmt: skip
    if variant.state is VariantState.FAILED:
        raise Unsatisfiable(
            f"variant: {variant.name} is not ready ({variant.reason})", field="variant", reason="rejected"
        )


def describe(progress: BuildProgress | None) -> str:
    """A build's progress in words: "40% built, step fine-tune, about 120 s left"."""
    if progress is None:
        return "no progress reported yet"
    parts = [f"{progress.percent:.0f}% built" if progress.percent is not None else "progress unknown"]
    if progress.step:
        parts.append(f"step {progress.step}")
    if progress.eta_s is not None:
        parts.append(f"about {progress.eta_s:.0f} s left")
    return ", ".join(parts)


def retry_after_s(progress: BuildProgress | None) -> int:
    """When to ask again for a variant being built: its ETA (1 s to 5 min), else 10 s."""
    if progress is None or progress.eta_s is None:
        return DEFAULT_RETRY_S
    return int(min(MAX_RETRY_S, max(1, math.ceil(progress.eta_s))))


def build_row(registry: MenuRegistry, name: str) -> dict | None:
    """A catalog row's ``build``: the variant's latest build progress, None when none was reported."""
    progress = registry.progress.get(name)
    if progress is None:
        return None
    return {
        "state": progress.state.value, "step": progress.step, "percent": progress.percent,
        "eta_s": progress.eta_s, "reason": progress.reason or None,
    }  # fmt: skip


def complete(registry: MenuRegistry) -> bool:
    """Nothing pending, and every variant with a profile (the manifest's) loaded. A loaded
    variant being rebuilt counts as done: it serves meanwhile."""
    return not pending(registry) and all(variant.loaded for variant in registry.known())


def build_summary(registry: MenuRegistry) -> dict:
    """The catalog's top-level ``build``: what is pending, what failed, and whether the menu is complete."""
    failed = [variant.name for variant in registry if variant.state is VariantState.FAILED]
    return {"pending": pending(registry), "failed": failed, "complete": complete(registry)}


def require_complete(registry: MenuRegistry) -> None:
    """Unavailable (503) until the menu is ``complete`` (``serving.http.ready_when: all``)."""
    if complete(registry):
        return
    waiting = pending(registry) or [v.name for v in registry.known() if not v.loaded]
    raise Unavailable(
        f"not ready: serving.http.ready_when is all and {', '.join(waiting)} not serving yet",
        retry_after_s=5,
    )
