"""Trained weights back into the ONNX model they came from (imports torch).

``weights_into(model, module)`` is the inverse of building :class:`OnnxModule`: every parameter
and buffer (``module.keys`` maps each constant's ONNX name to its attribute) replaces the
initializer, or the ``Constant`` node's ``value``, of that name, in the original element type
and shape. Nothing else changes (nodes, names, I/O signature, opsets, host constants), so the
result runs in ONNX Runtime at every input shape the original did, unlike a traced re-export.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.errors import UserError
from onnx_sk.training.module import OnnxModule


def weights_into(model: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """A copy of ``model`` with ``module``'s current parameters and buffers as its constants."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = {
        name: getattr(module, key).detach().cpu().numpy() for name, key in module.keys.items()
    }
    names = {i.name for i in out.graph.initializer}
    names |= {n.output[0] for n in out.graph.node if n.op_type == "Constant"}
    missing = sorted(set(values) - names)
    if missing:
        raise UserError(f"the model has no constant named {missing[0]!r} (not the module's model?)")
    for init in out.graph.initializer:
        if init.name in values:
            init.CopyFrom(_tensor(values[init.name], init, init.name))
    for n in out.graph.node:
        if n.op_type != "Constant" or n.output[0] not in values:
            continue
        a = n.attribute[0]
        if a.name == "value":
            a.t.CopyFrom(_tensor(values[n.output[0]], a.t, n.output[0]))
        else:  # value_float(s): written back as a float32 ``value`` tensor of the same shape
            value = values[n.output[0]].astype(np.float32)
            del n.attribute[:]
            n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
    return out


def _tensor(value: np.ndarray, like: onnx.TensorProto, name: str) -> onnx.TensorProto:
    """``value`` as a tensor like ``like`` (element type, name); ``name`` is the constant's."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(like.data_type)
    shape = tuple(like.dims)
    if value.shape != shape:
        raise UserError(f"constant {name!r}: shape {value.shape} is not the model's {shape}")
    return numpy_helper.from_array(value.astype(dtype), like.name)
