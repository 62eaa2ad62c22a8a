"""The compression handlers that need no training, on a tiny digits model: the fp32 export,
int8 and the low-rank factorisation itself (the ones that train are integration tests)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.support.methods import ort_accuracy
from tiergate.compression import QuantizeInt8
from tiergate.compression.methods.lowrank import factorise
from tiergate.compression.recipes import onnx_handler
from tiergate.compression.train import predict_logits
from tiergate.profiles.measure import open_session, predict


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
    base_accuracy, _ = ort_accuracy(base_onnx, digits)
    int8_accuracy, logits = ort_accuracy(out, digits)
    assert logits.shape == (len(digits.test), 10)
    assert int8_accuracy >= base_accuracy - 0.03
    assert out.stat().st_size < base_onnx.stat().st_size / 2


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
