"""The state of one walk of the channel rules over a graph, and the helpers every rule uses.

A :class:`Walk` holds the :class:`~onnx_sk.maths.channel_spaces.Spaces` found so far, the
:class:`~onnx_sk.maths.channel_spaces.Layout` of every tensor known to carry channels, the
*opaque* tensors (outputs of an op that froze, with the reason) and the edits recorded
(:mod:`onnx_sk.width.edits`). It reads the graph through one
:class:`~onnx_sk.graph.index.GraphIndex` (constants, consumers), built when the walk starts.

A tensor with no known layout gets a frozen space of its own when a rule needs it
(:meth:`Walk.need`): widening never guesses where an unknown tensor's channels are.

A channel rule is a function ``(walk, node index, node) -> None`` (:data:`Rule`); the rule
modules register theirs in a table of their own with :func:`registrar`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnx_sk.graph.convs import attrs
from onnx_sk.graph.index import ConstantIndex, GraphIndex, node_subgraph_reads
from onnx_sk.graph.shape_arith import fold_ints
from onnx_sk.graph.shapes import Shape
from onnx_sk.maths.channel_spaces import Layout, Spaces
from onnx_sk.width.edits import ConstEdit, ConvChannels, IntEdit


def label(node: onnx.NodeProto) -> str:
    """How reasons name a node: ``Conv 'conv1'`` (the first output when it has no name)."""
    return f"{node.op_type} {node.name or node.output[0]!r}"


def axis_of(a: int, rank: int) -> int:
    """A possibly negative axis as a non-negative one."""
    return a + rank if a < 0 else a


def known(dims: Shape) -> tuple[int, ...] | None:
    """``dims`` when every dim is known, else None."""
    out: list[int] = []
    for d in dims:
        if d is None:
            return None
        out.append(d)
    return tuple(out)


@dataclass
class Walk:
    """The state of one walk over a graph: spaces, layouts and the edits found so far."""

    model: onnx.ModelProto
    shapes: dict[str, Shape]
    spaces: Spaces = field(default_factory=Spaces)
    layouts: dict[str, Layout] = field(default_factory=dict)
    opaque: dict[str, str] = field(default_factory=dict)
    const_edits: list[ConstEdit] = field(default_factory=list)
    int_edits: list[IntEdit] = field(default_factory=list)
    convs: list[ConvChannels] = field(default_factory=list)
    skip: set[int] = field(default_factory=set)
    frozen_by: list[tuple[str, str]] = field(default_factory=list)
    graph: onnx.GraphProto = field(init=False, repr=False)
    index: GraphIndex = field(init=False, repr=False)
    constants: ConstantIndex = field(init=False, repr=False)
    opset: int = field(init=False)

    def __post_init__(self) -> None:
        self.graph = self.model.graph
        self.index = GraphIndex(self.graph)
        self.constants = self.index.constants
        self.opset = next(
            (d.version for d in self.model.opset_import if d.domain in ("", "ai.onnx")), 1
        )

    def shape(self, t: str) -> Shape | None:
        if t in self.constants:
            return self.constants.dims(t)
        return self.shapes.get(t)

    def rank(self, t: str) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    def need(self, t: str, axis: int = 1) -> Layout | None:
        """``t``'s layout; a tensor without one gets a frozen space (it is opaque)."""
        if t in self.layouts:
            return self.layouts[t]
        s = self.shape(t)
        dim = s[axis] if s is not None and len(s) > axis else None
        if t in self.constants or not dim:
            return None
        why = self.opaque.get(t, f"tensor {t!r} has no channel information")
        lay = Layout(axis, (self.spaces.new(int(dim), why),))
        self.layouts[t] = lay
        return lay

    def total(self, lay: Layout) -> int:
        return self.spaces.total(lay.atoms)

    def copy(self, src: str, dst: str) -> None:
        if src in self.layouts:
            self.layouts[dst] = self.layouts[src]
        elif src in self.opaque:
            self.opaque[dst] = self.opaque[src]

    def freeze_node(self, node: onnx.NodeProto, reason: str) -> None:
        """Freeze every space ``node`` touches (its subgraphs' outer-scope reads too); its
        outputs become opaque."""
        touched = False
        for t in [*node.input, *sorted(node_subgraph_reads(node))]:
            lay = self.layouts.get(t)
            if lay is not None:
                self.spaces.freeze(lay.atoms, reason)
                touched = True
        for t in node.output:
            if t:
                self.opaque[t] = reason
                lay = self.layouts.pop(t, None)
                if lay is not None:
                    self.spaces.freeze(lay.atoms, reason)
        if touched:
            self.frozen_by.append((label(node), reason))

    def const(self, node: onnx.NodeProto, k: int) -> np.ndarray | None:
        """The value of input ``k`` of ``node`` when it is a constant, else None."""
        if len(node.input) > k and node.input[k]:
            return self.constants.get(node.input[k])
        return None

    def ints(self, node: onnx.NodeProto, k: int, attr: str) -> list[int] | None:
        """An int list given as input ``k`` (constant) or as attribute ``attr``; None if neither."""
        if len(node.input) > k and node.input[k]:
            v = self.constants.get(node.input[k])
            return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]
        a = attrs(node).get(attr)
        return None if a is None else [int(x) for x in a]

    def folded(self, node: onnx.NodeProto, k: int) -> list[int] | None:
        """Input ``k`` of ``node`` as ints: a constant, or computed from static dims alone
        (:func:`onnx_sk.graph.shape_arith.fold_ints`: torch's exported ``chunk`` bounds)."""
        if len(node.input) <= k or not node.input[k]:
            return None
        v = self.constants.get(node.input[k])
        if v is None:
            v = fold_ints(self.index, self.shapes, node.input[k])
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]

    def only_consumer(self, t: str, op: str) -> tuple[int, onnx.NodeProto] | None:
        """The node (index, node) of type ``op`` that is ``t``'s only reader, if any."""
        users = self.index.consumer_positions(t)
        if len(users) != 1 or t in self.index.outputs:
            return None
        k = users[0]
        n = self.graph.node[k]
        return (k, n) if n.op_type == op else None


#: a channel rule: reads its inputs' layouts, sets its outputs', records ties, cuts and edits
Rule = Callable[[Walk, int, onnx.NodeProto], None]


def registrar(table: dict[str, Rule]) -> Callable[..., Callable[[Rule], Rule]]:
    """The ``@rule(*ops)`` decorator of one rule module: fills ``table``, refuses duplicates."""

    def rule(*ops: str) -> Callable[[Rule], Rule]:
        def register(fn: Rule) -> Rule:
            for op in ops:
                if op in table:
                    raise ValueError(f"channel rule for {op!r} registered twice")
                table[op] = fn
            return fn

        return register

    return rule
