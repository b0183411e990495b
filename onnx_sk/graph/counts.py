"""Parameter counts of a model, read from tensor headers (dims and data types) only.

- ``float_params``: elements of every floating-point initializer and ``Constant`` tensor,
  subgraphs included (the widen budget ``--budget all``);
- ``all_params``: the same plus every 8-bit and 4-bit integer tensor, the weights of quantized
  (QDQ, QLinearConv, ConvInteger) models (the "all parameters" of analyze, bench and the
  optimize report; int32 biases, int64 shapes and indices are not counted);
- ``conv_params``: weight + bias elements of the main graph's ``Conv`` nodes whose weight and
  bias are constants (the papers' budget, ``--budget conv``).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnx_sk.graph.index import ConstantIndex
from onnx_sk.graph.tensors import all_tensors

FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
)


#: the integer types quantized weights are stored in
QUANTIZED_TYPES = frozenset(
    getattr(onnx.TensorProto, t)
    for t in ("INT8", "UINT8", "INT4", "UINT4")
    if hasattr(onnx.TensorProto, t)
)


def _elements(model: onnx.ModelProto, types: frozenset[int]) -> int:
    total = 0
    for tensor in all_tensors(model):
        if tensor.data_type in types:
            total += int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    return total


def float_params(model: onnx.ModelProto) -> int:
    """Elements of every floating-point initializer and Constant tensor (read from dims only)."""
    return _elements(model, FLOAT_TYPES)


def all_params(model: onnx.ModelProto) -> int:
    """Elements of every floating-point and 8-/4-bit integer tensor (read from dims only)."""
    return _elements(model, FLOAT_TYPES | QUANTIZED_TYPES)


def conv_params(model: onnx.ModelProto) -> int:
    """Weight + bias elements of the main graph's Conv nodes (constants only)."""
    consts = ConstantIndex(model.graph, include_inputs=True)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            total += sum(consts.size(t) for t in node.input[1:3] if t in consts)
    return total
