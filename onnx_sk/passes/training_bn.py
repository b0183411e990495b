"""TrainingBNPass (``optimize --for-training``): an identity BatchNormalization after each new stage.

The papers train every layer followed by BN. For each replaced conv, every inserted ``Conv``
stage but the last gets ``BatchNormalization(scale=1, B=0, mean=0, var=1−ε, epsilon=ε)``, which
computes ``(x − 0)/sqrt(1 − ε + ε)·1 + 0 = x``: the model's outputs do not change, and a
framework importer turns each into a trainable BN. The last stage writes the original conv's
output, which already feeds whatever followed the dense conv (usually its own BN).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.graph.build import Replacement
from onnx_sk.graph.index import ConstantIndex
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext

EPSILON = 1e-5


def _bn_params(graph: onnx.GraphProto, base: str, channels: int) -> list[str]:
    values = {
        "scale": np.ones(channels, np.float32),
        "bias": np.zeros(channels, np.float32),
        "mean": np.zeros(channels, np.float32),
        "var": np.full(channels, 1.0 - EPSILON, np.float32),
    }
    names = []
    for key, value in values.items():
        name = f"{base}/{key}"
        graph.initializer.append(numpy_helper.from_array(value, name))
        names.append(name)
    return names


def insert_identity_bn(model: onnx.ModelProto, replacements: list[Replacement]) -> int:
    """Insert the BNs in place; returns how many were inserted.

    The stage convs are found in one scan of the graph and every BN is spliced in after its
    conv from the last position to the first, so the cost is linear in the number of nodes."""
    graph = model.graph
    weights = ConstantIndex(graph)
    position = {n.name: i for i, n in enumerate(graph.node)}
    inserts: list[tuple[int, onnx.NodeProto]] = []
    for r in replacements:
        at = sorted(position[name] for name in r.new_nodes if name in position)
        convs = [i for i in at if graph.node[i].op_type == "Conv"]
        for i in convs[:-1]:
            conv = graph.node[i]
            dims = weights.dims(conv.input[1])
            assert dims is not None  # a stage weight is an initializer
            channels = dims[0]
            out = conv.output[0]
            base = f"{conv.name}/bn"
            conv.output[0] = f"{out}/pre_bn"
            bn = helper.make_node(
                "BatchNormalization",
                [conv.output[0], *_bn_params(graph, base, channels)],
                [out],
                name=base,
                epsilon=EPSILON,
            )
            inserts.append((i + 1, bn))
            r.new_nodes.append(base)
    for i, bn in sorted(inserts, key=lambda item: item[0], reverse=True):
        graph.node.insert(i, bn)
    return len(inserts)


class TrainingBNPass:
    name = "training-bn"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        return PassResult(model, modified=insert_identity_bn(model, ctx.replacements) > 0)
