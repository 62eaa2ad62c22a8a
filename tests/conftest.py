"""Shared fixtures: digits data, a tiny trained base and a tiny digits menu, each built once
per session. The menu lives in a content-addressed cache under ``.tiergate-cache/tests``,
so a second run of the suite reuses it instead of training again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import tiergate
from tiergate.compression import DataConfig, load_splits
from tiergate.compression.models import ResNet

logging.getLogger("torch.onnx").setLevel(logging.ERROR)
DIGITS_CONFIG = Path(tiergate.__file__).parent / "configs" / "digits.yaml"
FIXTURE_CACHE = Path(__file__).resolve().parent.parent / ".tiergate-cache" / "tests"

# the shipped digits config, shrunk to a three-variant menu that builds in seconds
TINY_MENU: dict[str, Any] = {
    "model.name": "digits-tiny",
    "model.width": 16,
    "model.train": {"epochs": 15, "lr": 0.1, "schedule": "onecycle", "batch_size": 64},
    "compress.finetune_samples": 1000,
    "compress.recipes": {
        "int8": {"method": "int8", "calibration_samples": 64},
        "distilled": {
            "method": "distill",
            "width": 4,
            "fit": {"epochs": 3, "lr": 0.1, "schedule": "onecycle", "batch_size": 64},
        },
    },
    "compress.variants": ["fp32", "int8", "distilled"],
    "profile": {"batch_sizes": [1, 8], "budget_s": 0.05, "min_runs": 10, "warmup_runs": 2},
}


def tiny_config(cache_dir: Path = FIXTURE_CACHE, overrides: dict[str, Any] | None = None):
    """The tiny digits menu's config, with dotted ``overrides`` (``{"serving.x": 1}``)."""
    from tiergate.config import load_config

    return load_config(
        DIGITS_CONFIG, {**TINY_MENU, "compress.cache_dir": str(cache_dir), **(overrides or {})}
    )


@pytest.fixture(scope="session")
def digits():
    return load_splits(DataConfig(source="digits", calibration_size=128, validation_size=200))


@pytest.fixture(scope="session")
def tiny_menu():
    """fp32, int8 and distilled of a width-16 ResNet on digits, measured (cached on disk)."""
    from tiergate.build import build_menu

    return build_menu(tiny_config())


@pytest.fixture(scope="session")
def tiny_weights(digits) -> Path:
    """The tiny menu's base: a width-16 ResNet trained on digits (~97% test accuracy), once,
    into the fixture cache."""
    from tiergate.build import ensure_base_weights

    return ensure_base_weights(tiny_config(), digits).model.weights


@pytest.fixture(scope="session")
def tiny_base(tiny_weights, digits) -> ResNet:
    from tiergate.compression import load_base

    return load_base(tiny_config().model.model_copy(update={"weights": tiny_weights}), digits)


def accuracy(logits, labels) -> float:
    return float((logits.argmax(1) == labels).mean())
