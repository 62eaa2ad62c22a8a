"""Each compression handler on a tiny digits model: the output runs in ONNX Runtime,
keeps the input shape and class count, and stays within an accuracy budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import accuracy
from tiergate.compression import Distill, Fit, LowRank, PruneChannels, QuantizeInt8
from tiergate.compression.export import export_onnx
from tiergate.compression.methods.lowrank import factorise
from tiergate.compression.recipes import BuildContext, onnx_handler, torch_handler
from tiergate.compression.train import predict_logits
from tiergate.profiles.graph import count_params_and_flops
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


def test_fp32_export_matches_torch_with_dynamic_batch(tiny_base, digits, base_onnx):
    """The fp32 ONNX file gives torch's logits for batch sizes 1 and 37."""
    session = open_session(base_onnx)
    for batch in (1, 37):
        x = digits.test.x[:batch]
        expected = predict_logits(tiny_base, x)
        np.testing.assert_allclose(predict(session, x), expected, atol=1e-4)


def test_int8_runs_in_ort_and_keeps_accuracy(digits, context, base_onnx, tmp_path):
    """Static U8S8 QDQ int8 keeps the class count and loses at most 3 points on digits."""
    out = tmp_path / "int8.onnx"
    onnx_handler(QuantizeInt8())(QuantizeInt8(calibration_samples=64), base_onnx, out, context)
    base_accuracy, _ = _ort_accuracy(base_onnx, digits)
    int8_accuracy, logits = _ort_accuracy(out, digits)
    assert logits.shape == (len(digits.test), 10)
    assert int8_accuracy >= base_accuracy - 0.03
    assert out.stat().st_size < base_onnx.stat().st_size / 2


def _export_and_score(model, digits, tmp_path):
    path = tmp_path / "model.onnx"
    export_onnx(model, digits.test.x[:8], path)
    score, logits = _ort_accuracy(path, digits)
    return path, score, logits


def test_pruning_removes_flops_and_keeps_accuracy(digits, context, base_onnx, tmp_path):
    """Pruning half the channels cuts FLOPs by more than half and loses at most 5 points."""
    recipe = PruneChannels(ratio=0.5, finetune=Fit(epochs=5, lr=0.02, batch_size=64))
    model = torch_handler(recipe)(recipe, context.base, context)
    path, score, logits = _export_and_score(model, digits, tmp_path)
    base_score, _ = _ort_accuracy(base_onnx, digits)
    assert logits.shape[1] == 10 and score >= base_score - 0.05
    assert count_params_and_flops(path)[1] < 0.5 * count_params_and_flops(base_onnx)[1]
    assert context.details["macs_kept"] < 0.5


def test_distilled_student_is_smaller_and_learns(digits, context, base_onnx, tmp_path):
    """A width-8 student distilled from the base is smaller and reaches 85% on digits."""
    recipe = Distill(width=8, fit=Fit(epochs=20, lr=0.1, schedule="onecycle", batch_size=64))
    student = torch_handler(recipe)(recipe, context.base, context)
    path, score, _ = _export_and_score(student, digits, tmp_path)
    assert score >= 0.85
    assert count_params_and_flops(path)[0] < count_params_and_flops(base_onnx)[0] / 2


def test_factorised_conv_reproduces_the_original_at_full_energy():
    """A rank-8 convolution factorised at (nearly) full energy computes what it did."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 3, stride=2, padding=1, bias=True)
    conv.weight.data = (torch.randn(48, 8) @ torch.randn(8, 32 * 9)).reshape(48, 32, 3, 3)
    pair = factorise(conv, energy=0.9999)
    assert pair is not None
    x = torch.randn(2, 32, 9, 9)
    torch.testing.assert_close(pair(x), conv(x), atol=1e-4, rtol=1e-4)


def test_factorise_refuses_when_not_cheaper():
    """A 1x1 convolution, or one whose rank would not save work, is left alone."""
    assert factorise(nn.Conv2d(8, 8, 1), 0.9) is None
    assert factorise(nn.Conv2d(2, 4, 3), 1.0) is None


def test_lowrank_runs_in_ort_and_keeps_accuracy(digits, context, base_onnx, tmp_path):
    """Low-rank factorisation plus a short fine-tune stays within 5 points of the base."""
    recipe = LowRank(energy=0.8, finetune=Fit(epochs=3, lr=0.01, batch_size=64))
    model = torch_handler(recipe)(recipe, context.base, context)
    _, score, logits = _export_and_score(model, digits, tmp_path)
    base_score, _ = _ort_accuracy(base_onnx, digits)
    assert logits.shape[1] == 10 and score >= base_score - 0.05
    assert context.details["factorised_convs"] >= 1


def test_train_base_is_deterministic(digits, tmp_path):
    """Two train-base runs with the same seed write identical weights."""
    from tiergate.compression import ModelConfig, train_base
    from tiergate.compression.source import read_weights

    config = ModelConfig(name="tiny", blocks=(1, 1, 1, 1), width=8, train=Fit(epochs=2, batch_size=64))
    train_base(config, digits, tmp_path / "a.npz")
    train_base(config, digits, tmp_path / "b.npz")
    first, second = read_weights(tmp_path / "a.npz"), read_weights(tmp_path / "b.npz")
    assert first["meta"]["validation_accuracy"] == second["meta"]["validation_accuracy"]
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name
