"""Channel rules of ops that keep the channel axis where it is: per-channel ops, convs, Gemm, MatMul.

- element-wise unary ops, pools and ``Identity``/``Cast``/``Dropout`` pass the layout through;
- shape-only ops (``Shape``, ``Size``, ``Constant``, ...) are neutral: they read widths at run
  time;
- ``BatchNormalization``/``InstanceNormalization`` keep the channels and resize their per-channel
  vectors (new entries: scale 1, bias 0, mean 0, var 1);
- broadcasting ops (``Add``, ``Mul``, ``PRelu``, ``Where``, ...) tie every input that carries the
  full channel dim (a residual Add unites both branches) and resize per-channel constants;
- ``Conv`` produces a fresh space (or, depthwise, the same channels, its ``group`` recomputed),
  records the grouped-conv constraint and resizes weight and bias; ``ConvTranspose`` (group 1:
  weight ``[c_in, c_out, kh, kw]``, the in and out axes swapped) likewise; ``Gemm``/``MatMul``
  with a constant weight consume the features of A on their K axis and produce a fresh space.

An op is registered in :data:`CHANNEL_RULES` with ``@rule(*op_types)``; a duplicate is an error.
"""

from __future__ import annotations

import onnx

from onnx_sk.graph.convs import attrs
from onnx_sk.maths.channel_spaces import Layout
from onnx_sk.width.edits import AxisMap, ConstEdit, ConvChannels, Count, IntEdit
from onnx_sk.width.state import Rule, Walk, label, registrar

CHANNEL_RULES: dict[str, Rule] = {}
rule = registrar(CHANNEL_RULES)

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
    known_ranks = {t: r for t, r in ranks.items() if r is not None}  # all of them by now
    big = max(known_ranks.values())
    aligned = {lay.axis + big - known_ranks[t] for t, lay in lays}
    if len(aligned) != 1 or len({lay.inner for _, lay in lays}) != 1:
        w.freeze_node(node, f"{label(node)}: inputs carry channels on different axes")
        return
    ch, inner = aligned.pop(), lays[0][1].inner
    width = max(w.total(lay) for _, lay in lays) * inner
    base: Layout | None = None
    for k, t in ins:
        a = ch - (big - known_ranks[t])
        s = w.shape(t)
        dim = s[a] if a >= 0 and s is not None else 1
        if t in w.constants:
            if a >= 0 and dim == width and width > 1:
                src = next(lay for _, lay in lays if w.total(lay) * inner == width)
                fill = _FILLS.get(node.op_type, 0.0)
                w.const_edits.append(ConstEdit(i, k, ((a, AxisMap(src.atoms, inner)),), fill))
            elif dim != 1:
                w.freeze_node(
                    node, f"{label(node)}: constant {t!r} has {dim} entries on the channel axis"
                )
                return
            continue
        if dim == 1 and width > 1:
            if t in w.layouts:
                w.spaces.freeze(
                    w.layouts[t].atoms, f"{label(node)} broadcasts it over {width} channels"
                )
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


@rule("ConvTranspose")
def _conv_transpose(w: Walk, i: int, node: onnx.NodeProto) -> None:
    """A transposed conv (a decoder's up-convolution): weight ``[c_in, c_out // group, kh, kw]``.
    New weights are He-normal with fan-in ``c_in``, the inputs each output pixel sums when the
    kernel equals the stride (the usual 2×2, stride-2 up-convolution)."""
    weight = w.const(node, 1)
    has_bias = len(node.input) > 2 and bool(node.input[2])
    if weight is None or (has_bias and w.const(node, 2) is None):
        w.freeze_node(node, f"{label(node)}: weights are not constant")
        return
    if int(attrs(node).get("group", 1)) != 1:
        w.freeze_node(node, f"{label(node)}: grouped transposed conv")
        return
    lay = w.need(node.input[0])
    c_in, c_out = int(weight.shape[0]), int(weight.shape[1])  # [c_in, c_out, kh, kw]
    if lay is None or lay.axis != 1 or lay.inner != 1 or w.total(lay) != c_in:
        w.freeze_node(node, f"{label(node)}: input channels unknown")
        return
    out = (w.spaces.new(c_out),)
    axes = ((0, AxisMap(lay.atoms, role="in")), (1, AxisMap(out, role="out")))
    w.const_edits.append(ConstEdit(i, 1, axes, "he", (0,)))
    if has_bias:
        w.const_edits.append(ConstEdit(i, 2, ((0, AxisMap(out)),), 0.0))
    w.layouts[node.output[0]] = Layout(1, out)


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
