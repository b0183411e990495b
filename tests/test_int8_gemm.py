"""--precision auto: fully connected layers (Gemm) in int8 QDQ form, fused by ONNX Runtime into
QGemm, chosen by timing the network like the convs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.cli.optimize import precision_line
from onnx_sk.graph.index import ConstantIndex
from onnx_sk.graph.qdq import activation_tensors, insert_qdq, int8_gemms, why_not_int8_gemm
from onnx_sk.runtime.quantize import activation_ranges, optimized_ops
from onnx_sk.runtime.session import session


def _head(trans_b: int, bias: bool, k: int = 48, n: int = 24, **attrs) -> onnx.ModelProto:
    """x [2, k] → Gemm → Relu → y [2, n]."""
    rng = np.random.default_rng(trans_b + 2 * bias)
    w = (rng.standard_normal((n, k) if trans_b else (k, n)) / np.sqrt(k)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b"))
        inputs.append("b")
    nodes = [
        helper.make_node("Gemm", inputs, ["g"], "fc", transB=trans_b, **attrs),
        helper.make_node("Relu", ["g"], ["y"], "relu"),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("trans_b, bias", [(1, True), (0, True), (1, False)])
def test_gemm_in_qdq_form_is_one_qgemm_close_to_fp32(trans_b, bias):
    model = _head(trans_b, bias)
    assert int8_gemms(model) == {"g": "fc"}
    x = np.random.default_rng(7).standard_normal((2, 48)).astype(np.float32)
    tensors = activation_tensors(model.graph, ["g"])
    assert tensors == ["x", "y"]  # the Relu folded into the output's quantization
    ranges = activation_ranges(model, tensors, iter([{"x": x}]))[0]
    written = onnx.ModelProto()
    written.CopyFrom(model)
    insert_qdq(written.graph, ["g"], ranges)
    onnx.checker.check_model(written)
    assert optimized_ops(written)["QGemm"] == 1
    want = session(model).run(None, {"x": x})[0].ravel().astype(np.float64)
    got = session(written, opt_level="all").run(None, {"x": x})[0].ravel().astype(np.float64)
    assert got @ want / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.999


@pytest.mark.parametrize(
    "attrs, why",
    [
        ({"alpha": 0.5}, "alpha, beta or transA not the defaults"),
        ({"transA": 1}, "alpha, beta or transA not the defaults"),
    ],
)
def test_gemm_that_cannot_be_int8(attrs, why):
    model = _head(1, True, **attrs)
    node = model.graph.node[0]
    assert why_not_int8_gemm(node, ConstantIndex(model.graph)) == why
    assert int8_gemms(model) == {}


def test_gemm_with_a_weight_input_or_odd_bias_stays_float():
    model = _head(1, True)
    model.graph.initializer[1].CopyFrom(
        numpy_helper.from_array(np.zeros(3, np.float32), "b")
    )  # a bias of the wrong width
    node = model.graph.node[0]
    consts = ConstantIndex(model.graph)
    assert why_not_int8_gemm(node, consts) == (
        "bias not a constant float32 vector of the output width"
    )
    del model.graph.initializer[0]  # the weight becomes a graph input
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [24, 48]))
    assert why_not_int8_gemm(node, ConstantIndex(model.graph)) == (
        "weights not a constant float32 matrix"
    )


def _classifier() -> onnx.ModelProto:
    """3×3 conv (3→16), Relu, 3×3 conv (16→32), Relu, global pool, flatten, Gemm (32→64,
    transB) + Relu, Gemm (64→10): an image classifier with a fully connected head."""
    rng = np.random.default_rng(0)

    def he(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(he(16, 3, 3, 3), "w0"),
        numpy_helper.from_array(he(32, 16, 3, 3), "w1"),
        numpy_helper.from_array(he(64, 32), "f0"),
        numpy_helper.from_array(np.zeros(64, np.float32), "fb0"),
        numpy_helper.from_array((he(10, 64)).T.copy(), "f1"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fb1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], "conv0", pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"], "relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], "conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "f0", "fb0"], ["h"], "fc0", transB=1),
        helper.make_node("Relu", ["h"], ["rh"], "relu_h"),
        helper.make_node("Gemm", ["rh", "f1", "fb1"], ["y"], "fc1"),
    ]
    graph = helper.make_graph(
        nodes, "clf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_optimize_auto_reports_the_gemms_it_leaves_in_int8(tmp_path):
    src = tmp_path / "clf.onnx"
    onnx.save(_classifier(), src)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(3).standard_normal((8, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "out.onnx"
    _, report = onnx_sk.optimize(
        src, out, objective="latency", precision="auto", calibration=cal,
        lut=tmp_path / "lut.json",
    )  # fmt: skip
    p = report.precision
    assert p["context"]  # the Gemms took part in the trials (the first: every unit in int8)
    assert set(p["int8_gemms"]) <= {"fc0", "fc1"}
    assert not set(p["int8_gemms"]) & set(p["int8_convs"])
    assert optimized_ops(onnx.load(out))["QGemm"] == len(p["int8_gemms"])
    assert p["check"]["ort_ops"].get("QGemm", 0) == len(p["int8_gemms"])
    assert report.message.endswith(f"({len(p['int8_convs'])} in int8)") or not p["int8_convs"]


def test_precision_line_counts_the_int8_gemms():
    p = {"precision": "auto", "int8_convs": ["conv1"], "int8_gemms": ["fc0", "fc1"]}
    assert precision_line(p) == "precision auto: 1 int8 conv and 2 int8 fully connected layers"


@pytest.mark.parametrize("bound", ["w", "b"])
def test_a_gemm_whose_weights_training_info_updates_stays_float(bound):
    """int8_gemms saw only the graph: a Gemm whose weight or bias training_info updates could
    go int8 under --precision auto (its initializer replaced by a quantized one, the binding
    left dangling), as convs could before."""
    model = _head(1, True)
    info = model.training_info.add()
    step = helper.make_node("Identity", [bound], [f"{bound}_new"])
    info.algorithm.CopyFrom(helper.make_graph([step], "step", [], []))
    info.update_binding.add(key=bound, value=f"{bound}_new")
    assert int8_gemms(model) == {}
    node = model.graph.node[0]
    assert why_not_int8_gemm(node, ConstantIndex(model.graph), {bound}) == (
        "weights are updated by the model's training_info"
    )
