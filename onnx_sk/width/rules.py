"""One channel rule per ONNX op type: how an op ties, cuts or moves the channels of its tensors.

``walk(model, shapes)`` visits the main graph's nodes in order and calls ``RULES[op_type]``; each
rule reads its inputs' :class:`~onnx_sk.maths.channel_spaces.Layout` and

- sets its outputs' layouts (the same atoms for per-channel ops, fresh atoms for a conv's output,
  a concatenation for Concat, pieces for Split/Slice, a moved axis for Transpose/Squeeze/Flatten);
- ties atoms (``Spaces.unite``), records group and shuffle constraints, or freezes atoms with a
  reason;
- records the *edits* widening will need, as data: constants resized along channel axes
  (:class:`ConstEdit`: conv/Gemm weights, biases, BN vectors, per-channel constants of
  Add/Mul/PRelu, ...) and integer constants or attributes recomputed from the new widths
  (:class:`IntEdit`: depthwise ``group``, Reshape targets, Split sizes, Slice bounds, shuffle
  indices, Resize sizes).

An op without a rule freezes every space it touches and makes its outputs *opaque*: a tensor
with no known layout gets a frozen space of its own when a rule needs it (never a guess).
Shape-only ops (``Shape``, ``Size``, ``Constant``, ...) are neutral: they read widths at run time.
The rules for ops that move or cut the channel axis live in :mod:`onnx_sk.width.rules_axes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnx_sk.maths.channel_spaces import Layout, Spaces
from onnx_sk.graph.convs import attrs
from onnx_sk.graph.index import constant_values
from onnx_sk.graph.shapes import Shape


@dataclass(frozen=True)
class AxisMap:
    """An axis of a constant that follows channels. ``role``: in (consumes), out (produces), channel."""

    atoms: tuple[int, ...]
    inner: int = 1
    role: str = "channel"
    groups: int = 1  # a grouped conv weight's axis 1 holds c_in / groups


@dataclass(frozen=True)
class ConstEdit:
    """Resize input ``input`` of node ``node`` (a constant) along ``axes``.

    New entries: ``fill == "he"`` draws He-normal weights (fan-in = the product of ``fan_in``
    axes of the new shape), zero where an ``in`` axis is new under function-preserving widening;
    a number fills per-channel constants (BN scale 1, bias 0, ...).
    """

    node: int
    input: int
    axes: tuple[tuple[int, AxisMap], ...]
    fill: str | float
    fan_in: tuple[int, ...] = ()


@dataclass(frozen=True)
class Count:
    """An integer computed from new widths: (total width of ``atoms``) · mult // div."""

    atoms: tuple[int, ...]
    mult: int = 1
    div: int = 1


@dataclass(frozen=True)
class Perm:
    """Shuffle permutation of the width of ``atoms`` with ``groups`` groups (1: a range), + offset."""

    atoms: tuple[int, ...]
    groups: int
    offset: Count | int = 0


@dataclass(frozen=True)
class IntEdit:
    """Recompute an int constant input (``input``) or an ``attr`` of node ``node``."""

    node: int
    values: tuple
    input: int | None = None
    attr: str | None = None
    scalar: bool = False
    drop_attr: str | None = None


@dataclass(frozen=True)
class ConvChannels:
    node: int
    name: str
    in_atoms: tuple[int, ...]
    out_atoms: tuple[int, ...]
    group: int
    depthwise: bool


Rule = Callable[["Walk", int, onnx.NodeProto], None]
RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            if op in RULES:
                raise ValueError(f"channel rule for {op!r} registered twice")
            RULES[op] = fn
        return fn

    return register


def label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name or node.output[0]!r}"


def axis_of(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


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

    def __post_init__(self) -> None:
        self.graph = self.model.graph
        self.consts = constant_values(self.graph)
        self.opset = next(
            (d.version for d in self.model.opset_import if d.domain in ("", "ai.onnx")), 1
        )
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.graph.node):
            for t in n.input:
                self.consumers.setdefault(t, []).append(i)

    def shape(self, t: str) -> Shape | None:
        if t in self.consts:
            return tuple(self.consts[t].shape)
        return self.shapes.get(t)

    def rank(self, t: str) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    def need(self, t: str, axis: int = 1) -> Layout | None:
        """``t``'s layout; a tensor without one gets a frozen space (it is opaque)."""
        if t in self.layouts:
            return self.layouts[t]
        s = self.shape(t)
        if t in self.consts or s is None or len(s) <= axis or not s[axis]:
            return None
        why = self.opaque.get(t, f"tensor {t!r} has no channel information")
        lay = Layout(axis, (self.spaces.new(int(s[axis]), why),))
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
        """Freeze every space ``node`` touches; its outputs become opaque."""
        touched = False
        for t in node.input:
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
        return self.consts.get(node.input[k]) if len(node.input) > k and node.input[k] else None

    def ints(self, node: onnx.NodeProto, k: int, attr: str) -> list[int] | None:
        """An int list given as input ``k`` (constant) or as attribute ``attr``; None if neither."""
        if len(node.input) > k and node.input[k]:
            v = self.consts.get(node.input[k])
            return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]
        a = attrs(node).get(attr)
        return None if a is None else [int(x) for x in a]


