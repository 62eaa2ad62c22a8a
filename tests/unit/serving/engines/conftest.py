"""A tiny exported model for the engine tests."""

from __future__ import annotations

import pytest

from tiergate.compression.export import export_onnx


@pytest.fixture(scope="module")
def model_file(tiny_base, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "model.onnx"
    export_onnx(tiny_base, digits.test.x[:4], path)
    return path
