"""Size of an ONNX graph: parameters and FLOPs per image (needs the onnx package, so
serving replicas never import it).

    params, flops = count_params_and_flops(Path("model.onnx"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

_WEIGHTED_OPS = {"Conv", "Gemm", "MatMul", "ConvTranspose"}


def count_params_and_flops(path: Path) -> tuple[int, int]:
    """(parameters, FLOPs per image) from the ONNX graph: the weights of Conv/Gemm/MatMul
    (through DequantizeLinear for int8) and 2 x multiply-adds of those layers."""
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init).shape for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    shapes = {
        value.name: [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        for value in [*graph.value_info, *graph.output]
    }

    def weight_shape(name: str) -> tuple[int, ...] | None:
        if name in initializers:
            return initializers[name]
        node = producers.get(name)
        if node is not None and node.op_type in ("DequantizeLinear", "Identity", "Cast"):
            return weight_shape(node.input[0])
        return None

    params, macs = 0, 0
    for node in graph.node:
        if node.op_type not in _WEIGHTED_OPS:
            continue
        weights = [shape for shape in map(weight_shape, node.input[1:]) if shape is not None]
        params += sum(int(np.prod(shape)) for shape in weights)
        if not weights:
            continue
        kernel = int(np.prod(weights[0]))
        if node.op_type.startswith("Conv"):
            out = shapes.get(node.output[0])
            spatial = int(np.prod(out[2:])) if out else 1
            macs += kernel * spatial  # kernel = Cout * Cin/groups * kh * kw
        else:
            macs += kernel
    return params, 2 * macs
