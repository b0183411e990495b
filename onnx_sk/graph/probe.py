"""A probe model for one replaced conv: its inserted SK subgraph, alone, beside a dense ``Conv``
whose kernel is the dense equivalent of the stages as written, on some output channels.

Used where the whole-model dense twin is too large to build (widen, he mode: at s ≈ 5 the
widened dense kernels hold ~30× the parameters of the model written). The subgraph is taken from
the result (:func:`onnx_sk.graph.checks.inserted_subgraph`: the nodes that replaced the conv and
their weights); the stage weights are read back from it, and the reference conv gets the rows
``rows`` of their dense equivalent (:func:`onnx_sk.maths.designs.dense_rows`, never the whole
kernel), the same rows of the bias, and the dense conv's attributes
(:func:`onnx_sk.graph.build.conv_attrs`, ``group`` 1). The designs are linear, so on any input
the subgraph's output channels ``rows`` equal the reference's output up to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.graph.build import Replacement, conv_attrs
from onnx_sk.graph.checks import inserted_subgraph
from onnx_sk.graph.index import ConstantIndex
from onnx_sk.maths.designs import dense_rows

#: the marker in the names of the probe's reference tensors
PROBE_TAG = "::dense_rows::"


def probe_model(
    result: onnx.ModelProto,
    consts: ConstantIndex,
    r: Replacement,
    rows: np.ndarray,
    in_spatial: tuple[int, ...],
) -> tuple[onnx.ModelProto, str]:
    """The probe of ``r`` on input ``[1, c_in, *in_spatial]``; returns it and the name of the
    reference output (the subgraph's output is ``r.output``). ``consts`` indexes ``result``."""
    sub = inserted_subgraph(result, r)
    stage_convs = [n for n in sub.node if n.op_type == "Conv"]
    if len(stage_convs) != len(r.real.stages):
        raise ValueError(
            f"conv {r.name!r}: {len(stage_convs)} Conv nodes written for "
            f"{len(r.real.stages)} stages"
        )
    weights = []
    for n in stage_convs:
        w = consts.get(n.input[1])
        if w is None:
            raise ValueError(f"conv {r.name!r}: stage weight {n.input[1]!r} is not a constant")
        weights.append(w)
    spec = r.real.spec
    kernel = dense_rows(r.real.stages, weights, rows).astype(np.float32)  # [R, c_in, kh, kw]
    ref_w, ref_y = f"{r.output}{PROBE_TAG}weight", f"{r.output}{PROBE_TAG}out"
    inputs, inits = [r.input, ref_w], [numpy_helper.from_array(kernel, ref_w)]
    last = stage_convs[-1]
    have = {t.name for t in sub.initializer}
    if len(last.input) > 2 and last.input[2]:
        bias = consts.get(last.input[2])
        if bias is None:
            raise ValueError(f"conv {r.name!r}: bias {last.input[2]!r} is not a constant")
        if last.input[2] not in have:  # a Constant node's output: give the subgraph its value
            sub.initializer.append(numpy_helper.from_array(bias, last.input[2]))
        ref_b = f"{r.output}{PROBE_TAG}bias"
        inputs.append(ref_b)
        inits.append(numpy_helper.from_array(np.asarray(bias)[rows], ref_b))
    attrs = conv_attrs(spec)
    attrs["group"] = 1  # the dense equivalent holds every group's block
    sub.node.append(helper.make_node("Conv", inputs, [ref_y], f"{r.name}{PROBE_TAG}conv", **attrs))
    sub.initializer.extend(inits)
    del sub.input[:]
    sub.input.append(
        helper.make_tensor_value_info(r.input, TensorProto.FLOAT, [1, spec.c_in, *in_spatial])
    )
    sub.output.append(helper.make_tensor_value_info(ref_y, TensorProto.FLOAT, None))
    model = helper.make_model(sub, opset_imports=list(result.opset_import))
    model.ir_version = result.ir_version
    return model, ref_y
