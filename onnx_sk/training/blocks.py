"""The block correspondence of a teacher and its student, and the student cut into blocks.

onnx-sk keeps each replaced conv's output tensor name on the last node of its replacement, so a
tensor produced by a Conv in the teacher and produced (by any node) in the student under the same
name, at the same shape, is a point where the two networks must agree. These *anchors* (plus the
graph outputs) cut the student into *blocks*: block k holds the student nodes that compute anchor
k from earlier anchors and graph inputs, each node in the first block that needs it. A tensor
that one block computes and a later block reads (a residual branch, a shape) becomes an output of
the first and an input of the later one, so each block can run, and train, on what the student
itself computed before it. An anchor made by a node that an earlier block already holds (a second
output of a Split that also feeds an earlier anchor) has no block of its own: it is one more
output of that block.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnx_sk.runtime.feeds import real_inputs


@dataclass(frozen=True)
class Block:
    """One block: its sub-model (inputs: tensors from before it; outputs: its anchor first)."""

    anchor: str
    model: onnx.ModelProto
    inputs: list[str]
    outputs: list[str]


def anchors(teacher: onnx.ModelProto, student: onnx.ModelProto) -> list[str]:
    """Teacher conv outputs the student also produces, and the graph outputs the student
    computes, in the student's node order (the caller drops those whose shapes differ)."""
    conv_out = {n.output[0] for n in teacher.graph.node if n.op_type == "Conv"}
    wanted = conv_out | {o.name for o in student.graph.output}
    found = [o for n in student.graph.node for o in n.output if o in wanted]
    return list(dict.fromkeys(found))


def cut(student: onnx.ModelProto, anchor_names: list[str]) -> list[Block]:
    """The student cut at ``anchor_names`` (in node order) into blocks (see the module docstring)."""
    graph = student.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {vi.name for vi in real_inputs(student)}
    owner: dict[int, int] = {}  # node index -> block index
    extra: dict[int, set[str]] = {}  # block index -> anchors its nodes make besides its own
    for k, anchor in enumerate(anchor_names):
        if producer.get(anchor) in owner:  # made by a node an earlier block holds
            extra.setdefault(owner[producer[anchor]], set()).add(anchor)
            continue
        stack = [anchor]
        while stack:
            name = stack.pop()
            i = producer.get(name)
            if i is None or i in owner:
                continue
            owner[i] = k
            for x in graph.node[i].input:
                if x and x not in anchor_names[:k]:
                    stack.append(x)
    elem = _elem_types(student)
    blocks = []
    for k, anchor in enumerate(anchor_names):
        nodes = [n for i, n in enumerate(graph.node) if owner.get(i) == k]
        if not nodes and producer.get(anchor) in owner:
            continue
        made = {o for n in nodes for o in n.output}
        reads = [x for n in nodes for x in n.input if x and x not in made and x not in inits]
        ins = list(dict.fromkeys(reads))
        later = {
            x
            for i, n in enumerate(graph.node)
            if owner.get(i, -1) > k
            for x in n.input
            if x in made
        }
        outs = [anchor] + sorted((later | extra.get(k, set())) - {anchor})
        used = {x for n in nodes for x in n.input if x in inits}
        sub = onnx.helper.make_graph(
            nodes,
            f"block{k}",
            [_info(x, elem) for x in ins if x in graph_inputs or x in producer],
            [_info(x, elem) for x in outs],
            [t for t in graph.initializer if t.name in used],
        )
        model = onnx.helper.make_model(sub, opset_imports=list(student.opset_import))
        model.ir_version = student.ir_version
        blocks.append(Block(anchor, model, ins, outs))
    return blocks


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot read: every tensor taken as float
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}


def _info(name: str, elem: dict[str, int]) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem.get(name) or onnx.TensorProto.FLOAT, None)
