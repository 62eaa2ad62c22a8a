from __future__ import annotations

import pytest

from tiergate.compression import (
    Distill,
    LowRank,
    PruneChannels,
    QuantizeInt8,
    default_recipes,
    parse_variants,
)
from tiergate.compression.recipes import _ONNX_HANDLERS, _TORCH_HANDLERS, is_onnx_step


def test_every_recipe_type_has_exactly_one_handler():
    """Each config class is registered once, as a torch step or an ONNX step."""
    for recipe in (QuantizeInt8(), PruneChannels(), Distill(), LowRank()):
        kinds = (type(recipe) in _TORCH_HANDLERS) + (type(recipe) in _ONNX_HANDLERS)
        assert kinds == 1, type(recipe).__name__
    assert is_onnx_step(QuantizeInt8()) and not is_onnx_step(PruneChannels())


def test_composition_names_map_to_steps_in_order():
    """'pruned+int8' is the pruned recipe followed by the int8 recipe; fp32 has no steps."""
    specs = {s.name: s for s in parse_variants(["fp32", "pruned+int8"], default_recipes())}
    assert specs["fp32"].steps == ()
    assert [type(step) for step in specs["pruned+int8"].steps] == [PruneChannels, QuantizeInt8]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["fp32", "sparse"], r"compress.variants\[1\] \('sparse'\): unknown recipe 'sparse'"),
        (["fp32", "int8+pruned"], "must come last"),
        (["fp32", "int8", "int8"], "listed twice"),
        (["int8"], "must include 'fp32'"),
    ],
)
def test_bad_variant_lists_are_refused(names, message):
    """Unknown recipes, int8 before a torch step, duplicates and a missing fp32 are errors."""
    with pytest.raises(ValueError, match=message):
        parse_variants(names, default_recipes())


def test_recipe_configs_forbid_unknown_fields():
    """A typo in a recipe's settings is an error, not a silently ignored key."""
    with pytest.raises(ValueError, match="ration"):
        PruneChannels.model_validate({"method": "prune", "ration": 0.5})