def walk(model: onnx.ModelProto, shapes: dict[str, Shape]) -> Walk:
    """Run every rule over the main graph; graph inputs and outputs are frozen."""
    from onnx_sk.width import rules_axes  # noqa: F401  (registers the axis rules)

    w = Walk(model, shapes)
    for vi in w.graph.input:
        if vi.name not in w.consts:
            w.opaque[vi.name] = f"graph input {vi.name!r}"
            w.need(vi.name)
    for i, node in enumerate(w.graph.node):
        if i in w.skip:
            continue
        fn = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if fn is None:
            w.freeze_node(node, f"{label(node)} has no channel rule")
        else:
            fn(w, i, node)
    for vi in w.graph.output:
        w.opaque.setdefault(vi.name, f"graph output {vi.name!r}")
        lay = w.layouts.get(vi.name) or w.need(vi.name)
        if lay is not None:
            w.spaces.freeze(lay.atoms, f"graph output {vi.name!r}")
    return w


# -- per-channel ops -------------------------------------------------------------------------

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu",
    "Celu", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log", "Neg", "Abs", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "Identity", "Dropout",
    "Cast", "LRN", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "Swish",
)  # fmt: skip
NEUTRAL = ("Shape", "Size", "Constant", "ConstantOfShape", "Range")


@rule(*UNARY)
def _unary(w: Walk, i: int, node: onnx.NodeProto) -> None:
    w.copy(node.input[0], node.output[0])


@rule(*NEUTRAL)
def _neutral(w: Walk, i: int, node: onnx.NodeProto) -> None:
    return None


@rule("BatchNormalization", "InstanceNormalization")
def _norm(w: Walk, i: int, node: onnx.NodeProto) -> None:
    fills = (1.0, 0.0, 0.0, 1.0)  # scale, B, mean, var
    lay = w.need(node.input[0])
    values = [w.const(node, k) for k in range(1, len(node.input))]
    if lay is None or lay.axis != 1 or any(v is None or v.ndim != 1 for v in values):
        w.freeze_node(node, f"{label(node)}: parameters are not constant per-channel vectors")
        return
    for k in range(1, len(node.input)):
        w.const_edits.append(ConstEdit(i, k, ((0, AxisMap(lay.atoms)),), fills[k - 1]))
    w.layouts[node.output[0]] = lay


_FILLS = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0, "PRelu": 0.25, "Pow": 1.0, "Sum": 0.0}


@rule("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where")
def _broadcast(w: Walk, i: int, node: onnx.NodeProto) -> None:
    """Numpy broadcasting: inputs with the full channel dim are tied; constants are resized."""
    ins = [(k, t) for k, t in enumerate(node.input) if t]
    ranks = {t: w.rank(t) for _, t in ins}
    lays = [(t, w.layouts[t]) for _, t in ins if t in w.layouts]
    out = node.output[0]
    if not lays:
        opq = [t for _, t in ins if t in w.opaque]
        if opq:
            w.opaque[out] = w.opaque[opq[0]]
        return
    if any(r is None for r in ranks.values()):
        w.freeze_node(node, f"{label(node)}: an input's rank is unknown")
        return
    big = max(r for r in ranks.values() if r is not None)
    aligned = {lay.axis + big - ranks[t] for t, lay in lays}
    if len(aligned) != 1 or len({lay.inner for _, lay in lays}) != 1:
        w.freeze_node(node, f"{label(node)}: inputs carry channels on different axes")
        return
    ch, inner = aligned.pop(), lays[0][1].inner
    width = max(w.total(lay) for _, lay in lays) * inner
    base: Layout | None = None
    for k, t in ins:
        a = ch - (big - ranks[t])
        s = w.shape(t)
        dim = s[a] if a >= 0 and s is not None else 1
        if t in w.consts:
            if a >= 0 and dim == width and width > 1:
                src = next(lay for _, lay in lays if w.total(lay) * inner == width)
                fill = _FILLS.get(node.op_type, 0.0)
                w.const_edits.append(ConstEdit(i, k, ((a, AxisMap(src.atoms, inner)),), fill))
            elif dim != 1:
                w.freeze_node(node, f"{label(node)}: constant {t!r} has {dim} entries on the channel axis")
                return
            continue
        if dim == 1 and width > 1:
            if t in w.layouts:
                w.spaces.freeze(w.layouts[t].atoms, f"{label(node)} broadcasts it over {width} channels")
            continue
        lay = w.layouts.get(t) or w.need(t, a)
        if lay is None or w.total(lay) * lay.inner != width:
            w.freeze_node(node, f"{label(node)}: cannot align input {t!r} with the channels")
            return
        if base is None:
            base = lay
        else:
            w.spaces.unite(base.atoms, lay.atoms)
    if base is None:
        w.freeze_node(node, f"{label(node)}: channels come from a constant")
        return
    w.layouts[out] = Layout(ch, base.atoms, inner)


