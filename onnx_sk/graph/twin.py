"""The dense twin: the original graph with each replaced conv's kernel swapped for the dense
equivalent of its SK design (:func:`onnx_sk.maths.designs.dense_equivalent`).

The designs are linear, so the optimized model must compute what the twin computes, up to float32
rounding: that is the numeric check of every rewrite (:mod:`onnx_sk.runtime.verify`). The twin
is given to ONNX Runtime either as initializer overrides of the original file (``overrides``: no
copy of the model in Python) or, when a replaced kernel is not an initializer read by that conv
alone, by swapping the kernels in place and restoring them afterwards (``swapped_kernels``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_sk.graph.build import Replacement
from onnx_sk.graph.index import GraphIndex
from onnx_sk.maths.designs import dense_equivalent

#: the marker in the names of the temporary twin kernels
TWIN_TAG = "::dense_twin::"


def twin_kernel(r: Replacement) -> np.ndarray:
    """The dense-equivalent kernel of a replacement, in its weights' dtype."""
    return dense_equivalent(r.real.stages, r.weights).astype(r.weights[0].dtype)


def _conv_nodes(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {n.output[0]: n for n in graph.node if n.op_type == "Conv"}


def overrides(original: onnx.ModelProto, replacements: list[Replacement]) -> dict | None:
    """Initializer overrides that turn the original into its dense twin, or None when a replaced
    kernel is not an initializer read by that conv alone (then the twin is built in place)."""
    index = GraphIndex(original.graph)
    inits = {i.name for i in original.graph.initializer}
    nodes = _conv_nodes(original.graph)
    out = {}
    for r in replacements:
        weight = nodes[r.output].input[1]
        if weight not in inits or index.readers(weight) != 1:
            return None
        out[weight] = twin_kernel(r)
    return out


@contextmanager
def swapped_kernels(
    model: onnx.ModelProto, replacements: list[Replacement]
) -> Iterator[onnx.ModelProto]:
    """``model`` turned into its dense twin in place for the duration of the block, then restored."""
    nodes = _conv_nodes(model.graph)
    undo = []
    for r in replacements:
        node = nodes[r.output]
        name = f"{node.input[1]}{TWIN_TAG}{r.output}"
        model.graph.initializer.append(numpy_helper.from_array(twin_kernel(r), name))
        undo.append((node, node.input[1]))
        node.input[1] = name
    try:
        yield model
    finally:
        for node, weight in undo:
            node.input[1] = weight
        inits = model.graph.initializer
        for k in reversed(range(len(inits))):
            if TWIN_TAG in inits[k].name:
                del inits[k]
