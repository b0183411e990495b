"""compare: top-1 only where it means something (--class-axis, 2-D [N, C]), --slice, streaming."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, run_cli
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.errors import UserError
from onnx_sk.runtime.compare import (
    compare,
    parse_class_axes,
    parse_slices,
    random_feeds,
)


def _scaled(path, dims, scale: np.ndarray, name: str = "y") -> str:
    """x → Mul(x, scale) → y: a model whose outputs are the input times a constant."""
    node = helper.make_node("Mul", ["x", "s"], [name])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(scale.astype(np.float32), "s")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return str(path)


@pytest.fixture
def detector(tmp_path):
    """[1, 6, anchors] outputs (YOLO-style: 2 box coords then 4 class scores): B flips the sign
    of the class scores, so the boxes agree and the classes do not."""
    same = np.ones((1, 6, 1), np.float32)
    flipped = same.copy()
    flipped[:, 2:] = -1
    a = _scaled(tmp_path / "a.onnx", [1, 6, "anchors"], same)
    b = _scaled(tmp_path / "b.onnx", [1, 6, "anchors"], flipped)
    return a, b


def test_no_top1_for_a_detector_output_unless_the_class_axis_is_given(detector):
    a, b = detector
    (row,) = compare(a, b, samples=3, input_shapes={"x": (1, 6, 50)})
    assert row.top1_agreement is None and row.class_axis is None
    (row,) = compare(a, b, samples=3, input_shapes={"x": (1, 6, 50)}, class_axes={"": 1})
    assert row.class_axis == 1 and 0.0 <= row.top1_agreement < 0.5
    (row,) = compare(a, a, samples=3, input_shapes={"x": (1, 6, 50)}, class_axes={"y": -2})
    assert row.class_axis == 1 and row.top1_agreement == 1.0


def test_slice_compares_only_that_part(detector):
    a, b = detector
    shapes = {"x": (1, 6, 50)}
    (whole,) = compare(a, b, samples=2, input_shapes=shapes)
    assert whole.cosine < 0.9 and whole.max_abs_diff > 0
    (boxes,) = compare(a, b, samples=2, input_shapes=shapes, slices=parse_slices(["y:1:0:2"]))
    assert boxes.cosine == pytest.approx(1.0) and boxes.max_abs_diff == 0.0
    assert boxes.shape == [2, 2, 50] and boxes.slice == {"axis": 1, "start": 0, "stop": 2}
    (classes,) = compare(  # the API takes the command line's forms too
        a, b, samples=2, input_shapes=shapes, slices=["y:1:2:"], class_axes=["1"]
    )
    assert classes.cosine == pytest.approx(-1.0) and classes.top1_agreement is not None


def test_two_d_logits_get_top1_by_default(tmp_path):
    a = _scaled(tmp_path / "a.onnx", ["N", 5], np.ones(5))
    b = _scaled(tmp_path / "b.onnx", ["N", 5], np.array([1, 1, 1, 1, -1.0]))
    (row,) = compare(a, a, samples=4, input_shapes={"x": (3, 5)})
    assert row.top1_agreement == 1.0 and row.class_axis == 1 and row.shape == [12, 5]
    (row,) = compare(a, b, samples=4, input_shapes={"x": (3, 5)})
    assert 0.0 < row.top1_agreement < 1.0


def test_streamed_sums_equal_the_concatenated_outputs(tmp_path):
    """The running sums give what the outputs concatenated over all samples give."""
    scale = np.array([1.0, -0.5, 2.0, 0.25])
    a = _scaled(tmp_path / "a.onnx", [1, 4, "H", "W"], np.ones((4, 1, 1)))
    b = _scaled(tmp_path / "b.onnx", [1, 4, "H", "W"], scale.reshape(4, 1, 1))
    shapes = {"x": (1, 4, 8, 8)}
    (row,) = compare(a, b, samples=5, seed=3, input_shapes=shapes)
    xs = np.concatenate(list(f["x"] for f in random_feeds(onnx.load(a), 5, 3, shapes)))
    ys = xs * scale.reshape(1, 4, 1, 1).astype(np.float32)
    x64, y64 = xs.astype(np.float64).ravel(), ys.astype(np.float64).ravel()
    assert row.shape == [5, 4, 8, 8]
    assert row.max_abs_diff == pytest.approx(np.abs(y64 - x64).max())
    assert row.mean_abs_diff == pytest.approx(np.abs(y64 - x64).mean())
    cos = x64 @ y64 / np.linalg.norm(x64) / np.linalg.norm(y64)
    assert row.cosine == pytest.approx(cos)


def test_random_feeds_are_drawn_one_at_a_time(tmp_path):
    a = _scaled(tmp_path / "a.onnx", [1, 4, "H", "W"], np.ones((4, 1, 1)))
    feeds = random_feeds(onnx.load(a), 2000, 0, None)
    first = next(feeds)  # a generator: nothing is drawn for the samples not yet asked for
    assert first["x"].shape == (1, 4, 224, 224)


def test_a_batch_one_model_runs_on_a_file_of_many_samples(tmp_path):
    a = _scaled(tmp_path / "a.onnx", [1, 3], np.ones(3))
    b = _scaled(tmp_path / "b.onnx", [1, 3], np.array([1.0, 1.0, -1.0]))
    data = tmp_path / "in.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32))
    (row,) = compare(a, b, inputs=data)
    assert row.shape == [7, 3] and row.top1_agreement is not None


def test_cli_json_and_table(detector):
    a, b = detector
    proc = run_cli(
        "compare", a, b, "--input-shape", "x:1x6x20", "--samples", "2", "--slice", "y:1:2:",
        "--class-axis", "y:1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["outputs"]
    assert row["slice"] == {"axis": 1, "start": 2, "stop": None} and row["class_axis"] == 1
    assert row["top1_agreement"] is not None and row["shape"] == [2, 4, 20]
    proc = run_cli("compare", a, b, "--input-shape", "x:1x6x20", "--slice", "y:1:2:")
    assert proc.returncode == 0 and "y (axis 1 [2:])" in proc.stdout


def test_bad_class_axis_and_slice(detector):
    a, b = detector
    with pytest.raises(UserError, match=r"^--class-axis 'y:one': expected AXIS or OUTPUT:AXIS"):
        parse_class_axes(["y:one"])
    with pytest.raises(UserError, match=r"^--slice 'y:1': expected OUTPUT:AXIS:START:STOP"):
        parse_slices(["y:1"])
    assert_clean_error(
        run_cli("compare", a, b, "--input-shape", "x:1x6x20", "--class-axis", "5"),
        "--class-axis 5 is out of range for output 'y' of shape [1, 6, 20]",
    )
    assert_clean_error(
        run_cli("compare", a, b, "--input-shape", "x:1x6x20", "--slice", "z:1:0:2"),
        "--slice names output 'z', which the models do not have (outputs: y)",
    )
    assert_clean_error(
        run_cli("compare", a, b, "--input-shape", "x:1x6x20", "--slice", "y:1:9:"),
        "--slice y: 9: on axis 1 of shape [1, 6, 20] is empty",
    )
    assert_clean_error(
        run_cli("compare", a, b, "--input-shape", "x:1x6x20", "--slice", "y:7:0:1"),
        "--slice y: axis 7 is out of range for an output of rank 3",
    )
