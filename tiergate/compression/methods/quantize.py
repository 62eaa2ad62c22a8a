"""int8: ONNX Runtime static quantization in QDQ format.

U8S8 (uint8 activations, int8 per-channel weights) is the default because it ran
several times faster than S8S8 on the x86 CPUs measured (figures in BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from tiergate.compression.export import INPUT_NAME
from tiergate.compression.recipes import BuildContext, QuantizeInt8, onnx_step

log = logging.getLogger(__name__)

_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class _Batches(CalibrationDataReader):
    def __init__(self, x: np.ndarray, batch_size: int = 32) -> None:
        self._batches = iter([x[i : i + batch_size] for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}


@onnx_step(QuantizeInt8)
def quantize_int8(config: QuantizeInt8, source: Path, out: Path, ctx: BuildContext) -> None:
    calibration = ctx.splits.calibration.x[: config.calibration_samples]
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), _Batches(calibration),
            quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
            activation_type=QuantType.QUInt8 if config.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=_METHODS[config.calibration_method],
        )  # fmt: skip
    ctx.details["calibration_samples"] = len(calibration)
