"""Shape arithmetic folded without a runtime (graph.shape_arith): torch's exported ``chunk``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.graph.index import GraphIndex
from onnx_sk.graph.shape_arith import fold_ints, infer_folded
from onnx_sk.graph.shapes import infer_shapes


def _int(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)


def _chunk_model(batch: int | str = "N") -> onnx.ModelProto:
    """x [batch, 16, 8, 8] → Relu → torch's chunk(2, dim=1) as exported → Add of the halves."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx"], ["c"], axis=0),
        helper.make_node("Add", ["c", "one"], ["c1"]),
        helper.make_node("Div", ["c1", "two"], ["half"]),
        helper.make_node("Mul", ["half", "one"], ["end0"]),
        helper.make_node("Mul", ["half", "two"], ["end1"]),
        helper.make_node("Slice", ["r", "zero", "end0", "axes"], ["a"]),
        helper.make_node("Slice", ["r", "end0", "end1", "axes"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    inits = [_int("idx", 1), _int("one", [1]), _int("two", [2]), _int("zero", [0])]
    inits.append(_int("axes", [1]))
    graph = helper.make_graph(
        nodes, "chunk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_chunk_bounds_fold_with_a_symbolic_batch():
    model = _chunk_model()
    shapes = infer_shapes(model)
    index = GraphIndex(model.graph)
    assert shapes["r"] == (None, 16, 8, 8)
    assert fold_ints(index, shapes, "end0").tolist() == [8]
    assert fold_ints(index, shapes, "end1").tolist() == [16]


def test_a_symbolic_dim_is_never_folded():
    model = _chunk_model()
    model.graph.initializer[0].CopyFrom(_int("idx", 0))  # Gather the batch dim, not channels
    shapes = infer_shapes(model)
    assert fold_ints(GraphIndex(model.graph), shapes, "end0") is None
    # with a static batch it folds: (1 + 1) / 2 = 1
    static = _chunk_model(batch=1)
    static.graph.initializer[0].CopyFrom(_int("idx", 0))
    assert fold_ints(GraphIndex(static.graph), infer_shapes(static), "end0").tolist() == [1]


def test_integer_division_truncates_toward_zero():
    nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Neg", ["q"], ["n"])]
    graph = helper.make_graph(
        nodes, "div", [], [helper.make_tensor_value_info("n", TensorProto.INT64, None)],
        [_int("a", [-7, 7, -8]), _int("b", [2, -2, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    index = GraphIndex(model.graph)
    assert fold_ints(index, {}, "q").tolist() == [-3, -3, -2]  # as ONNX Runtime computes it
    assert fold_ints(index, {}, "n").tolist() == [3, 3, 2]


def test_float_values_and_unknown_ops_are_not_folded():
    nodes = [
        helper.make_node("Cast", ["a"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["f"], ["i"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["a", "zero"], ["s"]),
    ]
    graph = helper.make_graph(
        nodes, "f", [], [helper.make_tensor_value_info("i", TensorProto.INT64, None)],
        [_int("a", [1, 2]), _int("zero", 0)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    index = GraphIndex(model.graph)
    assert fold_ints(index, {}, "i") is None and fold_ints(index, {}, "s") is None


def test_inference_goes_past_the_chunk():
    model = _chunk_model()
    plain, folded = infer_shapes(model), infer_folded(model)
    assert plain.get("a") is None or None in plain["a"][1:]  # ONNX inference stops at Div
    assert folded["a"] == folded["b"] == folded["y"] == (None, 8, 8, 8)
    assert len(model.graph.initializer) == 5  # the model itself is untouched
    assert [n.input[2] for n in model.graph.node if n.op_type == "Slice"] == ["end0", "end1"]
