"""ONNX Runtime dynamic quantization (int8 per-channel symmetric weights, dynamic uint8 activations) of one graph."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..quiet import python_output_captured
from ..recipes import Recipe


def mean_matmuls(model: Any) -> list[str]:
    """MatMul nodes whose B is a constant [D, 1] column of 1/D: the shared layers' means over the last dim.
    Dynamic quantization would feed them 8-bit activations (norm statistics), so they stay float."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            b = numpy_helper.to_array(inits[node.input[1]])
            if b.ndim == 2 and b.shape[1] == 1 and np.all(b == np.float32(1.0 / b.shape[0])):
                names.append(node.name)
    return names


def quantize(model: Any, recipe: Recipe, method: str) -> Any:
    """The quantized ModelProto (weights embedded) of one embedded graph; ONNX Runtime's exceptions pass through
    (the ONNX target names the method). `model` is consumed: its weights move to a temporary file first, so the
    float graph is not held twice (graphs past protobuf's 2 GiB go through files as well, both ways)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = mean_matmuls(model)
    with tempfile.TemporaryDirectory(prefix="elasticdit-onnx-") as tmp:
        float_graph, out = Path(tmp) / "float.onnx", Path(tmp) / f"{method}.onnx"
        onnx.save_model(model, str(float_graph), save_as_external_data=True, location="float.data")
        with python_output_captured():
            quantize_dynamic(
                float_graph,
                out,
                per_channel=True,
                reduce_range=True,  # 7-bit weights: x86 without VNNI saturates u8 x s8 pair sums in int16
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                use_external_data_format=True,
            )
        return onnx.load(str(out))
