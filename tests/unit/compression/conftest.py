"""The compression-method fixtures (tests/support/methods.py)."""

from tests.support.methods import base_onnx, context  # noqa: F401
