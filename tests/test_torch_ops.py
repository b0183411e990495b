"""export-torch op rules, one by one against ONNX Runtime: attribute variants, opsets 11-20, and
several input shapes through one model (symbolic dims) where the op allows it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from torch_ops_cases import check, model_of, node, randn  # noqa: E402

from onnx_sk.errors import UserError  # noqa: E402
from onnx_sk.training.module import OnnxModule  # noqa: E402

I64 = np.int64
BIG = np.iinfo(np.int64).max
RNG_PERM = np.random.default_rng(7)


@pytest.mark.parametrize(
    ("op", "attrs", "low"),
    [
        ("Exp", {}, None),
        ("Log", {}, 0.05),
        ("Sqrt", {}, 0.0),
        ("Softplus", {}, None),
        ("HardSigmoid", {}, None),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, None),
        ("HardSwish", {}, None),
        ("Erf", {}, None),
        ("Neg", {}, None),
        ("Abs", {}, None),
        ("Floor", {}, None),
        ("Ceil", {}, None),
        ("Reciprocal", {}, 0.1),
        ("Sigmoid", {}, None),
        ("Tanh", {}, None),
        ("Relu", {}, None),
        ("LeakyRelu", {"alpha": 0.2}, None),
        ("Elu", {"alpha": 0.7}, None),
        ("Selu", {}, None),
        ("Celu", {"alpha": 1.5}, None),
        ("Sin", {}, None),
        ("Cos", {}, None),
        ("Sign", {}, None),
        ("Softsign", {}, None),
        ("Round", {}, None),
        ("Gelu", {}, None),
        ("Gelu", {"approximate": "tanh"}, None),
    ],
)
def test_unary(op, attrs, low):
    def x(*s):
        return randn(*s, low=low, high=4.0) if low is not None else 3 * randn(*s)

    opset = 20 if op == "Gelu" else 14
    check([node(op, ["x"], **attrs)], {"x": x(2, 3, 5)}, opset=opset, shapes=[{"x": x(1, 4, 7)}])


def test_softplus_is_stable_for_large_inputs():
    x = np.array([-100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0], dtype=np.float32)
    check([node("Softplus", ["x"])], {"x": x})


def test_prelu_slope_is_a_parameter_and_matches():
    check([node("PRelu", ["x", "s"])], {"x": randn(2, 3, 4, 4)}, {"s": randn(3, 1, 1)})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"])
def test_binary_with_broadcasting(op):
    low = 0.1 if op == "Pow" else None
    a, b = randn(2, 3, 4, low=low, high=2.0), randn(3, 1, low=low, high=2.0)
    check(
        [node(op, ["a", "b"])],
        {"a": a, "b": b},
        shapes=[{"a": randn(1, 3, 6, low=0.1, high=2), "b": randn(1, 1, low=0.1, high=2)}],
    )


def test_pow_with_a_constant_exponent_and_integer_division():
    check([node("Pow", ["x", "e"])], {"x": randn(2, 5)}, {"e": np.array(2.0, np.float32)})
    check([node("Pow", ["x", "e"])], {"x": randn(2, 5)}, {"e": np.array(3, I64)}, opset=15)
    a, b = np.array([7, -7, 9, 1], I64), np.array([2, 2, -4, 3], I64)
    types = {"y": onnx.TensorProto.INT64}
    check([node("Div", ["a", "b"])], {"a": a, "b": b}, out_types=types)
    check([node("Mod", ["a", "b"])], {"a": a, "b": b}, out_types=types)
    check([node("Mod", ["a", "b"], fmod=1)], {"a": a, "b": b}, out_types=types)


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons_feed_where(op):
    nodes = [node(op, ["a", "b"], ["c"]), node("Where", ["c", "a", "b"])]
    a, b = randn(2, 3, 4), randn(2, 3, 4)
    b[0, 0] = a[0, 0]  # ties
    check(nodes, {"a": a, "b": b}, shapes=[{"a": randn(1, 2, 3), "b": randn(1, 2, 3)}])


def test_logical_ops_and_where_with_a_constant_branch():
    nodes = [
        node("Greater", ["a", "zero"], ["p"]),
        node("Less", ["b", "zero"], ["q"]),
        node("And", ["p", "q"], ["pq"]),
        node("Or", ["p", "q"], ["p_or_q"]),
        node("Xor", ["pq", "p_or_q"], ["r"]),
        node("Not", ["r"], ["s"]),
        node("Where", ["s", "a", "fill"]),
    ]
    consts = {"zero": np.array(0, np.float32), "fill": np.array(-1.5, np.float32)}
    check(nodes, {"a": randn(3, 4), "b": randn(3, 4)}, consts)


def test_cast_round_trips_and_feeds_shapes():
    nodes = [
        node("Cast", ["x"], ["i"], to=onnx.TensorProto.INT64),
        node("Cast", ["i"], ["d"], to=onnx.TensorProto.DOUBLE),
        node("Cast", ["d"], ["y"], to=onnx.TensorProto.FLOAT),
    ]
    check(nodes, {"x": 5 * randn(2, 6)}, shapes=[{"x": 5 * randn(3, 1)}])
    shape = [
        node("Shape", ["x"], ["s"]),
        node("Cast", ["s"], ["sf"], to=onnx.TensorProto.FLOAT),
        node("Mul", ["sf", "half"], ["h"]),
        node("Cast", ["h"], ["hi"], to=onnx.TensorProto.INT64),
        node("Reshape", ["x", "minus1"], ["flat"]),
        node("Slice", ["flat", "zero", "hi", "zero"], ["y"]),
    ]
    consts = {
        "half": np.array([0.5], np.float32),
        "zero": np.array([0], I64),
        "minus1": np.array([-1], I64),
    }
    check(shape, {"x": randn(9)}, consts, shapes=[{"x": randn(4)}])


REDUCE_CASES = [
    ("ReduceSum", 11, {"axes": [1]}, None),
    ("ReduceSum", 11, {"axes": [0, -1], "keepdims": 0}, None),
    ("ReduceSum", 13, {}, [1, 2]),
    ("ReduceSum", 13, {"keepdims": 0}, [-1]),
    ("ReduceSum", 13, {}, None),
    ("ReduceSum", 13, {"noop_with_empty_axes": 1}, None),
    ("ReduceMax", 13, {"axes": [2]}, None),
    ("ReduceMax", 18, {"keepdims": 0}, [1]),
    ("ReduceMax", 18, {}, None),
    ("ReduceMean", 13, {"axes": [2, 3]}, None),
    ("ReduceMean", 18, {}, [2, 3]),
    ("ReduceMean", 18, {"noop_with_empty_axes": 1}, None),
    ("ReduceMin", 18, {"keepdims": 0}, [0, 2]),
    ("ReduceProd", 18, {}, [1]),
    ("ReduceL1", 18, {}, [3]),
    ("ReduceL2", 13, {"axes": [1]}, None),
    ("ReduceSumSquare", 18, {}, [2]),
    ("ReduceLogSumExp", 18, {"keepdims": 0}, [1, 3]),
]


@pytest.mark.parametrize(("op", "opset", "attrs", "axes"), REDUCE_CASES)
def test_reductions(op, opset, attrs, axes):
    consts = {} if axes is None else {"axes": np.array(axes, I64)}
    ins = ["x"] if axes is None else ["x", "axes"]
    check(
        [node(op, ins, **attrs)],
        {"x": randn(2, 3, 4, 5)},
        consts,
        opset=opset,
        shapes=[{"x": randn(1, 2, 3, 2)}],
    )


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("ArgMax", {}),
        ("ArgMax", {"axis": 1, "keepdims": 0}),
        ("ArgMin", {"axis": -1}),
        ("ArgMax", {"axis": 2, "select_last_index": 1}),
    ],
)
def test_arg_reductions(op, attrs):
    x = np.round(randn(3, 4, 5), 0)  # ties, so select_last_index matters
    check([node(op, ["x"], **attrs)], {"x": x}, out_types={"y": onnx.TensorProto.INT64})


@pytest.mark.parametrize(
    ("op", "opset", "attrs"),
    [
        ("Softmax", 11, {}),
        ("Softmax", 11, {"axis": 2}),
        ("Softmax", 13, {}),
        ("Softmax", 13, {"axis": 1}),
        ("LogSoftmax", 11, {}),
        ("LogSoftmax", 13, {"axis": 0}),
        ("Hardmax", 13, {"axis": 1}),
    ],
)
def test_softmax_opset_semantics(op, opset, attrs):
    check(
        [node(op, ["x"], **attrs)],
        {"x": randn(2, 3, 4)},
        opset=opset,
        shapes=[{"x": randn(3, 2, 5)}],
    )


@pytest.mark.parametrize(
    ("opset", "attrs", "split", "n"),
    [
        (11, {"axis": 1, "split": [1, 3, 2]}, None, 3),
        (11, {"axis": 1}, None, 3),
        (13, {"axis": 1}, [2, 4], 2),
        (13, {"axis": -1}, None, 2),
        (18, {"axis": 1, "num_outputs": 4}, None, 4),
        (18, {"axis": 2}, [1, 1, 2], 3),
    ],
)
def test_split(opset, attrs, split, n):
    outs = [f"y{i}" for i in range(n)]
    ins = ["x", "split"] if split is not None else ["x"]
    consts = {"split": np.array(split, I64)} if split is not None else {}
    nodes = [node("Split", ins, outs, **attrs)]
    shapes = [] if split is not None or "split" in attrs else [{"x": randn(1, 6, 4, 2)}]
    check(nodes, {"x": randn(2, 6, 4, 4)}, consts, opset=opset, outputs=outs, shapes=shapes)


SLICE_CASES = [
    ([1], [BIG], [1], None),
    ([0, 1], [-1, 3], [1, 2], None),
    ([-3], [-1], None, None),
    ([0, 0], [10, 10], [2, 3], [2, 3]),
    ([-1], [-BIG], [2], [-1]),
    ([4, 3], [0, -100], [2, 3], [-2, -1]),
    ([1], [0], [1], [1]),  # empty
]


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), SLICE_CASES)
@pytest.mark.parametrize("opset", [11, 13])
def test_slice(opset, starts, ends, axes, steps):
    consts = {"starts": np.array(starts, I64), "ends": np.array(ends, I64)}
    ins = ["x", "starts", "ends"]
    if axes is not None:
        consts["axes"] = np.array(axes, I64)
        ins.append("axes")
    if steps is not None:
        consts["steps"] = np.array(steps, I64)
        ins.append("steps")
    check(
        [node("Slice", ins)],
        {"x": randn(5, 4, 6, 7)},
        consts,
        opset=opset,
        shapes=[{"x": randn(6, 5, 3, 9)}],
    )


def test_expand_tile_and_range():
    check(
        [node("Expand", ["x", "s"])],
        {"x": randn(3, 1)},
        {"s": np.array([2, 1, 4], I64)},
        shapes=[{"x": randn(1, 4)}],
    )
    check([node("Tile", ["x", "r"])], {"x": randn(2, 3)}, {"r": np.array([2, 3], I64)})
    types = {"y": onnx.TensorProto.INT64}
    ints = {"a": np.array(2, I64), "b": np.array(-9, I64), "c": np.array(-3, I64)}
    check([node("Range", ["a", "b", "c"])], {}, ints, out_types=types)
    floats = {
        "a": np.array(0.5, np.float32),
        "b": np.array(3.2, np.float32),
        "c": np.array(0.3, np.float32),
    }
    check([node("Range", ["a", "b", "c"])], {}, floats)


def test_shape_subgraphs_follow_the_input_shape():
    """Range over a dim, ConstantOfShape of the shape, Shape → Gather → Concat → Reshape."""
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "one"], ["w"], axis=0),  # a scalar: x's dim 1
        node("Range", ["zero", "w", "step"], ["r"]),
        node("Cast", ["r"], ["rf"], to=onnx.TensorProto.FLOAT),
        node("Add", ["x", "rf"], ["xr"]),
        node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", 1, [1], [0.25])),
        node("Add", ["xr", "c"], ["xc"]),
        node("Shape", ["x"], ["s0"], start=0, end=1),
        node("Concat", ["s0", "minus1"], ["target"], axis=0),
        node("Reshape", ["xc", "target"], ["y"]),
    ]
    consts = {
        "one": np.array(1, I64),
        "zero": np.array(0, I64),
        "step": np.array(1, I64),
        "minus1": np.array([-1], I64),
    }
    check(
        nodes, {"x": randn(2, 3)}, consts, opset=15, shapes=[{"x": randn(5, 7)}, {"x": randn(1, 1)}]
    )


def test_constant_of_shape_integer_value_and_size():
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", 7, [1], [3])),
        node("Size", ["x"], ["n"]),
        node("Mul", ["c", "n"], ["y"]),
    ]
    check(
        nodes,
        {"x": randn(2, 3)},
        out_types={"y": onnx.TensorProto.INT64},
        shapes=[{"x": randn(4, 1)}],
    )


PAD_CASES = [
    (11, "constant", [0, 0, 1, 2, 0, 0, 3, 1], 1.5, None),
    (11, "reflect", [0, 0, 2, 1, 0, 0, 1, 3], None, None),
    (13, "edge", [0, 1, 2, 0, 0, 0, 1, 3], None, None),
    (13, "constant", [0, 0, -1, 2, 0, 0, 1, -2], None, None),
    (18, "constant", [1, 2, 0, 1], 0.5, [1, -1]),
    (18, "reflect", [2, 3, 1, 4], None, [2, 3]),
    (19, "wrap", [0, 0, 2, 3, 0, 0, 4, 1], None, None),
]


@pytest.mark.parametrize(("opset", "mode", "pads", "value", "axes"), PAD_CASES)
def test_pad(opset, mode, pads, value, axes):
    consts = {"pads": np.array(pads, I64)}
    ins = ["x", "pads"]
    if value is not None or axes is not None:
        ins.append("value" if value is not None else "")
        if value is not None:
            consts["value"] = np.array(value, np.float32)
    if axes is not None:
        ins.append("axes")
        consts["axes"] = np.array(axes, I64)
    check(
        [node("Pad", ins, mode=mode)],
        {"x": randn(2, 3, 5, 6)},
        consts,
        opset=opset,
        shapes=[{"x": randn(1, 2, 4, 7)}],
    )


def test_gather_with_negative_and_matrix_indices_and_gather_elements():
    idx = np.array([[0, -1], [2, 1]], I64)
    check(
        [node("Gather", ["x", "i"], axis=1)],
        {"x": randn(2, 4, 3)},
        {"i": idx},
        shapes=[{"x": randn(3, 3, 5)}],
    )
    check([node("Gather", ["x", "i"])], {"x": randn(4, 3)}, {"i": np.array(-2, I64)})
    g = np.array([[0, 1, 1], [2, 0, -1]], I64)
    check([node("GatherElements", ["x", "i"], axis=0)], {"x": randn(3, 3)}, {"i": g})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_flatten_transpose(opset):
    def axes(name, values, attrs):
        if opset >= 13:
            return [name], {}
        return [], {"axes": values}

    ins, attrs = axes("ua", [0, -1], None)
    nodes = [
        node("Unsqueeze", ["x", *ins], ["u"], **attrs),
        node("Transpose", ["u"], ["t"], perm=[1, 0, 2, 3, 4]),
    ]
    ins, attrs = axes("sa", [1], None)
    nodes += [node("Squeeze", ["t", *ins], ["s"], **attrs), node("Flatten", ["s"], axis=2)]
    consts = {"ua": np.array([0, -1], I64), "sa": np.array([1], I64)} if opset >= 13 else {}
    check(nodes, {"x": randn(3, 4, 5)}, consts, opset=opset, shapes=[{"x": randn(2, 1, 6)}])


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(mode):
    check(
        [node("DepthToSpace", ["x"], blocksize=2, mode=mode)],
        {"x": randn(2, 8, 3, 4)},
        shapes=[{"x": randn(1, 8, 2, 2)}],
    )
    check([node("SpaceToDepth", ["x"], blocksize=2)], {"x": randn(2, 3, 4, 6)})


def test_norms():
    check(
        [node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-3)],
        {"x": randn(2, 3, 5, 4)},
        {"s": randn(3), "b": randn(3)},
        shapes=[{"x": randn(1, 3, 2, 7)}],
    )
    check(
        [node("LayerNormalization", ["x", "s", "b"], axis=-1)],
        {"x": randn(2, 5, 6)},
        {"s": randn(6), "b": randn(6)},
        shapes=[{"x": randn(3, 2, 6)}],
    )
    check(
        [node("LayerNormalization", ["x", "s"], axis=1)], {"x": randn(2, 3, 4)}, {"s": randn(3, 4)}
    )
    check([node("LpNormalization", ["x"], axis=1, p=2)], {"x": randn(2, 3, 4)})


def test_constant_nodes_of_every_form():
    nodes = [
        helper.make_node("Constant", [], ["a"], value=helper.make_tensor("a", 1, [2], [1.0, 2.0])),
        helper.make_node("Constant", [], ["b"], value_float=0.5),
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, -1.0]),
        helper.make_node("Constant", [], ["s"], value_ints=[2, -1]),
        helper.make_node("Constant", [], ["k"], value_int=1),
        node("Mul", ["x", "a"], ["xa"]),
        node("Add", ["xa", "b"], ["xb"]),
        node("Mul", ["xb", "c"], ["xc"]),
        node("Reshape", ["xc", "s"], ["xr"]),
        node("Gather", ["xr", "k"], ["y"], axis=0),
    ]
    check(nodes, {"x": randn(3, 2)}, opset=13, shapes=[{"x": randn(5, 2)}])


def test_cast_like_and_nan_inf_tests():
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.5], np.float32)
    types = {"y": onnx.TensorProto.BOOL}
    check([node("IsNaN", ["x"])], {"x": x}, out_types=types)
    for pos, neg in [(1, 1), (1, 0), (0, 1)]:
        nodes = [node("IsInf", ["x"], detect_positive=pos, detect_negative=neg)]
        check(nodes, {"x": x}, out_types=types)
    nodes = [node("CastLike", ["x", "like"])]
    check(
        nodes,
        {"x": 3 * randn(4)},
        {"like": np.array([0], I64)},
        out_types={"y": onnx.TensorProto.INT64},
    )


def test_host_outputs_come_back_as_tensors_and_track_the_shape():
    model = model_of(
        [node("Shape", ["x"])], {"x": randn(2, 3)}, out_types={"y": onnx.TensorProto.INT64}
    )
    module = OnnxModule(model)
    for shape in [(2, 3), (5, 1)]:
        out = module(torch.zeros(shape))
        assert isinstance(out, torch.Tensor) and out.tolist() == list(shape)


def test_batch_norm_in_training_mode_is_refused():
    nodes = [node("BatchNormalization", ["x", "s", "b", "m", "v"], training_mode=1)]
    consts = {k: np.ones(3, np.float32) for k in "sbmv"}
    with pytest.raises(UserError, match=r"'BatchNormalization' \(training_mode 1\)"):
        OnnxModule(model_of(nodes, {"x": randn(2, 3, 4, 4)}, consts, opset=15))


def test_mish_thresholded_relu_shrink():
    check([node("Mish", ["x"])], {"x": 3 * randn(2, 5)}, opset=18)
    check([node("ThresholdedRelu", ["x"], alpha=0.5)], {"x": randn(2, 5)})
    check([node("Shrink", ["x"], lambd=0.3, bias=0.1)], {"x": randn(2, 5)})


@pytest.mark.parametrize("reduction", ["none", "add", "mul"])
def test_scatter_nd_and_scatter_elements(reduction):
    attrs = {} if reduction == "none" else {"reduction": reduction}
    idx = np.array([[0, 1], [2, -1]], I64)  # distinct points, one negative
    check(
        [node("ScatterND", ["x", "i", "u"], **attrs)],
        {"x": randn(3, 4, 5), "u": randn(2, 5)},
        {"i": idx},
        opset=16,
        shapes=[{"x": randn(4, 3, 2), "u": randn(2, 2)}],
    )
    rows = np.array([[1], [-1]], I64)
    check(
        [node("ScatterND", ["x", "i", "u"], **attrs)],
        {"x": randn(3, 4), "u": randn(2, 4)},
        {"i": rows},
        opset=16,
    )
    el = np.array([[1, 0, 2], [0, 2, -3]], I64)
    check(
        [node("ScatterElements", ["x", "i", "u"], axis=1, **attrs)],
        {"x": randn(2, 4), "u": randn(2, 3)},
        {"i": el},
        opset=16,
    )


@pytest.mark.parametrize("attrs", [{}, {"axis": 1, "largest": 0}, {"axis": 0}])
def test_topk(attrs):
    x = RNG_PERM.permutation(60).reshape(3, 4, 5).astype(np.float32)  # no ties
    check(
        [node("TopK", ["x", "k"], ["v", "i"], **attrs)],
        {"x": x},
        {"k": np.array([2], I64)},
        outputs=["v", "i"],
        out_types={"i": onnx.TensorProto.INT64},
    )


def test_nonzero_cumsum_onehot_trilu_einsum():
    x = np.array([[0, 1.5, 0], [2, 0, -1]], np.float32)
    check([node("NonZero", ["x"])], {"x": x}, out_types={"y": onnx.TensorProto.INT64})
    for attrs in [{}, {"exclusive": 1}, {"reverse": 1}, {"exclusive": 1, "reverse": 1}]:
        check([node("CumSum", ["x", "ax"], **attrs)], {"x": randn(3, 4)}, {"ax": np.array(1, I64)})
    idx = np.array([[0, 2], [-1, 1]], I64)
    consts = {"d": np.array(3, I64), "v": np.array([-1.0, 2.0], np.float32)}
    for axis in (-1, 0, 1):
        check([node("OneHot", ["i", "d", "v"], axis=axis)], {"i": idx}, consts)
    for upper, k in [(1, 0), (0, 1), (1, -1)]:
        check(
            [node("Trilu", ["x", "k"], upper=upper)],
            {"x": randn(2, 4, 5)},
            {"k": np.array(k, I64)},
            opset=14,
        )
    check(
        [node("Einsum", ["a", "b"], equation="bij,bjk->bik")],
        {"a": randn(2, 3, 4), "b": randn(2, 4, 5)},
        opset=12,
    )


def test_attribute_forms_of_older_opsets():
    """Pad-2 (pads and value attributes), Slice-1 (starts / ends / axes attributes), Clip-6
    (min / max attributes), Softmax-11's 2-D semantics are in test_softmax_opset_semantics."""
    x = {"x": randn(2, 3, 4, 5)}
    more = [{"x": randn(1, 2, 6, 3)}]
    pad = node("Pad", ["x"], mode="constant", pads=[0, 1, 2, 0, 0, 0, 1, 3], value=0.5)
    check([pad], x, opset=10, shapes=more)
    check([node("Pad", ["x"], mode="edge", pads=[0, 0, 1, 2, 0, 0, 2, 1])], x, opset=10)
    sl = node("Slice", ["x"], starts=[1, -3], ends=[100, -1], axes=[1, 3])
    check([sl], x, opset=9, shapes=more)
    check([node("Clip", ["x"], min=-0.5, max=0.7)], x, opset=6, shapes=more)
    check([node("Clip", ["x", "lo"])], x, {"lo": np.array(-0.2, np.float32)}, opset=13)


