"""Which convs are neighbours in a graph: the precision boundaries of an int8/fp32 mix.

A *unit* is one conv as the optimizer wrote it: the dense Conv node itself, or the nodes of its
SK realisation (stages and shuffles), named by the conv's output tensor. Two units are
neighbours when a tensor flows from one's output to the other's input through nodes of no unit
(``Relu``, ``MaxPool``, ``Add``, ``Concat``, …), at most ``MAX_HOPS`` of them. A ``Conv`` that
belongs to no unit (one that cannot be int8) ends the walk: it is a boundary of its own.

Where neighbours differ in precision, ONNX Runtime runs Q/DQ nodes, layout transposes (its int8
convs run NHWC, its fp32 convs NCHWc) and sometimes a slow kernel between them (a uint8
``MaxPool`` in NCHW after an fp32 stem costs more than the stem); a one-conv measurement sees
none of it.

A unit that reads a graph input or writes a graph output (through nodes of no unit,
``edge_units``) has an fp32 neighbour it cannot change: the model's inputs and outputs stay
float, so an int8 unit there pays a Q or a DQ (and ONNX Runtime's layout transposes) at the
edge. A unit is also a list of nodes, not necessarily a whole conv: the quantize pass makes each
stage of an SK realisation its own unit, so that a boundary can fall inside a replaced conv.
"""

from __future__ import annotations

import onnx

MAX_HOPS = 8
#: ops that end a walk when no unit owns them: their precision is fixed elsewhere
BARRIERS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")


def conv_neighbours(graph: onnx.GraphProto, units: dict[str, list[str]]) -> dict[str, set[str]]:
    """unit → its neighbouring units (module docstring); ``units``: conv output → the first
    outputs of its nodes."""
    owner = {out: conv for conv, outs in units.items() for out in outs}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in dict.fromkeys(node.input):
            if t:
                readers.setdefault(t, []).append(node)
    near: dict[str, set[str]] = {u: set() for u in units}
    for unit in units:
        seen = {unit}
        frontier = [unit]
        for _ in range(MAX_HOPS + 1):
            nxt: list[str] = []
            for t in frontier:
                for node in readers.get(t, []):
                    other = owner.get(node.output[0]) if node.output else None
                    if other is not None:
                        if other != unit:
                            near[unit].add(other)
                            near[other].add(unit)
                        continue
                    if node.op_type in BARRIERS:
                        continue
                    for o in node.output:
                        if o and o not in seen:
                            seen.add(o)
                            nxt.append(o)
            frontier = nxt
            if not frontier:
                break
    return near


def edge_units(graph: onnx.GraphProto, units: dict[str, list[str]]) -> set[str]:
    """The units that read a graph input or write a graph output through at most
    ``MAX_HOPS`` nodes of no unit (module docstring)."""
    owner = {out: conv for conv, outs in units.items() for out in outs}
    readers: dict[str, list[onnx.NodeProto]] = {}
    writer: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for t in dict.fromkeys(node.input):
            if t:
                readers.setdefault(t, []).append(node)
        for t in node.output:
            if t:
                writer[t] = node
    edge: set[str] = set()
    frontier = [i.name for i in graph.input]
    seen = set(frontier)
    for _ in range(MAX_HOPS + 1):  # forward from the inputs
        nxt: list[str] = []
        for t in frontier:
            for node in readers.get(t, []):
                unit = owner.get(node.output[0]) if node.output else None
                if unit is not None:
                    edge.add(unit)
                elif node.op_type not in BARRIERS:
                    nxt += [o for o in node.output if o and o not in seen]
                    seen.update(nxt)
        frontier = nxt
    frontier = [o.name for o in graph.output]
    seen = set(frontier)
    for _ in range(MAX_HOPS + 1):  # backward from the outputs
        nxt = []
        for t in frontier:
            node = writer.get(t)
            if node is None:
                continue
            unit = owner.get(t)
            if unit is not None:
                edge.add(unit)
            elif node.op_type not in BARRIERS:
                nxt += [i for i in dict.fromkeys(node.input) if i and i not in seen]
                seen.update(nxt)
        frontier = nxt
    return edge
