"""The walk of the channel rules over a graph: one rule per ONNX op type, registered explicitly.

``walk(model, shapes)`` visits the main graph's nodes in order and calls ``RULES[op_type]``; each
rule reads its inputs' :class:`~onnx_sk.maths.channel_spaces.Layout` and

- sets its outputs' layouts (the same atoms for per-channel ops, fresh atoms for a conv's output,
  a concatenation for Concat, pieces for Split/Slice, a moved axis for Transpose/Squeeze/Flatten);
- ties atoms (``Spaces.unite``), records group and shuffle constraints, or freezes atoms with a
  reason;
- records the *edits* widening will need, as data: constants resized along channel axes
  (:class:`~onnx_sk.width.edits.ConstEdit`: conv/Gemm weights, biases, BN vectors, per-channel
  constants of Add/Mul/PRelu, ...) and integer constants or attributes recomputed from the new
  widths (:class:`~onnx_sk.width.edits.IntEdit`: depthwise ``group``, Reshape targets, Split
  sizes, Slice bounds, shuffle indices, Resize sizes).

An op without a rule freezes every space it touches and makes its outputs *opaque*: a tensor
with no known layout gets a frozen space of its own when a rule needs it (never a guess).
Shape-only ops (``Shape``, ``Size``, ``Constant``, ...) are neutral: they read widths at run time.
Graph inputs and outputs are frozen.

``RULES`` is the explicit union of the rule tables of :mod:`~onnx_sk.width.rules_channel`
(per-channel ops, convs, Gemm, MatMul), :mod:`~onnx_sk.width.rules_axes` (ops that cut, join or
move the channel axis) and :mod:`~onnx_sk.width.rules_reshape` (Reshape, channel shuffles); an
op type in two tables is an error.
"""

from __future__ import annotations

import onnx

from onnx_sk.graph.index import training_bound
from onnx_sk.graph.shapes import Shape
from onnx_sk.width.rules_axes import AXIS_RULES
from onnx_sk.width.rules_channel import CHANNEL_RULES
from onnx_sk.width.rules_reshape import RESHAPE_RULES
from onnx_sk.width.state import Rule, Walk, label


def merge_rules(*tables: dict[str, Rule]) -> dict[str, Rule]:
    """One table from several; an op type registered in two of them is an error."""
    merged: dict[str, Rule] = {}
    for table in tables:
        for op, fn in table.items():
            if op in merged:
                raise ValueError(f"channel rule for {op!r} registered twice")
            merged[op] = fn
    return merged


RULES: dict[str, Rule] = merge_rules(CHANNEL_RULES, AXIS_RULES, RESHAPE_RULES)


def walk(model: onnx.ModelProto, shapes: dict[str, Shape]) -> Walk:
    """Run every rule over the main graph; graph inputs and outputs are frozen."""
    w = Walk(model, shapes)
    for vi in w.graph.input:
        if vi.name not in w.constants:
            w.opaque[vi.name] = f"graph input {vi.name!r}"
            w.need(vi.name)
    trained = training_bound(model)
    for i, node in enumerate(w.graph.node):
        if i in w.skip:
            continue
        fn = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        bound = sorted(trained.intersection(node.input))
        if bound:
            w.freeze_node(node, f"{label(node)} reads {bound[0]!r}, which training_info updates")
        elif fn is None:
            w.freeze_node(node, f"{label(node)} has no channel rule")
        else:
            fn(w, i, node)
    for vi in w.graph.output:
        w.opaque.setdefault(vi.name, f"graph output {vi.name!r}")
        lay = w.layouts.get(vi.name) or w.need(vi.name)
        if lay is not None:
            w.spaces.freeze(lay.atoms, f"graph output {vi.name!r}")
    return w
