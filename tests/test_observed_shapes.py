"""Conv sizes from one ONNX Runtime run where shape inference stops (torch's exported chunk)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.runtime.observed import concrete_inputs, observed_shapes
from onnx_sk.runtime.session import session


def _chunked(batch: int | str = 1) -> onnx.ModelProto:
    """x → conv A (32→32) → the first half of its channels, as torch exports ``chunk``
    (Shape → Gather → Div → Unsqueeze → Slice) → conv B (16→32)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32), "wa"),
        numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32), "wb"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], "A", pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["a"], ["shape"], "shape"),
        helper.make_node("Gather", ["shape", "one"], ["c"], "gather", axis=0),
        helper.make_node("Div", ["c", "two"], ["half"], "div"),
        helper.make_node("Unsqueeze", ["half", "axis0"], ["end"], "unsq"),
        helper.make_node("Slice", ["a", "zero", "end", "axis1"], ["s"], "slice"),
        helper.make_node("Conv", ["s", "wb"], ["y"], "B", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "chunked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 32, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inference_stops_and_one_run_sizes_the_convs():
    model = _chunked()
    s = infer_shapes(model).get("s")
    assert s is None or None in s  # inference cannot size it: what the fallback is for
    seen = observed_shapes(model, {}, ["s", "y", "x"])
    assert seen == {"s": (1, 16, 20, 20), "y": (1, 32, 20, 20), "x": (1, 32, 20, 20)}
    assert concrete_inputs(_chunked("n"), {}) is None  # a symbolic dim: nothing to run at
    assert observed_shapes(_chunked("n"), {}, ["s"]) == {}
    assert observed_shapes(_chunked("n"), {"x": (1, 32, 20, 20)}, ["s"]) == {"s": (1, 16, 20, 20)}


def test_latency_objective_measures_the_convs_after_a_chunk(tmp_path):
    """Before: conv B was kept, "input size unknown: give --input-shape" although the input's
    shape is static. Now it is measured and replaced (symbolic batch: counted at batch 1), and
    the rewrite is verified as always."""
    src = tmp_path / "chunked.onnx"
    onnx.save(_chunked("batch"), src)
    out = tmp_path / "out.onnx"
    _, report = onnx_sk.optimize(
        src, out, objective="latency", lut=tmp_path / "lut.json", include_first=True
    )
    rows = {c["name"]: c for c in report.convs}
    assert "input size unknown" not in str(rows["B"].get("reason"))
    assert rows["B"]["design"] is not None or "faster" in str(rows["B"].get("reason"))
    x = np.random.default_rng(1).standard_normal((2, 32, 20, 20)).astype(np.float32)
    got = session(out).run(None, {"x": x})[0]
    assert got.shape == (2, 32, 20, 20)  # the batch stays symbolic


def test_widen_follows_the_channels_through_a_chunk(tmp_path):
    """Mode 2 on the chunked model (symbolic batch): the Slice's bounds are folded from the
    static channel dim (graph.shape_arith), so the split space widens instead of freezing, and
    the widened model keeps its symbolic batch."""
    src = tmp_path / "chunked.onnx"
    onnx.save(_chunked("batch"), src)
    out = tmp_path / "wide.onnx"
    _, report = onnx_sk.optimize(src, out, mode="widen", width_scale=2.0, design="none")
    w = report.widen
    assert w is not None and not w["frozen_by"] and w["spaces_free"] == 2
    layers = {r["name"]: r for r in w["layers"]}
    assert layers["A"]["c_out_after"] == 64 and layers["B"]["c_in_after"] == 32
    x = np.random.default_rng(1).standard_normal((2, 32, 20, 20)).astype(np.float32)
    assert session(out).run(None, {"x": x})[0].shape == (2, 32, 20, 20)
