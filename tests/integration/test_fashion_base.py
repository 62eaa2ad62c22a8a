"""The shipped Fashion-MNIST base model loads and scores as documented."""

from __future__ import annotations

import numpy as np
import pytest

from tiergate.compression import load_base, load_splits
from tiergate.compression.data import FASHION_MNIST_DIR
from tiergate.compression.train import predict_logits
from tiergate.config import load_config
from tiergate.settings import DEFAULT_CONFIG

pytestmark = [
    pytest.mark.integration,
    pytest.mark.fashion,
    pytest.mark.skipif(
        not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
        reason="Debian package dataset-fashion-mnist is not installed",
    ),
]


def test_shipped_base_scores_above_90_percent_on_a_test_subset():
    """The shipped weights load into the configured ResNet and classify 2,000 official
    test images with at least 90% accuracy (the full test set gives ~93-94%)."""
    config = load_config(DEFAULT_CONFIG)
    splits = load_splits(config.data)
    assert len(splits.test) == 10000
    model = load_base(config.model, splits)
    logits = predict_logits(model, splits.test.x[:2000])
    assert float(np.mean(logits.argmax(1) == splits.test.y[:2000])) >= 0.90
