"""Partial recovery: the student cut where the torch converter refuses a node.

When some student node cannot be converted (:func:`onnx_sk.training.module.refusal`), the
student is split into a part torch can train and a region taken from ONNX Runtime:

- the *region* R: every refused node, and (in graph order) every node that reads a tensor R
  computes and the teacher does not give;
- a tensor R computes that the teacher computes too, under the same name, shape and dtype, with
  the samples on axis 0, is a *fixed input*: the teacher's value (ONNX Runtime) is fed in its
  place, so the nodes after the region still train, on the teacher's tensors, as a block of
  their own (as block-wise distillation feeds the teacher's activations);
- a float tensor the trainable part computes and R reads, when the teacher gives it, is a
  *cut target*: the part in front of the region trains towards the teacher's value of it.

:class:`Split` holds the trainable part as a model of its own: inputs = the real inputs it reads
plus the fixed inputs; outputs = the graph outputs it computes plus the cut targets. Its nodes
are the student's, so training it trains the student's weights (same initializer names); the
region's weights stay as they are. The report names every refused op (type and node), the
tensors fed from the teacher, and the nodes left untrained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.runtime.feeds import real_inputs
from onnx_sk.runtime.probe import Probe
from onnx_sk.training.module import refusal


@dataclass
class Split:
    """The trainable part of a student whose other nodes torch cannot run (module docstring)."""

    model: onnx.ModelProto
    kept_nodes: list[int]  # indices of the student's nodes in the trainable part
    inputs: list[str]  # the real inputs it reads
    fixed: list[str]  # tensors fed from the teacher
    outputs: list[str]  # graph outputs it computes, then the cut targets
    cut: list[str]
    limited_by: list[str]  # "'Op' (node 'name')" per refused node
    untrained: int  # student nodes outside the trainable part (Constants not counted)
    types: dict[str, int] = field(default_factory=dict)

    def produced(self) -> set[str]:
        return {o for n in self.model.graph.node for o in n.output}

    def apply(self, student: onnx.ModelProto) -> onnx.ModelProto:
        """The same cut of ``student`` (this split's student, maybe with other weights)."""
        return _part(student, self.kept_nodes, self.inputs, self.fixed, self.outputs, self.types)

    def to_dict(self) -> dict:
        return {
            "limited_by": self.limited_by,
            "fixed_inputs": self.fixed,
            "cut_targets": self.cut,
            "untrained_nodes": self.untrained,
        }


def _part(
    student: onnx.ModelProto,
    kept: list[int],
    inputs: list[str],
    fixed: list[str],
    outputs: list[str],
    types: dict[str, int],
) -> onnx.ModelProto:
    g = student.graph
    nodes = [g.node[i] for i in kept]
    reads = {x for n in nodes for x in n.input}
    elem = {vi.name: vi for vi in real_inputs(student)}

    def info(name: str) -> onnx.ValueInfoProto:
        return onnx.helper.make_tensor_value_info(name, types.get(name, 1), None)

    graph = onnx.helper.make_graph(
        nodes,
        f"{g.name}_trainable",
        [elem[x] for x in inputs] + [info(x) for x in fixed],
        [info(x) for x in outputs],
        [t for t in g.initializer if t.name in reads],
    )
    model = onnx.helper.make_model(graph, opset_imports=list(student.opset_import))
    model.ir_version = student.ir_version
    return model


def split(
    teacher: onnx.ModelProto, student: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int
) -> Split | None:
    """The split of ``student`` (None when every node converts); ``feeds``: one or two samples,
    on which ONNX Runtime tells which teacher tensors match the student's (with the samples on
    axis 0: a model whose batch is fixed at 1 runs one sample at a time, so any tensor whose
    first dim is 1 per sample)."""
    g = student.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    refused = {
        i: why
        for i, n in enumerate(g.node)
        if n.op_type != "Constant" and (why := refusal(n, used))
    }
    if not refused:
        return None
    # every tensor a node after a refused one might need from the teacher
    teacher_made = {o for n in teacher.graph.node for o in n.output if o}
    student_made = {o for n in g.node for o in n.output if o}
    names = sorted((student_made & teacher_made) - {o.name for o in g.output})
    t_probe = Probe(teacher, names, threads, "teacher")
    s_probe = Probe(student, names, threads, "student")
    t_got, s_got = t_probe.run(feeds), s_probe.run(feeds)
    n = len(next(iter(feeds.values())))

    def matches(x: str) -> bool:  # same shape and dtype, the samples on axis 0
        t, s = t_got.get(x), s_got.get(x)
        return (
            t is not None and s is not None and t.shape == s.shape and t.dtype == s.dtype
            and t.ndim > 0 and t.shape[0] == n
        )  # fmt: skip

    region: set[int] = set()
    unavailable: set[str] = set()
    fixed: list[str] = []
    for i, node in enumerate(g.node):
        if i in refused or any(x in unavailable for x in node.input):
            region.add(i)
            for o in node.output:
                if o:
                    (fixed.append(o) if matches(o) else unavailable.add(o))
    kept = [i for i in range(len(g.node)) if i not in region]
    reads = {x for i in kept for x in g.node[i].input}
    fixed = [x for x in fixed if x in reads]
    made = {o for i in kept for o in g.node[i].output}
    outputs = [o.name for o in g.output if o.name in made]
    cut = [
        x
        for i in sorted(region)
        for x in g.node[i].input
        if x in made and x not in outputs and matches(x) and t_got[x].dtype == np.float32
    ]
    cut = list(dict.fromkeys(cut))
    limited_by = [f"{why} (node {g.node[i].name!r})" for i, why in sorted(refused.items())]
    if not outputs + cut:
        raise UserError(
            f"no part of the student can be trained in torch: limited by {', '.join(limited_by)}"
        )
    inputs = [vi.name for vi in real_inputs(student) if vi.name in reads]
    types: dict[str, int] = {
        x: onnx.helper.np_dtype_to_tensor_dtype(t_got[x].dtype) for x in fixed + cut
    }
    types.update({o.name: o.type.tensor_type.elem_type or 1 for o in g.output})
    untrained = sum(1 for i in region if g.node[i].op_type != "Constant")
    model = _part(student, kept, inputs, fixed, outputs + cut, types)
    return Split(model, kept, inputs, fixed, outputs + cut, cut, limited_by, untrained, types)
