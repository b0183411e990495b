"""Channel spaces (one small graph per rule family) and the widening of each graph.

Every graph is analysed (spaces, divisors, frozen flags asserted), then widened by s = 2 twice:
``he`` (full checker, runs in ONNX Runtime, same output shapes) and ``preserve`` (the same
outputs as the unwidened graph, up to float32 rounding).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import session
from onnx_sk.width.analysis import analyze_channels, solve_scale
from onnx_sk.width.rewrite import run_widen

RNG = np.random.default_rng(7)
HW = 8


class G:
    """A tiny graph builder: x [1, c, 8, 8] → nodes → outputs."""

    def __init__(self, c_in: int = 8) -> None:
        self.nodes, self.inits, self.k = [], [], 0
        self.c_in = c_in

    def const(self, value: np.ndarray, dtype=np.float32) -> str:
        self.k += 1
        name = f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        self.k += 1
        outs = [f"t{self.k}_{j}" for j in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op.lower()}{self.k}", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(
        self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, bias: bool = True
    ) -> str:
        w = self.const(RNG.standard_normal((c_out, c_in // group, k, k)) * 0.3)
        inputs = [x, w] + ([self.const(RNG.standard_normal(c_out) * 0.1)] if bias else [])
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)

    def model(self, outputs: list[str]) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, self.c_in, HW, HW])
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "g", [x], outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model = onnx.shape_inference.infer_shapes(model)
        del model.graph.value_info[:]
        onnx.checker.check_model(model, full_check=True)
        return model


def spaces_of(model: onnx.ModelProto):
    a = analyze_channels(model, infer_shapes(model))
    return a, sorted(a.spaces.values(), key=lambda s: s.id)


def space_with(spaces, member: str):
    found = [s for s in spaces if member in s.members]
    assert len(found) == 1, (member, [s.members for s in spaces])
    return found[0]


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return session(model, opt_level="disabled").run(None, feeds)


def assert_widens(model: onnx.ModelProto, scale: float = 2.0) -> dict:
    """he and preserve widening: checker, ORT, output shapes; preserve keeps the outputs."""
    a, _ = spaces_of(model)
    feeds = random_inputs(model, np.random.default_rng(0))
    want = run(model, feeds)
    widths = {}
    for preserve in (False, True):
        widths = a.widths(scale, at_least_old=preserve)
        wide = run_widen(model, a, widths, preserve, np.random.default_rng(0))
        onnx.checker.check_model(wide, full_check=True)
        got = run(wide, feeds)
        assert [g.shape for g in got] == [w.shape for w in want]
        if preserve:
            for g, w in zip(got, want, strict=False):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    return widths


def test_residual_add_ties_both_branches():
    g = G()
    a = g.op("Relu", [g.conv("x", 8, 16)])
    b = g.conv(a, 16, 16)
    s = g.op("Add", [a, b])
    y = g.conv(s, 16, 4)
    _, spaces = spaces_of(g.model([y]))
    tied = space_with(spaces, s)
    assert a in tied.members and b in tied.members and tied.size == 16 and not tied.frozen
    assert space_with(spaces, "x").frozen == ("graph input 'x'",)
    assert space_with(spaces, y).frozen == (f"graph output {y!r}",)
    widths = assert_widens(g.model([y]))
    assert widths[tied.id] == 32


def test_concat_joins_segments():
    g = G()
    a, b = g.conv("x", 8, 6), g.conv("x", 8, 10)
    c = g.op("Concat", [a, b], axis=1)
    y = g.conv(c, 16, 4)
    _, spaces = spaces_of(g.model([y]))
    assert f"{c}[0:6]" in space_with(spaces, a).members
    assert f"{c}[6:16]" in space_with(spaces, b).members
    assert not space_with(spaces, a).frozen and not space_with(spaces, b).frozen
    assert_widens(g.model([y]))


def test_split_cuts_the_space():
    g = G()
    t = g.conv("x", 8, 16)
    p, q = g.op("Split", [t, g.const([4, 12], np.int64)], n_out=2, axis=1)
    y = g.op("Add", [g.conv(p, 4, 4), g.conv(q, 12, 4)])
    _, spaces = spaces_of(g.model([y]))
    assert space_with(spaces, p).size == 4 and space_with(spaces, q).size == 12
    assert f"{t}[0:4]" in space_with(spaces, p).members
    assert_widens(g.model([y]))


def test_se_block_multiplies_per_channel():
    g = G()
    t = g.conv("x", 8, 16)
    squeeze = g.op("GlobalAveragePool", [t])
    hidden = g.op("Relu", [g.conv(squeeze, 16, 4, k=1)])
    gate = g.op("Sigmoid", [g.conv(hidden, 4, 16, k=1)])
    m = g.op("Mul", [t, gate])
    silu = g.op("Mul", [m, g.op("Sigmoid", [m])])  # Silu as x·Sigmoid(x)
    y = g.conv(silu, 16, 4)
    _, spaces = spaces_of(g.model([y]))
    tied = space_with(spaces, m)
    assert {t, gate, squeeze, silu} <= set(tied.members) and not tied.frozen
    assert space_with(spaces, hidden).size == 4 and not space_with(spaces, hidden).frozen
    assert_widens(g.model([y]))


def test_grouped_and_depthwise_conv():
    g = G()
    t = g.conv("x", 8, 16)
    u = g.conv(t, 16, 32, group=4)
    d = g.conv(u, 32, 32, group=32)  # depthwise: same space in and out
    y = g.conv(d, 32, 4)
    _, spaces = spaces_of(g.model([y]))
    assert space_with(spaces, t).divisor == 4
    assert space_with(spaces, u).divisor == 4 and d in space_with(spaces, u).members
    model = g.model([y])
    assert_widens(model, 1.5)
    a, _ = spaces_of(model)
    wide = run_widen(model, a, a.widths(1.5), False, np.random.default_rng(0))
    dw = next(n for n in wide.graph.node if n.name == model.graph.node[-2].name)
    assert helper.get_attribute_value(dw.attribute[-1]) == 48


def test_channel_shuffle_keeps_group_structure():
    g = G()
    t = g.conv("x", 8, 16)
    u = g.conv(t, 16, 16, group=4)
    shape = g.op("Shape", [u])
    r = g.op("Reshape", [u, g.const([0, 4, 4, -1], np.int64)])
    tr = g.op("Transpose", [r], perm=[0, 2, 1, 3])
    back = g.op("Reshape", [tr, shape])
    v = g.conv(back, 16, 8, group=2)
    y = g.conv(v, 8, 4)
    _, spaces = spaces_of(g.model([y]))
    pre, post = space_with(spaces, u), space_with(spaces, back)
    assert pre.granularity == 8 and post.granularity == 2
    assert pre.divisor == post.divisor == 8 and pre.width_class == post.width_class
    widths = assert_widens(g.model([y]), 2.0)
    assert widths[pre.id] == widths[post.id] == 32


def test_flatten_gemm_head_follows_channels():
    g = G()
    t = g.op("MaxPool", [g.op("Relu", [g.conv("x", 8, 16)])], kernel_shape=[2, 2], strides=[2, 2])
    f = g.op("Flatten", [t], axis=1)
    y = g.op(
        "Gemm",
        [f, g.const(RNG.standard_normal((10, 16 * 16)) * 0.1), g.const(np.zeros(10))],
        transB=1,
    )
    model = g.model([y])
    a, spaces = spaces_of(model)
    sp = space_with(spaces, f)
    assert not sp.frozen and a.walk.layouts[f].inner == 16
    widths = assert_widens(model)
    gemm = next(
        e for e in a.walk.const_edits if e.input == 1 and model.graph.node[e.node].op_type == "Gemm"
    )
    assert a.new_shape(gemm, (10, 256), widths) == (10, 512)


def test_yolo_head_reshaping_channels_into_boxes_is_frozen():
    g = G()
    t = g.conv("x", 8, 16)
    h = g.conv(t, 16, 18, k=1)  # 3 anchors × (4 box + 1 obj + 1 class)
    r = g.op("Reshape", [h, g.const([1, 3, 6, HW, HW], np.int64)])
    y = g.op("Transpose", [r], perm=[0, 1, 3, 4, 2])
    model = g.model([y])
    a, spaces = spaces_of(model)
    head = space_with(spaces, h)
    assert head.frozen and "reshapes 18 channels into 1×3×6×8×8" in head.frozen[0]
    assert not space_with(spaces, t).frozen
    assert_widens(model)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_up_convolution(bias):
    """A decoder's 2×2, stride-2 ConvTranspose (weight [c_in, c_out, kh, kw]): its input space
    is consumed on axis 0, a fresh output space produced on axis 1, and the skip Concat after
    it joins both; he and preserve widening run."""
    g = G()
    t = g.conv("x", 8, 16)
    w = g.const(RNG.standard_normal((16, 6, 2, 2)) * 0.3)  # [c_in, c_out, kh, kw]
    inputs = [t, w] + ([g.const(RNG.standard_normal(6) * 0.1)] if bias else [])
    up = g.op("ConvTranspose", inputs, kernel_shape=[2, 2], strides=[2, 2])
    skip = g.op("Resize", ["x", "", g.const([1, 1, 2, 2])], mode="nearest")
    c = g.op("Concat", [up, g.conv(skip, 8, 10)], axis=1)
    y = g.conv(c, 16, 4)
    model = g.model([y])
    _, spaces = spaces_of(model)
    assert not space_with(spaces, t).frozen and space_with(spaces, t).size == 16
    out = space_with(spaces, up)
    assert out.size == 6 and not out.frozen and f"{c}[0:6]" in out.members
    widths = assert_widens(model)
    assert widths[out.id] == 12


def test_grouped_conv_transpose_is_frozen():
    g = G()
    t = g.conv("x", 8, 16)
    w = g.const(RNG.standard_normal((16, 2, 2, 2)) * 0.3)  # group 4: [c_in, c_out / 4, kh, kw]
    up = g.op("ConvTranspose", [t, w], kernel_shape=[2, 2], strides=[2, 2], group=4)
    name = g.nodes[-1].name
    y = g.conv(up, 8, 4)
    _, spaces = spaces_of(g.model([y]))
    assert space_with(spaces, t).frozen == (f"ConvTranspose {name!r}: grouped transposed conv",)


def test_unknown_op_freezes_what_it_touches():
    g = G()
    t = g.conv("x", 8, 16)
    d = g.op("DepthToSpace", [t], blocksize=2)
    name = g.nodes[-1].name
    y = g.conv(d, 4, 4)
    model = g.model([y])
    a, spaces = spaces_of(model)
    sp = space_with(spaces, t)
    assert sp.frozen == (f"DepthToSpace {name!r} has no channel rule",)
    assert space_with(spaces, d).frozen  # opaque: its own frozen space
    assert a.walk.frozen_by and not a.free


def test_slice_and_gather_ranges():
    g = G()
    t = g.conv("x", 8, 16)
    s = g.op("Slice", [t, g.const([4], np.int64), g.const([16], np.int64), g.const([1], np.int64)])
    k = g.op("Gather", [t, g.const(np.arange(0, 4), np.int64)], axis=1)
    y = g.op("Concat", [g.conv(s, 12, 4), g.conv(k, 4, 4)], axis=1)
    model = g.model([y])
    _, spaces = spaces_of(model)
    assert space_with(spaces, s).size == 12 and space_with(spaces, k).size == 4
    assert_widens(model)


def _chunk(g: G, t: str) -> tuple[str, str]:
    """torch's exported ``t.chunk(2, dim=1)``: bounds computed at run time from Shape(t)."""
    c = g.op("Gather", [g.op("Shape", [t]), g.const(1, np.int64)], axis=0)
    half = g.op("Div", [g.op("Add", [c, g.const([1], np.int64)]), g.const([2], np.int64)])
    end0 = g.op("Mul", [half, g.const([1], np.int64)])
    end1 = g.op("Mul", [half, g.const([2], np.int64)])
    axes = g.const([1], np.int64)
    return (
        g.op("Slice", [t, g.const([0], np.int64), end0, axes]),
        g.op("Slice", [t, end0, end1, axes]),
    )


