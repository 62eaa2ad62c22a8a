"""Fixtures and helpers for the compression-method tests (unit and integration): a build
context around the tiny base, its fp32 ONNX file, and scoring a model in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import accuracy
from tiergate.compression.export import export_onnx
from tiergate.compression.recipes import BuildContext
from tiergate.compression.train import predict_logits
from tiergate.profiles.measure import open_session, predict


@pytest.fixture(scope="module")
def context(digits, tiny_base):
    teacher = predict_logits(tiny_base, digits.train.x)
    return BuildContext(
        splits=digits, base=tiny_base, finetune=digits.train, teacher_logits=lambda: teacher,
        input_mean=None, input_std=None, details={},
    )  # fmt: skip


@pytest.fixture(scope="module")
def base_onnx(tiny_base, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    export_onnx(tiny_base, digits.test.x[:8], path)
    return path


def _ort_accuracy(path, digits) -> tuple[float, np.ndarray]:
    logits = predict(open_session(path), digits.test.x)
    return accuracy(logits, digits.test.y), logits


def ort_accuracy(path, digits) -> tuple[float, np.ndarray]:
    logits = predict(open_session(path), digits.test.x)
    return accuracy(logits, digits.test.y), logits


def export_and_score(model, digits, tmp_path):
    path = tmp_path / "model.onnx"
    export_onnx(model, digits.test.x[:8], path)
    score, logits = ort_accuracy(path, digits)
    return path, score, logits
