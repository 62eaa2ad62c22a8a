from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tiergate.compression import QuantizeInt8
from tiergate.compression.export import export_onnx
from tiergate.compression.methods.quantize import quantize_int8
from tiergate.profiles import count_params_and_flops, measure_latency, open_session, wilson_interval


@given(st.integers(0, 5000), st.integers(1, 5000))
def test_wilson_interval_brackets_the_estimate(correct, total):
    """The 95% interval stays inside [0, 1] and contains the observed proportion."""
    correct = min(correct, total)
    low, high = wilson_interval(correct, total)
    assert 0.0 <= low <= correct / total <= high <= 1.0


def test_wilson_interval_narrows_with_more_samples():
    """Ten times the samples at the same accuracy gives a narrower interval."""
    small, large = wilson_interval(90, 100), wilson_interval(900, 1000)
    assert large[1] - large[0] < small[1] - small[0]


class _Known(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def test_params_and_flops_match_hand_count_for_fp32_and_int8(tmp_path, digits):
    """FLOPs and parameters read from the graph equal the analytic count, int8 included."""
    torch.manual_seed(0)
    path = tmp_path / "known.onnx"
    export_onnx(_Known().eval(), digits.test.x[:4], path)
    expected_params = 4 * 9 + 4 + 256 * 10 + 10
    expected_flops = 2 * (4 * 9 * 64 + 256 * 10)
    assert count_params_and_flops(path) == (expected_params, expected_flops)
    int8 = tmp_path / "known-int8.onnx"
    quantize_int8(QuantizeInt8(calibration_samples=16), path, int8, _context(digits))
    assert count_params_and_flops(int8) == (expected_params, expected_flops)


def _context(digits):
    from tiergate.compression.recipes import BuildContext

    return BuildContext(digits, None, digits.train, lambda: None, None, None, {})


def test_latency_percentiles_are_ordered_and_counted(tmp_path, digits):
    """p50 <= p95 <= p99 at every batch size, from at least min_runs runs."""
    path = tmp_path / "known.onnx"
    export_onnx(_Known().eval(), digits.test.x[:4], path)
    result = measure_latency(open_session(path), digits.test.x[:8], (1, 4), 2, 12, 0.05)
    assert set(result) == {1, 4}
    for stats in result.values():
        assert 0 < stats.p50 <= stats.p95 <= stats.p99 and stats.runs >= 12


def test_session_is_pinned_to_the_requested_threads(tmp_path, digits):
    """open_session records the intra-op thread count it was asked for."""
    path = tmp_path / "known.onnx"
    export_onnx(_Known().eval(), digits.test.x[:4], path)
    session = open_session(path, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    logits = session.run(None, {"input": digits.test.x[:3]})[0]
    assert logits.shape == (3, 10) and np.isfinite(logits).all()
