"""torch -> ONNX with a dynamic batch axis, checked against torch.

max_abs_diff = export_onnx(model, sample, Path("model.onnx"))
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, sample: np.ndarray, path: Path) -> float:
    """Write ``model`` to ``path`` as ONNX (batch axis dynamic); return the max |logit| gap to torch."""
    model = model.float().eval()
    example = torch.from_numpy(sample[:2].astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters are chatty about internals
        if isinstance(model, torch.jit.ScriptModule):
            # the dynamo exporter cannot trace TorchScript; the legacy one can
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}},
            )  # fmt: skip
        else:
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True, verbose=False,
            )  # fmt: skip
            program.save(str(path), external_data=False)
    return max_logit_gap(model, path, sample)


def max_logit_gap(model: nn.Module, path: Path, sample: np.ndarray) -> float:
    """Max |torch logits - ORT logits| over ``sample`` (a few images)."""
    with torch.no_grad():
        expected = model(torch.from_numpy(sample)).float().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: sample.astype(np.float32)})[0]
    return float(np.abs(expected - got).max())
