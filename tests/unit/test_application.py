"""The composition root's Ray Serve options: where each deployment's replicas may run."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config
from tiergate.application import build_application
from tiergate.config import ConfigError


def test_custom_resources_pin_the_ingress_and_each_variant_deployment(tiny_menu):
    """serving.ray.ingress_resources and variant_deployments.<v>.resources reach the
    deployments' ray_actor_options; a variant without them asks for none."""
    config = tiny_config(
        overrides={
            "serving.ray.topology": "per_variant",
            "serving.ray.ingress_resources": {"head_node": 0.01},
            "serving.ray.variant_deployments": {"int8": {"resources": {"worker_node": 0.01}}},
        }
    )
    ingress = build_application(config, tiny_menu)._bound_deployment
    variants = {name: app._bound_deployment for name, app in ingress.init_args[1].items()}
    assert ingress.ray_actor_options["resources"] == {"head_node": 0.01}
    assert variants["int8"].ray_actor_options["resources"] == {"worker_node": 0.01}
    assert variants["fp32"].ray_actor_options["resources"] == {}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("serving.ray.ingress_resources", {"CPU": 1}, "serving.ray.ingress_resources"),
        ("serving.ray.ingress_resources", {"head_node": 0}, "serving.ray.ingress_resources.head_node"),
        ("serving.ray.variant_deployments", {"int8": {"resources": {"GPU": 1}}}, "int8.resources"),
    ],
)
def test_builtin_or_non_positive_resources_are_refused_by_their_path(field, value, named):
    """CPU/GPU/memory have fields of their own, and an amount must be positive; the error names the field."""
    with pytest.raises(ConfigError) as error:
        tiny_config(overrides={field: value})
    assert named in str(error.value)
