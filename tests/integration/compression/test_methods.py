"""The compression handlers that train (pruning and low-rank fine-tunes, distillation, the
base itself) on a tiny digits model: the output runs in ONNX Runtime and stays within an
accuracy budget. Minutes of CPU, so not unit tests."""

from __future__ import annotations

import torch

from tests.support.methods import export_and_score, ort_accuracy
from tiergate.compression import Distill, Fit, LowRank, PruneChannels
from tiergate.compression.recipes import torch_handler
from tiergate.profiles.graph import count_params_and_flops


def test_pruning_removes_flops_and_keeps_accuracy(digits, context, base_onnx, tmp_path):
    """Pruning half the channels cuts FLOPs by more than half and loses at most 5 points."""
    recipe = PruneChannels(ratio=0.5, finetune=Fit(epochs=5, lr=0.02, batch_size=64))
    model = torch_handler(recipe)(recipe, context.base, context)
    path, score, logits = export_and_score(model, digits, tmp_path)
    base_score, _ = ort_accuracy(base_onnx, digits)
    assert logits.shape[1] == 10 and score >= base_score - 0.05
    assert count_params_and_flops(path)[1] < 0.5 * count_params_and_flops(base_onnx)[1]
    assert context.details["macs_kept"] < 0.5


def test_distilled_student_is_smaller_and_learns(digits, context, base_onnx, tmp_path):
    """A width-8 student distilled from the base is smaller and reaches 85% on digits."""
    recipe = Distill(width=8, fit=Fit(epochs=20, lr=0.1, schedule="onecycle", batch_size=64))
    student = torch_handler(recipe)(recipe, context.base, context)
    path, score, _ = export_and_score(student, digits, tmp_path)
    assert score >= 0.85
    assert count_params_and_flops(path)[0] < count_params_and_flops(base_onnx)[0] / 2


def test_lowrank_runs_in_ort_and_keeps_accuracy(digits, context, base_onnx, tmp_path):
    """Low-rank factorisation plus a short fine-tune stays within 5 points of the base."""
    recipe = LowRank(energy=0.8, finetune=Fit(epochs=3, lr=0.01, batch_size=64))
    model = torch_handler(recipe)(recipe, context.base, context)
    _, score, logits = export_and_score(model, digits, tmp_path)
    base_score, _ = ort_accuracy(base_onnx, digits)
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
