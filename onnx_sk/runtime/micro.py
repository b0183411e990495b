"""The one-conv models the latency objective times: the dense conv or one SK realisation of it,
alone or between neighbours.

Alone (``micro_model``): ``x → conv → y``. A conv in a network sits between convs that ONNX
Runtime's CPU provider runs in its blocked NCHWc layout; a realisation whose stages cannot run in
that layout (grouped convs whose channels per group are not a multiple of the block, shuffles)
makes ORT convert the tensor out of NCHWc and back around it, and that conversion is paid by the
network, not by the conv timed alone. Alone, it is the other way round: a realisation that runs
in NCHWc pays the conversion of its own input and output, one that does not pays nothing.

In context (``micro_model(…, context=True)``): ``x → [pre] → conv → Relu → post → y``, ``pre`` a 1×1 conv
c_in → c_in with a Relu (left out when c_in < ``MIN_PRE_CHANNELS``: such a conv reads the image),
``post`` a 1×1 conv c_out → c_out: NCHWc neighbours on both sides, as in a CNN. The neighbours'
own time is taken out with the dense conv (``runtime.latency``): a candidate's time in context is
``t(context, candidate) − t(context, dense) + t(dense alone)``. The neighbours' nodes are named
``ctx/…`` so that an int8 form quantizes the conv and not them (``CONTEXT_PREFIX``): an int8
candidate pays the Q/DQ at its borders, as it does next to fp32 convs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.graph.build import conv_attrs, replace_conv
from onnx_sk.graph.shapes import infer_shapes, known_dims
from onnx_sk.maths.designs import Realisation
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.maths.weight_init import INITIALISERS

CONTEXT_PREFIX = "ctx/"
MIN_PRE_CHANNELS = 8


def micro_model(
    spec: ConvSpec,
    in_shape: tuple[int, ...],
    real: Realisation | None,
    seed: int = 0,
    context: bool = False,
) -> onnx.ModelProto:
    """x [N, C, H, W] → the dense conv (``real`` None) or its SK realisation → y; ``context``:
    between the neighbours of the module docstring."""
    rng = np.random.default_rng(seed)
    w_shape = (spec.c_out, spec.c_in // spec.group, *spec.kernel_shape)
    w = (rng.standard_normal(w_shape) * 0.1).astype(np.float32)
    bias = rng.standard_normal(spec.c_out).astype(np.float32) if spec.has_bias else None
    inits = [numpy_helper.from_array(w, "w")] + (
        [numpy_helper.from_array(bias, "b")] if bias is not None else []
    )
    ctx_rng = np.random.default_rng([seed, 1])  # the conv's weights are the same alone
    pre = context and spec.c_in >= MIN_PRE_CHANNELS
    conv_in, conv_out = ("ctx/pre_out" if pre else "x"), ("c" if context else "y")
    nodes = []
    if pre:
        inits.append(_pointwise(ctx_rng, spec.c_in, spec.c_in, "ctx/pre_w"))
        nodes += [
            helper.make_node("Conv", ["x", "ctx/pre_w"], ["ctx/pre"], name="ctx/pre"),
            helper.make_node("Relu", ["ctx/pre"], [conv_in], name="ctx/pre_relu"),
        ]
    attrs = conv_attrs(spec)
    if spec.group > 1:
        attrs["group"] = spec.group
    nodes.append(
        helper.make_node(
            "Conv",
            [conv_in, "w", *(["b"] if bias is not None else [])],
            [conv_out],
            name="conv",
            **attrs,
        )
    )
    if context:
        inits.append(_pointwise(ctx_rng, spec.c_out, spec.c_out, "ctx/post_w"))
        nodes += [
            helper.make_node("Relu", [conv_out], ["ctx/relu"], name="ctx/relu"),
            helper.make_node("Conv", ["ctx/relu", "ctx/post_w"], ["y"], name="ctx/post"),
        ]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if real is None:
        return model
    weights = INITIALISERS["he"](real, w, bias, rng)
    shapes = infer_shapes(model)
    out_shape = shapes.get(conv_out)  # static shuffle targets, as the rewrite writes them
    out_spatial = known_dims(out_shape[2:]) if out_shape and len(out_shape) > 2 else None
    replace_conv(
        model.graph,
        conv_out,
        real,
        weights,
        real.shuffle_impl,
        known_dims(in_shape[2:]),
        out_spatial,
    )
    return model


def _pointwise(rng: np.random.Generator, c_in: int, c_out: int, name: str) -> onnx.TensorProto:
    w = rng.standard_normal((c_out, c_in, 1, 1)) * np.sqrt(2.0 / c_in)
    return numpy_helper.from_array(w.astype(np.float32), name)
