"""In which order ``tiergate serve`` builds what it does not have yet: the menu widens
fastest when cheap variants come first, so variants are taken by their training work,
a composition right after the variant it builds on (``pruned+int8`` after ``pruned``).

    for spec in build_order(parse_variants(names, recipes), finetune_samples): ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiergate.compression import VariantSpec


def training_passes(spec: VariantSpec, finetune_samples: int) -> float:
    """Sample passes of every fine-tune or distillation among ``spec``'s steps (an int8
    calibration or an export costs next to nothing beside them)."""
    passes = 0.0
    for step in spec.steps:
        fit = getattr(step, "finetune", None) or getattr(step, "fit", None)
        if fit is not None:
            samples = finetune_samples if fit.max_samples is None else min(finetune_samples, fit.max_samples)
            passes += fit.epochs * samples
    return passes


def build_order(specs: Sequence[VariantSpec], finetune_samples: int) -> list[VariantSpec]:
    """``specs`` with the reference first, then by training work, fewer steps first on a
    tie (so a composition follows its parent, which it reuses)."""
    return sorted(
        specs,
        key=lambda spec: (spec.recipe != (), training_passes(spec, finetune_samples), len(spec.steps)),
    )


def to_build(
    specs: Sequence[VariantSpec],
    planned: Mapping[str, tuple],
    have: set[str],
    busy: set[str],
    remeasure: bool,
) -> list[str]:
    """After a config change, the variants to build again, in ``specs``' order: those whose
    recipe steps changed from ``planned``, or that the menu neither has nor skipped
    (``have``: added, or added back), or every one when the profile settings changed
    (``remeasure``); not those queued or building (``busy``)."""
    return [
        spec.name
        for spec in specs
        if spec.name not in busy
        and (remeasure or planned.get(spec.name) != spec.steps or spec.name not in have)
    ]


def waits_for(variant: str, busy: set[str]) -> bool:
    """Whether ``variant`` should wait for one of ``busy`` that it builds on (``pruned+int8``
    on ``pruned``): started together, both would train the same parent."""
    return any(variant.startswith(f"{other}+") for other in busy)
