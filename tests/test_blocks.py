"""The student cut into blocks where one node makes several anchors (a detector head's Split whose
outputs are all graph outputs): no empty block, every anchor made by exactly one block, and
distillation runs on it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.runtime.session import session
from onnx_sk.training.blocks import anchors, cut

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _split_head(path) -> onnx.ModelProto:
    """x → Conv 3×3 (4 → 7) → Split [3, 2, 2] → Sigmoid on the first part; all three outputs."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((7, 4, 3, 3)).astype(np.float32) * 0.3, "w")
    sizes = numpy_helper.from_array(np.array([3, 2, 2], np.int64), "sizes")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["head"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Split", ["head", "sizes"], ["logit", "size", "offset"], axis=1),
        helper.make_node("Sigmoid", ["logit"], ["heatmap"]),
    ]
    outs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, 8, 8])
        for name, c in (("heatmap", 3), ("size", 2), ("offset", 2))
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        outs,
        [w, sizes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return model


def test_second_output_of_a_node_is_an_output_of_the_block_that_holds_it(tmp_path):
    model = _split_head(tmp_path / "m.onnx")
    names = anchors(model, model)
    assert names == ["head", "size", "offset", "heatmap"]
    blocks = cut(model, names)
    assert [b.anchor for b in blocks] == ["head", "size", "heatmap"]
    assert blocks[1].outputs == ["size", "logit", "offset"]  # offset: made by its Split
    assert sum(len(b.model.graph.node) for b in blocks) == len(model.graph.node)
    x = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = dict(zip(["heatmap", "size", "offset"], session(model).run(None, {"x": x}), strict=True))
    env = {"x": x}
    for b in blocks:
        env.update(
            zip(b.outputs, session(b.model).run(None, {k: env[k] for k in b.inputs}), strict=True)
        )
    for name, value in want.items():
        np.testing.assert_array_equal(env[name], value)


def test_distill_runs_on_a_split_head(tmp_path):
    """Before the fix the block of ``offset`` was empty and distill failed with KeyError."""
    teacher = tmp_path / "m.onnx"
    _split_head(teacher)
    x = np.random.default_rng(2).standard_normal((24, 4, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    r = onnx_sk.distill(
        teacher, teacher, tmp_path / "o.onnx", tmp_path / "d.npz", epochs=1, lr=1e-9
    )
    assert [row["stage"] for row in r.curve] == ["blocks", "end-to-end"]
    assert all(f.cosine > 1 - 1e-6 for f in r.after)
