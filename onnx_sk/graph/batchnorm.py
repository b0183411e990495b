"""The inference BatchNormalization that follows a conv, as the per-channel scale it applies.

A conv whose only consumer is an inference-mode ``BatchNormalization`` (``training_mode`` 0, one
output) with constant ``scale`` γ and ``var`` computes, through the BN,
``diag(γ / sqrt(var + ε)) · W`` up to a bias, so a weight fit should minimise the error of that
product (``--init approx`` folds the scale into its fit; the graph keeps the BN). A conv that is a
graph output feeds the user directly and gets no scale.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnx_sk.graph.convs import attrs
from onnx_sk.graph.index import GraphIndex


def bn_scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """conv output name → γ / sqrt(var + ε) of the inference BN that alone consumes it."""
    index = GraphIndex(model.graph)
    consts = index.constants
    scales = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.output[0] in index.outputs:
            continue
        users = index.consumers(node.output[0])
        if len(users) != 1 or users[0].op_type != "BatchNormalization":
            continue
        bn = users[0]
        a = attrs(bn)
        if a.get("training_mode", 0) or len([o for o in bn.output if o]) > 1:
            continue
        gamma, var = consts.get(bn.input[1]), consts.get(bn.input[4])
        if gamma is None or var is None:
            continue
        eps = float(a.get("epsilon", 1e-5))
        scales[node.output[0]] = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scales
