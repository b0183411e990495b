"""ONNX Runtime sessions: ORT's own log lines never reach stderr (only onnx-sk's one line)."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import run_cli
from onnx import TensorProto, helper, numpy_helper


def test_ort_log_lines_do_not_reach_stderr(tmp_path, rng):
    """A Reshape that fails at run time made ORT print coloured ``[E:onnxruntime:...]`` lines
    before onnx-sk's own error line; now stderr is that one line only."""
    w0 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w0")
    w1 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w1")
    shape = numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "s")
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Conv", ["r", "w0"], ["c"], name="conv0", pads=[1] * 4),
        helper.make_node("Conv", ["c", "w1"], ["y"], name="conv1", pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape, w0, w1],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    proc = run_cli("optimize", path, tmp_path / "o.onnx")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "error: the original model does not run in ONNX Runtime on random input: "
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node."
    )
    assert "[E:onnxruntime" not in proc.stderr and "\x1b[" not in proc.stderr
    assert not (tmp_path / "o.onnx").exists()