def test_chunk_with_bounds_computed_at_run_time():
    """The bounds fold from static dims: the space is cut in halves (not frozen), widening
    writes them as constants of the new widths and drops the arithmetic."""
    g = G()
    t = g.conv("x", 8, 16)
    a, b = _chunk(g, t)
    y = g.op("Concat", [a, g.conv(b, 8, 8)], axis=1)
    model = g.model([g.conv(y, 16, 4)])
    _, spaces = spaces_of(model)
    assert space_with(spaces, a).size == 8 and not space_with(spaces, a).frozen
    assert space_with(spaces, b).size == 8 and not space_with(spaces, b).frozen
    assert f"{t}[0:8]" in space_with(spaces, a).members
    assert_widens(model)
    a_, _ = spaces_of(model)
    wide = run_widen(model, a_, a_.widths(2.0), False, np.random.default_rng(0))
    ops = [n.op_type for n in wide.graph.node]
    assert "Shape" not in ops and "Div" not in ops and "Mul" not in ops  # the arithmetic went
    inits = {i.name: numpy_helper.to_array(i) for i in wide.graph.initializer}
    slices = [n for n in wide.graph.node if n.op_type == "Slice"]
    assert [inits[n.input[2]].tolist() for n in slices] == [[16], [32]]


def test_slice_of_another_axis_passes_channels_whatever_its_bounds():
    g = G()
    t = g.conv("x", 8, 16)
    s = g.op("Slice", [t, g.const([0], np.int64), "end", g.const([2], np.int64)])
    y = g.conv(s, 16, 4)
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, HW, HW]),
        helper.make_tensor_value_info("end", TensorProto.INT64, [1]),  # a bound the graph is fed
    ]
    outs = [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)]
    graph = helper.make_graph(g.nodes, "g", inputs, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    a, spaces = spaces_of(model)
    assert space_with(spaces, t) is space_with(spaces, s) and not space_with(spaces, s).frozen
    assert not a.walk.frozen_by


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_solve_scale_meets_a_monotone_budget(scale):
    count = lambda s: int(1000 * round(8 * s) ** 2)  # noqa: E731
    target = count(scale)
    sol = solve_scale(count, target, 0.1)
    assert sol.met and abs(sol.ratio - 1) <= 0.01