def test_dropout_with_training_mode_but_no_ratio():
    """Dropout-12+ with an absent ratio slot before training_mode: the default ratio 0.5 in
    training (the rule read the absent ratio as a number and failed), the identity in eval."""
    model = model_of(
        [node("Dropout", ["x", "", "t"])],
        {"x": np.ones((4, 50), np.float32)},
        {"t": np.array(True)},
        opset=13,
    )
    module = OnnxModule(model)
    torch.manual_seed(0)
    y = module.train()(torch.ones(4, 50))
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept cells scaled by 1 / (1 - 0.5)
    assert torch.equal(module.eval()(torch.ones(4, 50)), torch.ones(4, 50))


@pytest.mark.parametrize("size", [1, 3, 5])  # ONNX Runtime refuses even sizes, and so do we
def test_lrn(size):
    attrs = {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 1.5}
    check(
        [node("LRN", ["x"], **attrs)], {"x": randn(2, 6, 3, 4)}, shapes=[{"x": randn(1, 3, 2, 5)}]
    )


@pytest.mark.parametrize(
    ("shape", "idx", "batch_dims"),
    [
        ((3, 4, 5), [[0, 1], [2, -1]], 0),
        ((3, 4, 5), [[[1], [0]], [[2], [2]]], 0),
        ((2, 3, 4), [[1, 0], [2, 3]], 1),
        ((2, 3, 4, 5), [[[0], [2], [1]], [[1], [1], [-1]]], 2),
    ],
)
def test_gather_nd(shape, idx, batch_dims):
    check(
        [node("GatherND", ["x", "i"], batch_dims=batch_dims)],
        {"x": randn(*shape)},
        {"i": np.array(idx, I64)},
        opset=13,
    )


def test_lrn_of_even_size_is_refused_by_name():
    model = model_of([node("LRN", ["x"], size=2)], {"x": randn(1, 4, 2, 2)})
    with pytest.raises(UserError, match=r"'LRN' \(even size 2\) \(node 'lrn_y'\)"):
        OnnxModule(model)
