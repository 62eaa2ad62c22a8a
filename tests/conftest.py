"""Shared fixtures: digits data and a tiny trained base, built once per session."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tiergate.compression import DataConfig, Fit, ModelConfig, load_splits
from tiergate.compression.models import ResNet
from tiergate.compression.train import fit

logging.getLogger("torch.onnx").setLevel(logging.ERROR)
TINY = ModelConfig(name="tiny", blocks=(1, 1, 1, 1), width=16)


@pytest.fixture(scope="session")
def digits():
    return load_splits(DataConfig(source="digits", calibration_size=128, validation_size=200))


@pytest.fixture(scope="session")
def tiny_base(digits) -> ResNet:
    """A width-16 ResNet trained on digits for a few seconds (~97% test accuracy)."""
    torch.manual_seed(0)
    model = ResNet(blocks=TINY.blocks, width=TINY.width, in_channels=1, num_classes=10)
    return fit(model, digits.train, Fit(epochs=15, lr=0.1, schedule="onecycle", batch_size=64))


@pytest.fixture(scope="session")
def tiny_weights(tiny_base, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save({"state_dict": tiny_base.state_dict()}, path)
    return path


def accuracy(logits, labels) -> float:
    return float((logits.argmax(1) == labels).mean())