# -- convolutions and fully connected layers --------------------------------------------------


@rule("Conv")
def _conv(w: Walk, i: int, node: onnx.NodeProto) -> None:
    weight = w.const(node, 1)
    has_bias = len(node.input) > 2 and bool(node.input[2])
    if weight is None or (has_bias and w.const(node, 2) is None):
        w.freeze_node(node, f"{label(node)}: weights are not constant")
        return
    lay = w.need(node.input[0])
    g = int(attrs(node).get("group", 1))
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1]) * g
    if lay is None or lay.axis != 1 or lay.inner != 1 or w.total(lay) != c_in:
        w.freeze_node(node, f"{label(node)}: input channels unknown")
        return
    y = node.output[0]
    if g > 1 and g == c_in == c_out:  # depthwise: channel i in, channel i out
        out = lay.atoms
        w.int_edits.append(IntEdit(i, (Count(out),), attr="group", scalar=True))
        w.const_edits.append(ConstEdit(i, 1, ((0, AxisMap(out, role="out")),), "he", (1, 2, 3)))
    elif g > 1 and g == c_in:
        w.freeze_node(node, f"{label(node)}: depthwise with a channel multiplier")
        return
    else:
        out = (w.spaces.new(c_out),)
        w.spaces.group(lay.atoms, g, label(node))
        w.spaces.group(out, g, label(node))
        axes = ((0, AxisMap(out, role="out")), (1, AxisMap(lay.atoms, role="in", groups=g)))
        w.const_edits.append(ConstEdit(i, 1, axes, "he", tuple(range(1, weight.ndim))))
    if has_bias:
        w.const_edits.append(ConstEdit(i, 2, ((0, AxisMap(out)),), 0.0))
    w.layouts[y] = Layout(1, out)
    w.convs.append(ConvChannels(i, node.name or y, lay.atoms, out, g, g > 1 and g == c_in))


@rule("Gemm")
def _gemm(w: Walk, i: int, node: onnx.NodeProto) -> None:
    a = attrs(node)
    b = w.const(node, 1)
    if b is None or b.ndim != 2:
        w.freeze_node(node, f"{label(node)}: B is not a constant matrix")
        return
    k_axis_a = 0 if a.get("transA", 0) else 1
    k_axis_b, n_axis_b = (1, 0) if a.get("transB", 0) else (0, 1)
    lay = w.need(node.input[0], k_axis_a)
    if lay is None or lay.axis != k_axis_a:
        w.freeze_node(node, f"{label(node)}: features of A are not channels on its K axis")
        return
    out = (w.spaces.new(int(b.shape[n_axis_b])),)
    axes = ((k_axis_b, AxisMap(lay.atoms, lay.inner, "in")), (n_axis_b, AxisMap(out, role="out")))
    w.const_edits.append(ConstEdit(i, 1, axes, "he", (k_axis_b,)))
    c = w.const(node, 2)
    if c is not None and c.ndim >= 1 and c.shape[-1] == b.shape[n_axis_b] and c.shape[-1] > 1:
        w.const_edits.append(ConstEdit(i, 2, ((c.ndim - 1, AxisMap(out)),), 0.0))
    elif len(node.input) > 2 and node.input[2] and c is None:
        w.freeze_node(node, f"{label(node)}: C is not constant")
        return
    w.layouts[node.output[0]] = Layout(1, out)


@rule("MatMul")
def _matmul(w: Walk, i: int, node: onnx.NodeProto) -> None:
    b = w.const(node, 1)
    lay = w.layouts.get(node.input[0])
    rank = w.rank(node.input[0])
    if b is None or b.ndim != 2 or rank is None or rank < 2:
        if lay is not None or node.input[0] in w.opaque:
            w.freeze_node(node, f"{label(node)}: B is not a constant matrix")
        return
    if lay is not None and lay.axis < rank - 1:  # acts on another axis: channels pass
        w.layouts[node.output[0]] = lay
        return
    lay = lay or w.need(node.input[0], rank - 1)
    if lay is None:
        return
    out = (w.spaces.new(int(b.shape[1])),)
    axes = ((0, AxisMap(lay.atoms, lay.inner, "in")), (1, AxisMap(out, role="out")))
    w.const_edits.append(ConstEdit(i, 1, axes, "he", (0,)))
    w.layouts[node.output[0]] = Layout(rank - 1, out)
