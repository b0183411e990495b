"""--precision fp32|int8|auto: int8 convs in QDQ form that ONNX Runtime runs with its int8
kernels, chosen by measured latency (auto), checked against the fp32 model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, run_cli
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.errors import UserError
from onnx_sk.graph.qdq import act_params, activation_tensors, insert_qdq, weight_params
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.runtime.latency import shape_key
from onnx_sk.runtime.lut import this_machine
from onnx_sk.runtime.quantize import INT8_CONV_OPS, activation_ranges, optimized_ops
from onnx_sk.runtime.session import session

H = W = 24


def _smooth(rng: np.random.Generator, n: int) -> np.ndarray:
    """Image-like inputs: a blurred random field per channel (neighbouring pixels correlate)."""
    x = rng.standard_normal((n, 3, H + 4, W + 4))
    k = np.ones(5) / 5
    for axis in (2, 3):
        x = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, x)
    return (x * 2).astype(np.float32)


def _cnn(rng: np.random.Generator) -> onnx.ModelProto:
    """A small classifier: 3×3 conv (3→16, stem), Relu, 3×3 conv (16→32), Relu, 3×3 conv
    (32→32), Relu, 1×1 conv (32→32), global average pool, flatten: [1, 32] logits. Weights
    He-scaled so the activations keep their scale (as in a trained network)."""

    def he(c_out: int, c_in: int, k: int) -> np.ndarray:
        std = np.sqrt(2.0 / (c_in * k * k))
        return (rng.standard_normal((c_out, c_in, k, k)) * std).astype(np.float32)

    layers = [(16, 3, 3), (32, 16, 3), (32, 32, 3), (32, 32, 1)]
    nodes, inits, x = [], [], "x"
    for i, (c_out, c_in, k) in enumerate(layers):
        w, b = f"w{i}", f"b{i}"
        inits += [
            numpy_helper.from_array(he(c_out, c_in, k), w),
            numpy_helper.from_array((rng.standard_normal(c_out) * 0.1).astype(np.float32), b),
        ]
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [f"c{i}"], f"conv{i}", kernel_shape=[k, k], pads=[pad] * 4
            )
        )
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], f"relu{i}"))
            x = f"r{i}"
        else:
            x = f"c{i}"
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"], "pool"),
        helper.make_node("Flatten", ["pool"], ["y"], "flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def cnn_case(tmp: Path, samples: int) -> dict[str, Path]:
    """``_cnn`` saved in ``tmp`` with ``samples`` calibration samples (seed 0)."""
    rng = np.random.default_rng(0)
    model = tmp / "cnn.onnx"
    onnx.save(_cnn(rng), model)
    cal = tmp / "cal.npz"
    np.savez(cal, x=_smooth(rng, samples))
    return {"dir": tmp, "model": model, "cal": cal}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    """The model and its calibration samples."""
    return cnn_case(tmp_path_factory.mktemp("precision"), 16)


def _outputs(path: Path, xs: np.ndarray) -> np.ndarray:
    sess = session(path, opt_level="all")
    return np.concatenate([sess.run(None, {"x": x[None]})[0] for x in xs])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _int8_nodes(model: onnx.ModelProto) -> int:
    """Conv nodes whose weight comes through a DequantizeLinear of an int8 constant."""
    ints = {i.name for i in model.graph.initializer if i.data_type == TensorProto.INT8}
    dq = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in ints
    }
    return sum(1 for n in model.graph.node if n.op_type == "Conv" and n.input[1] in dq)


@pytest.mark.parametrize("precision", ["int8", "auto"])
def test_precision_writes_int8_that_ort_runs(case, precision):
    tmp = case["dir"]
    lut = tmp / f"lut_{precision}.json"
    out = tmp / f"cnn_{precision}.onnx"
    common = dict(objective="latency", lut=lut, calibration=case["cal"], seed=0)
    _, report = onnx_sk.optimize(case["model"], out, precision=precision, **common)
    p = report.precision
    assert p is not None and p["warning"] is None
    int8_names = set(p["int8_convs"])
    # auto revises even an all-fp32 plan in context, so it always calibrates
    assert p["ranges_from"] == ("calibration" if int8_names or precision == "auto" else None)
    assert {c["name"] for c in report.convs if c["precision"] == "int8"} == int8_names
    if precision == "int8":  # every conv, the kept stem and the 1×1 included
        assert int8_names == {"conv0", "conv1", "conv2", "conv3"}
    written = onnx.load(out)
    n_int8 = _int8_nodes(written)
    assert n_int8 >= len(int8_names)
    assert (n_int8 > 0) == bool(int8_names)
    ops = optimized_ops(written)  # ONNX Runtime's CPU provider runs them with its int8 kernels
    assert sum(ops[k] for k in INT8_CONV_OPS) == n_int8
    assert p.get("check", {}).get("int8_kernels", 0) == n_int8
    # the LUT holds an fp32 and an int8 entry per measured shape
    entries = json.loads(lut.read_text())["entries"]
    int8_keys = [k for k in entries if k.endswith("-int8")]
    assert int8_keys and all(k.removesuffix("-int8") in entries for k in int8_keys)
    assert all(entries[k]["precision"] == "int8" and "dense_int8" in entries[k] for k in int8_keys)
    if int8_names:  # the pass's own check: against the fp32 model it rewrote, calibration data
        assert min(p["check"]["cosine_vs_fp32"]) >= 0.99
    assert report.fidelity is not None  # measured on the int8 model


def test_int8_close_to_the_fp32_model(case):
    """--precision int8 with a counted objective (the same designs as fp32): every conv int8,
    outputs within cosine 0.99 of the fp32 rewrite on held-out samples of the calibration
    distribution."""
    tmp = case["dir"]
    out, ref = tmp / "cnn_params_int8.onnx", tmp / "cnn_params_fp32.onnx"
    args = dict(calibration=case["cal"], objective="params")
    _, report = onnx_sk.optimize(case["model"], out, precision="int8", **args)
    _, fp32 = onnx_sk.optimize(case["model"], ref, **args)
    assert [c["design"] for c in report.convs] == [c["design"] for c in fp32.convs]
    assert report.precision["int8_convs"] == ["conv0", "conv1", "conv2", "conv3"]
    assert report.precision["check"]["int8_kernels"] == _int8_nodes(onnx.load(out)) >= 4
    xs = _smooth(np.random.default_rng(1), 8)
    assert _cosine(_outputs(ref, xs), _outputs(out, xs)) >= 0.99


def test_random_ranges_warn(case):
    _, report = onnx_sk.optimize(case["model"], None, precision="int8")
    assert report.precision["ranges_from"] == "random"
    assert "give --calibration with real data" in report.precision["warning"]


def test_max_error_keeps_int8_within_budget(case):
    args = dict(precision="int8", calibration=case["cal"], objective="params")
    _, tight = onnx_sk.optimize(case["model"], None, max_error=1e-6, **args)
    # nothing fits τ = 1e-6: no SK design, and no int8 conv
    assert tight.precision["int8_convs"] == [] and len(tight.precision["over_budget"]) == 4
    assert all(e > 1e-6 for e in tight.precision["int8_errors"].values())
    _, loose = onnx_sk.optimize(case["model"], None, max_error=0.9, **args)
    errors = loose.precision["int8_errors"]
    assert sorted(loose.precision["int8_convs"]) == sorted(n for n, e in errors.items() if e <= 0.9)
    assert loose.precision["int8_convs"]  # the dense int8 convs are well within 0.9


def test_qdq_conv_relu_is_one_int8_kernel():
    """A Conv read only by a Relu is quantized after the Relu; ORT fuses it into QLinearConv."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 4, 3, 3)) * 0.2).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"], "relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    want = session(model).run(None, {"x": x})[0]
    tensors = activation_tensors(model.graph, ["c"])
    assert tensors == ["x", "y"]  # the Relu's output, not the conv's
    insert_qdq(
        model.graph, ["c"], {"x": (float(x.min()), float(x.max())), "y": (0.0, float(want.max()))}
    )
    onnx.checker.check_model(model, full_check=True)
    assert [n.output[0] for n in model.graph.node][-1] == "y"  # the graph output kept its name
    assert "w" not in {i.name for i in model.graph.initializer}  # the fp32 kernel dropped
    ops = optimized_ops(model)
    assert ops["QLinearConv"] == 1 and ops["Relu"] == 0 and ops["Conv"] == 0
    got = session(model, opt_level="all").run(None, {"x": x})[0]
    step = want.max() / 255  # one output quantization step, plus the inputs' and weights'
    assert np.abs(got - want).max() <= 4 * step


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_qdq_conv_relu6_is_one_int8_kernel(low):
    """A Conv read only by a Clip from 0 (ReLU6, MobileNet's) is quantized after the Clip and
    ORT folds the Clip into QLinearConv; a Clip from another bound is not folded."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 4, 3, 3)) * 0.2).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
            helper.make_node("Clip", ["c", "lo", "hi"], ["y"], "relu6"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(low), "lo"),
         numpy_helper.from_array(np.float32(6.0), "hi")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    want = session(model).run(None, {"x": x})[0]
    tensors = activation_tensors(model.graph, ["c"])
    assert tensors == (["x", "y"] if low == 0 else ["x", "c"])
    ranges = {"x": (float(x.min()), float(x.max())), "y": (0.0, float(want.max()))}
    if low != 0:  # quantized before the Clip: the conv's own range
        ranges["c"] = (-8.0, 8.0)
    insert_qdq(model.graph, ["c"], ranges)
    onnx.checker.check_model(model, full_check=True)
    ops = optimized_ops(model)
    assert ops["QLinearConv"] == 1 and ops["Conv"] == 0
    assert ops["Clip"] == (0 if low == 0 else 1)
    got = session(model, opt_level="all").run(None, {"x": x})[0]
    if low == 0:
        assert np.abs(got - want).max() <= 4 * want.max() / 255


def test_quantization_parameters():
    p = act_params(-1.0, 3.0)
    assert p.zero_point == round(1.0 / p.scale) and abs(p.scale - 4.0 / 255) < 1e-7
    assert act_params(0.0, 0.0) == act_params(2.0, 2.0) or act_params(0.0, 0.0).scale == 1.0
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    q, scale = weight_params(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.abs(q * scale[:, None, None, None] - w).max() <= scale.max() / 2 + 1e-7


def test_lut_keys_carry_the_precision():
    spec = ConvSpec(8, 8, (3, 3), pads=(1, 1, 1, 1))
    fp32 = shape_key(spec, (1, 8, 6, 6), 0.25)
    assert shape_key(spec, (1, 8, 6, 6), 0.25, "int8") == fp32 + "-int8"
    grouped = ConvSpec(8, 8, (3, 3), pads=(1, 1, 1, 1), group=8)
    assert shape_key(grouped, (1, 8, 6, 6), 0.25) != fp32  # a depthwise conv: its own entry


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp16"], "--precision 'fp16': expected one of fp32, int8, auto"),
        (
            ["--precision", "auto"],
            "--precision auto needs --objective latency (it measures fp32 vs int8)",
        ),
        (
            ["--precision", "int8", "--mode", "widen"],
            "--precision int8 works with --mode reduce only",
        ),
        (
            ["--precision", "int8", "--for-training"],
            "--precision int8 does not combine with --for-training (train in fp32)",
        ),
    ],
)
def test_bad_precision_options(case, tmp_path, args, message):
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", case["model"], out, *args)
    assert_clean_error(proc, message)
    assert not out.exists()


def test_precision_needs_opset_13(tmp_path):
    rng = np.random.default_rng(0)
    model = _cnn(rng)
    model.opset_import[0].version = 11
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    proc = run_cli("optimize", path, tmp_path / "out.onnx", "--precision", "int8")
    assert_clean_error(
        proc,
        "--precision int8: the model's opset 11 is below 13 (per-channel DequantizeLinear); "
        "convert it first",
    )


def test_int8_lut_entry_without_dense_int8_refused(case, tmp_path):
    bad = tmp_path / "bad.json"
    entry = {"provider": "P", "threads": 1, "dense_ms": 1, "candidates": {}, "precision": "int8"}
    bad.write_text(json.dumps({
        "format": "onnx-sk-latency-lut", "version": 2, **this_machine(),
        "entries": {"P|threads=1|s-int8": entry},
    }))  # fmt: skip
    proc = run_cli(
        "optimize", case["model"], tmp_path / "o.onnx", "--objective", "latency",
        "--precision", "auto", "--lut", bad,
    )  # fmt: skip
    assert_clean_error(
        proc,
        f"{bad} is not a readable onnx-sk latency table: entry 'P|threads=1|s-int8': an int8 "
        "entry's dense_int8 has no positive ms and speedup",
    )


def test_cli_marks_the_int8_convs(case, tmp_path):
    proc = run_cli(
        "optimize", case["model"], tmp_path / "o.onnx", "--precision", "int8",
        "--calibration", case["cal"], "--objective", "params",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "int8 kept: first conv" in proc.stdout  # the stem: dense, in int8
    assert "precision int8: 4 int8 convs; ONNX Runtime runs" in proc.stdout
    assert "warning" not in proc.stdout  # calibrated ranges


def test_precision_refuses_recover(case, tmp_path):
    proc = run_cli(
        "optimize", case["model"], tmp_path / "o.onnx", "--precision", "int8",
        "--recover", case["cal"],
    )  # fmt: skip
    assert_clean_error(proc, "--precision int8 does not combine with --recover (it trains fp32)")


def test_add_between_int8_convs_is_int8(tmp_path):
    """A residual Add whose inputs are both quantized anyway becomes ORT's QLinearAdd."""
    rng = np.random.default_rng(0)
    w = [(rng.standard_normal((8, 8, 3, 3)) * 0.15).astype(np.float32) for _ in range(2)]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w0"], ["a"], "conv0", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["ra"], "relu0"),
            helper.make_node("Conv", ["ra", "w1"], ["b"], "conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["b", "ra"], ["s"], "add"),
            helper.make_node("Relu", ["s"], ["y"], "relu1"),
        ],
        "res",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])],
        [numpy_helper.from_array(w[0], "w0"), numpy_helper.from_array(w[1], "w1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "res.onnx"
    onnx.save(model, path)
    out, report = onnx_sk.optimize(path, None, precision="int8", min_channels=64)  # dense
    assert report.precision["int8_convs"] == ["conv0", "conv1"]
    assert report.message == "no conv was replaced by an SK design; 2 of 2 convs in int8"
    ops = optimized_ops(out)
    assert ops["QLinearConv"] == 2 and ops["QLinearAdd"] == 1 and ops["Add"] == 0
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    want = session(model).run(None, {"x": x})[0]
    got = session(out, opt_level="all").run(None, {"x": x})[0]
    assert _cosine(want, got) >= 0.99


def test_profile_lut_int8_entries_serve_lut_from_target(case, tmp_path):
    """profile-lut --precision auto on the target, then optimize --precision auto
    --lut-from-target measures nothing (a missing entry would be an error) and skips the
    in-context timing."""
    lut = tmp_path / "target.json"
    proc = run_cli("profile-lut", case["model"], "--out", lut, "--precision", "auto")
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(lut.read_text())["entries"]
    int8_keys = [k for k in entries if k.endswith("-int8")]
    # every conv: the three 3×3 (SK candidates) and the 1×1 (dense only), fp32 and int8
    assert len(int8_keys) == len(entries) - len(int8_keys) == 4
    _, report = onnx_sk.optimize(
        case["model"], tmp_path / "o.onnx", objective="latency", precision="auto",
        calibration=case["cal"], lut=lut, lut_from_target=True,
    )  # fmt: skip
    assert "context" not in report.precision
    fp32_only = tmp_path / "fp32.json"
    assert run_cli("profile-lut", case["model"], "--out", fp32_only).returncode == 0
    doc = json.loads(fp32_only.read_text())
    doc["cpu"] = "the target's CPU"  # measured elsewhere: nothing may be measured here
    fp32_only.write_text(json.dumps(doc))
    with pytest.raises(onnx_sk.UserError, match="run onnx-sk profile-lut on the target"):
        onnx_sk.optimize(
            case["model"], None, objective="latency", precision="auto", lut=fp32_only,
            lut_from_target=True,
        )  # fmt: skip


def test_an_ort_failure_while_calibrating_is_one_line_naming_what_failed():
    """ONNX Runtime's exception reached the user as a traceback; a 2×2 input to a 3×3 conv
    without pads stands for any model ORT cannot run on the calibration feeds."""
    model = conv_model(np.ones((8, 8, 3, 3), np.float32))
    feeds = iter([{"x": np.ones((1, 8, 2, 2), np.float32)}])
    with pytest.raises(UserError) as info:
        activation_ranges(model, ["x", "y"], feeds, what="the optimized model")
    message = str(info.value)
    assert message.startswith(
        "int8 calibration: ONNX Runtime cannot run the optimized model: [ONNXRuntimeError] : 2 : "
        "INVALID_ARGUMENT : Non-zero status code returned while running Conv node."
    ), message
    assert "\n" not in message
