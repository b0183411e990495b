"""Constants in one form: initializers read directly, whatever form the exporter chose.

Exporters spell a constant weight several ways. The TorchScript exporter deduplicates identical
tensors (e.g. the zero biases of freshly folded BatchNorms) and feeds the copies through
``Identity`` nodes, chains included; Paddle2ONNX and some tf2onnx graphs hold weights in
``Constant`` nodes. Every later step (analyze, reduce, widen) reads constants as initializers,
so :func:`canonical_constants` rewrites the main graph, in place, to that one form:

- a numeric ``Constant`` node (``value``, ``value_float(s)``, ``value_int(s)``) becomes an
  initializer of the same name (IR version 4 and later: older IRs want initializers listed as
  graph inputs, and are left as they are); a ``Constant`` whose output is a graph output stays;
- an ``Identity`` whose input is a constant (directly or through a chain of such Identities)
  is bypassed: every main-graph reader reads the constant itself. The Identity stays only when
  its output is a graph output or is read inside a subgraph (it then reads the constant too).

The result computes exactly what the input computes. A tensor read by several nodes stays
shared: the rewrites give each node what it needs (reduce writes each replaced conv its own
stage weights and drops the original once nothing reads it; widen writes a new initializer for
a constant that has other readers).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from onnx_sk.graph.index import constant_node_value, subgraph_reads

#: the first IR version whose initializers need not be graph inputs
_FREE_INITIALIZERS_IR = 4


def _numeric_constant(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and len(node.output) == 1 and bool(node.output[0])


def needs_canonical(graph: onnx.GraphProto) -> bool:
    """Whether :func:`canonical_constants` would change ``graph`` (cheap: no tensor converted)."""
    outputs = {o.name for o in graph.output}
    if any(_numeric_constant(n) and n.output[0] not in outputs for n in graph.node):
        return True
    root = _identity_roots(graph)
    if not root:
        return False
    needed = outputs | subgraph_reads(graph)
    read = {t for n in graph.node for t in n.input}
    return any(t in read or t not in needed for t in root) or any(
        n.op_type == "Identity" and n.input[0] in root for n in graph.node
    )


def _as_initializer(node: onnx.NodeProto, name: str) -> onnx.TensorProto | None:
    """The initializer holding a numeric Constant node's value (its tensor copied as it is)."""
    if not name:
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            tensor.name = name
            return tensor
    value = constant_node_value(node)
    return None if value is None else numpy_helper.from_array(value, name)


def _constants_to_initializers(model: onnx.ModelProto) -> bool:
    graph = model.graph
    if model.ir_version < _FREE_INITIALIZERS_IR:
        return False
    outputs = {o.name for o in graph.output}
    taken = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    keep: list[onnx.NodeProto] = []
    new: list[onnx.TensorProto] = []
    for node in graph.node:
        name = node.output[0] if _numeric_constant(node) else ""
        tensor = _as_initializer(node, name) if name not in outputs and name not in taken else None
        if tensor is None:
            keep.append(node)
            continue
        new.append(tensor)
    if not new:
        return False
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new)
    return True


def _identity_roots(graph: onnx.GraphProto) -> dict[str, str]:
    """Identity output → the constant it copies (through a chain of Identities)."""
    consts = {i.name for i in graph.initializer}
    consts |= {n.output[0] for n in graph.node if _numeric_constant(n)}
    root: dict[str, str] = {}
    for node in graph.node:  # graph order: a chain's first link comes first
        if node.op_type == "Identity" and node.input and len(node.output) == 1:
            source = root.get(node.input[0], node.input[0])
            if source in consts and node.output[0]:
                root[node.output[0]] = source
    return root


def _bypass_identities(graph: onnx.GraphProto) -> bool:
    root = _identity_roots(graph)
    if not root:
        return False
    needed = {o.name for o in graph.output} | subgraph_reads(graph)
    keep: list[onnx.NodeProto] = []
    changed = False
    for node in graph.node:
        if node.op_type == "Identity" and node.output and node.output[0] in root:
            if node.output[0] not in needed:
                changed = True
                continue
        for k, t in enumerate(node.input):
            if t in root:
                node.input[k] = root[t]
                changed = True
        keep.append(node)
    if not changed:
        return False
    del graph.node[:]
    graph.node.extend(keep)
    return True


@dataclass(frozen=True)
class Canonical:
    """What :func:`canonical_constants` changed: Constant nodes turned into initializers
    (``folded``; the file no longer names those as initializers) and Identity nodes bypassed
    (``bypassed``; every initializer of the file is still one, by the same name)."""

    folded: bool = False
    bypassed: bool = False

    def __bool__(self) -> bool:
        return self.folded or self.bypassed


def canonical_constants(model: onnx.ModelProto) -> Canonical:
    """Rewrite ``model``'s main graph in place so constants are initializers read directly
    (module docstring); what changed (falsy when nothing did)."""
    folded = _constants_to_initializers(model)
    return Canonical(folded, _bypass_identities(model.graph))
