"""The inference BatchNormalization that follows a conv, as the per-channel scale it applies.

A conv whose only consumer is an inference-mode ``BatchNormalization`` (``training_mode`` 0, one
output) with constant ``scale`` γ and ``var`` computes, through the BN,
``diag(γ / sqrt(var + ε)) · W`` up to a bias, so a weight fit should minimise the error of that
product (``--init approx`` folds the scale into its fit; the graph keeps the BN). A conv that is a
graph output feeds the user directly and gets no scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

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


def fold_into_convs(model: onnx.ModelProto, bn_names: set[str]) -> list[str]:
    """Fold each inference BN named in ``bn_names`` into the Conv before it, in place; returns
    the names of the BNs folded.

    With ``a = γ / sqrt(var + ε)`` per output channel, ``BN(conv(x; W, b)) = conv(x; W', b')``:

        W'[c] = a[c] · W[c]          # [c_out, c_in // group, kh, kw]
        b'[c] = a[c] · (b[c] − mean[c]) + β[c]     (b = 0 without a bias)

    A BN is folded only where that is exact and local: its input comes from a Conv that nothing
    else reads (and is no graph output), it has one output and ``training_mode`` 0, and its
    parameters and the conv's weight and bias are initializers no other node reads. The conv
    takes the BN's output name, so consumers and graph outputs never move; the BN and its
    initializers are removed."""
    graph = model.graph
    index = GraphIndex(graph)
    inits = {t.name: t for t in graph.initializer}
    reads: dict[str, int] = {}
    for n in graph.node:
        for x in n.input:
            reads[x] = reads.get(x, 0) + 1
    folded: list[str] = []
    drop: set[str] = set()
    gone_tensors: set[str] = set()
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or bn.name not in bn_names:
            continue
        conv = index.producer(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        if bn.input[0] in index.outputs or len(index.consumers(bn.input[0])) != 1:
            continue
        a_bn = attrs(bn)
        if a_bn.get("training_mode", 0) or len([o for o in bn.output if o]) != 1:
            continue
        own = [*bn.input[1:5], *conv.input[1:]]
        if any(x not in inits or reads.get(x, 0) != 1 for x in own if x):
            continue
        gamma, beta, mean, var = (
            numpy_helper.to_array(inits[x]).astype(np.float64) for x in bn.input[1:5]
        )
        w_init = inits[conv.input[1]]
        w = numpy_helper.to_array(w_init).astype(np.float64)
        b = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros(w.shape[0])
        )
        a = gamma / np.sqrt(var + float(a_bn.get("epsilon", 1e-5)))
        dtype = numpy_helper.to_array(w_init).dtype
        w_init.CopyFrom(
            numpy_helper.from_array(
                (w * a.reshape(-1, *[1] * (w.ndim - 1))).astype(dtype), w_init.name
            )
        )
        bias = (a * (b - mean) + beta).astype(dtype)
        if len(conv.input) > 2 and conv.input[2]:
            inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias, conv.input[2]))
        else:
            name = _free_name(f"{conv.name or conv.output[0]}/B", inits)
            graph.initializer.append(numpy_helper.from_array(bias, name))
            inits[name] = graph.initializer[-1]
            del conv.input[2:]
            conv.input.append(name)
        gone = conv.output[0]
        conv.output[0] = bn.output[0]
        drop.update(bn.input[1:5])
        gone_tensors.add(gone)
        folded.append(bn.name)
    # removed at the end: a repeated field shifts under references taken before a removal
    _keep(graph.node, lambda n: not (n.op_type == "BatchNormalization" and n.name in folded))
    _keep(graph.initializer, lambda t: t.name not in drop)
    _keep(graph.value_info, lambda vi: vi.name not in gone_tensors)
    return folded


def _keep(field: Any, wanted: Callable[[Any], bool]) -> None:
    """Delete the entries of a repeated field ``wanted`` refuses, last first (no copies)."""
    for i in reversed([i for i, x in enumerate(field) if not wanted(x)]):
        del field[i]


def _free_name(base: str, taken: dict) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
