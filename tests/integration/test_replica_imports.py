"""What a live serving replica loads: its process never imports the training stack."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

TRAINING_STACK = {"torch", "torch_pruning", "onnx", "onnxscript", "sklearn", "matplotlib"}


@pytest.fixture(scope="module")
def gateway(digits_config):
    from tests.integration.conftest import deployed

    yield from deployed(digits_config(), "tiergate-imports", "/imports")


def test_the_replica_process_holds_no_training_modules(gateway):
    """sys.modules inside the live ingress replica has ORT but none of torch, torch-pruning,
    onnx, onnxscript, scikit-learn or matplotlib."""
    from ray import serve

    modules = set(
        serve.get_deployment_handle("Ingress", app_name="tiergate-imports").modules.remote().result()
    )
    assert "onnxruntime" in modules and "tiergate" in modules
    assert not modules & TRAINING_STACK, sorted(modules & TRAINING_STACK)
