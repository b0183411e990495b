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
