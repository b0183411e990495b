#!/usr/bin/env python
"""Build tiny ONNX models for edge cases with onnx.helper (onnx, onnxruntime, numpy only).

    python models/make_special_models.py all --fp16-src /tmp/tiny_cnn.onnx --out-dir models

Models (opset 17, IR version 8; every weight is random with a fixed seed):

* ``loop_conv``: top-level 3x3 Conv+Relu, then an ``If`` whose then-branch holds a
  3x3 Conv (weights are initializers *of the subgraph*), then a ``Loop`` (2 trips)
  whose body applies a 3x3 Conv whose weights are *outer-scope* initializers.
* ``qlinear_conv``: QuantizeLinear -> QLinearConv (uint8 activations, int8
  per-channel 7-bit-range weights, int32 bias) -> DequantizeLinear.
* ``qdq_conv``: the same layer in QDQ form: Q/DQ on the activation, DQ on int8
  weights, float Conv, Q/DQ on the output.
* ``conv_weight_input``: Conv whose weight ``W`` is a graph input, then Relu and
  an ordinary 3x3 Conv with initializer weights.
* ``fp16_cnn``: ``--fp16-src`` (a float32 model) converted to float16 weights and
  float16 inputs/outputs with onnxruntime.transformers.float16.

For each model ``models/ref/<name>.npz`` holds a random input (``input``, and
``W`` for conv_weight_input) and a reference ``output`` computed with numpy
(fp16_cnn: the float32 source's onnxruntime output), not with the model itself.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
HERE = os.path.dirname(os.path.abspath(__file__))


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnx-sk models/make_special_models.py",
        producer_version="0.1.0",
    )
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, pad: int = 1) -> np.ndarray:
    """Plain NCHW conv, stride 1, group 1 (float64 accumulation)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))  # N,C,Ho,Wo,kh,kw
    y = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64))
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, arr):
    return numpy_helper.from_array(arr, name)


def _weights(rng, cout, cin, k=3):
    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    return w, b


def make_loop_conv(rng):
    w0, b0 = _weights(rng, 8, 3)
    w1, b1 = _weights(rng, 8, 8)
    w2, b2 = _weights(rng, 8, 8)
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}

    then_g = helper.make_graph(
        [
            helper.make_node("Conv", ["y1", "W_if", "B_if"], ["if_conv"], name="if_conv", **conv),
            helper.make_node("Relu", ["if_conv"], ["then_out"], name="if_relu"),
        ],
        "then_branch",
        [],
        [_vi("then_out", TensorProto.FLOAT, None)],
        initializer=[_init("W_if", w1), _init("B_if", b1)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["y1"], ["else_out"], name="else_identity")],
        "else_branch",
        [],
        [_vi("else_out", TensorProto.FLOAT, None)],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
            helper.make_node(
                "Conv", ["v_in", "W_loop", "B_loop"], ["loop_conv"], name="loop_conv", **conv
            ),
            helper.make_node("Relu", ["loop_conv"], ["v_out"], name="loop_relu"),
        ],
        "loop_body",
        [
            _vi("iter", TensorProto.INT64, []),
            _vi("cond_in", TensorProto.BOOL, []),
            _vi("v_in", TensorProto.FLOAT, None),
        ],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("v_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Conv", ["input", "W0", "B0"], ["c0"], name="conv0", **conv),
        helper.make_node("Relu", ["c0"], ["y1"], name="relu0"),
        helper.make_node("ReduceMax", ["input"], ["xmax"], name="xmax", keepdims=0),
        helper.make_node("Greater", ["xmax", "zero"], ["cond"], name="cond"),
        helper.make_node("If", ["cond"], ["y2"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trips", "", "y2"], ["output"], name="loop", body=body),
    ]
    g = helper.make_graph(
        nodes,
        "loop_conv",
        [_vi("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [_vi("output", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        initializer=[
            _init("W0", w0),
            _init("B0", b0),
            _init("W_loop", w2),
            _init("B_loop", b2),
            _init("zero", np.array(0.0, np.float32)),
            _init("trips", np.array(2, np.int64)),
        ],
    )
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    y = relu(conv_ref(x, w0, b0))
    if x.max() > 0:
        y = relu(conv_ref(y, w1, b1))
    for _ in range(2):
        y = relu(conv_ref(y, w2, b2))
    return _model(g), {"input": x}, y.astype(np.float32)


def _quant_params(rng):
    w, b = _weights(rng, 8, 3)
    x_scale, x_zp = np.float32(4.0 / 255), np.uint8(128)  # x in about [-2, 2]
    # 7-bit weights ("reduce_range"): ORT's x86 u8s8 kernels without VNNI add pairs of
    # u8*s8 products in saturating int16, which overflows for full-range int8 weights
    # and makes the result depend on the CPU; |w_q| <= 63 keeps 2*255*63 < 2**15.
    w_scale = (np.abs(w).reshape(8, -1).max(1) / 63).astype(np.float32)
    w_q = np.clip(np.round(w / w_scale.reshape(-1, 1, 1, 1)), -63, 63).astype(np.int8)
    b_q = np.round(b / (x_scale * w_scale)).astype(np.int32)
    y_scale, y_zp = np.float32(8.0 / 255), np.uint8(128)  # y in about [-4, 4]
    return dict(
        w_q=w_q, w_scale=w_scale, b_q=b_q, x_scale=x_scale, x_zp=x_zp, y_scale=y_scale, y_zp=y_zp
    )


def _quant_ref(x, q):
    xq = np.clip(np.round(x / q["x_scale"]) + q["x_zp"], 0, 255)
    xd = (xq - q["x_zp"]) * q["x_scale"]
    wd = q["w_q"].astype(np.float64) * q["w_scale"].reshape(-1, 1, 1, 1)
    bd = q["b_q"].astype(np.float64) * q["x_scale"] * q["w_scale"]
    y = conv_ref(xd, wd, bd)
    yq = np.clip(np.round(y / q["y_scale"]) + q["y_zp"], 0, 255)
    return ((yq - q["y_zp"]) * q["y_scale"]).astype(np.float32)


def _quant_inits(q):
    inits = [
        _init("x_scale", q["x_scale"]),
        _init("x_zp", q["x_zp"]),
        _init("W_q", q["w_q"]),
        _init("w_scale", q["w_scale"]),
        _init("w_zp", np.zeros(8, np.int8)),
        _init("y_scale", q["y_scale"]),
        _init("y_zp", q["y_zp"]),
        _init("B_q", q["b_q"]),
    ]
    return inits


def make_qlinear_conv(rng):
    q = _quant_params(rng)
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["xq"], name="quant_x"),
        helper.make_node(
            "QLinearConv",
            ["xq", "x_scale", "x_zp", "W_q", "w_scale", "w_zp", "y_scale", "y_zp", "B_q"],
            ["yq"],
            name="qlinear_conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node(
            "DequantizeLinear", ["yq", "y_scale", "y_zp"], ["output"], name="dequant_y"
        ),
    ]
    g = helper.make_graph(
        nodes,
        "qlinear_conv",
        [_vi("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [_vi("output", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        initializer=_quant_inits(q),
    )
    x = rng.uniform(-2, 2, (1, 3, 16, 16)).astype(np.float32)
    return _model(g), {"input": x}, _quant_ref(x, q)


def make_qdq_conv(rng):
    q = _quant_params(rng)
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["xq"], name="quant_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dequant_x"),
        helper.make_node(
            "DequantizeLinear", ["W_q", "w_scale", "w_zp"], ["wd"], name="dequant_w", axis=0
        ),
        helper.make_node("Mul", ["x_scale", "w_scale"], ["b_scale"], name="bias_scale"),
        helper.make_node(
            "DequantizeLinear", ["B_q", "b_scale", "b_zp"], ["bd"], name="dequant_b", axis=0
        ),
        helper.make_node(
            "Conv", ["xd", "wd", "bd"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["yq"], name="quant_y"),
        helper.make_node(
            "DequantizeLinear", ["yq", "y_scale", "y_zp"], ["output"], name="dequant_y"
        ),
    ]
    g = helper.make_graph(
        nodes,
        "qdq_conv",
        [_vi("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [_vi("output", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        initializer=_quant_inits(q) + [_init("b_zp", np.zeros(8, np.int32))],
    )
    x = rng.uniform(-2, 2, (1, 3, 16, 16)).astype(np.float32)
    return _model(g), {"input": x}, _quant_ref(x, q)


def make_conv_weight_input(rng):
    w1, b1 = _weights(rng, 8, 8)
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "W"],
            ["c0"],
            name="conv_dynamic_weight",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node(
            "Conv",
            ["r0", "W1", "B1"],
            ["output"],
            name="conv_const_weight",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
    ]
    g = helper.make_graph(
        nodes,
        "conv_weight_input",
        [
            _vi("input", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            _vi("W", TensorProto.FLOAT, [8, 3, 3, 3]),
        ],
        [_vi("output", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        initializer=[_init("W1", w1), _init("B1", b1)],
    )
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    w, _ = _weights(rng, 8, 3)
    y = conv_ref(np.maximum(conv_ref(x, w), 0), w1, b1)
    return _model(g), {"input": x, "W": w}, y.astype(np.float32)


def make_fp16(rng, src: str):
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = convert_float_to_float16(onnx.load(src), keep_io_types=False)
    m.producer_name = "onnx-sk models/make_special_models.py (onnxruntime.transformers.float16)"
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = rng.standard_normal(shape).astype(np.float16)
    (y,) = sess.run(None, {inp.name: x.astype(np.float32)})
    return m, {"input": x}, y


BUILDERS = {
    "loop_conv": make_loop_conv,
    "qlinear_conv": make_qlinear_conv,
    "qdq_conv": make_qdq_conv,
    "conv_weight_input": make_conv_weight_input,
    "fp16_cnn": make_fp16,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help=f"{', '.join(BUILDERS)} or all")
    p.add_argument("--out-dir", default=HERE)
    p.add_argument("--fp16-src", help="float32 ONNX model to convert for fp16_cnn")
    p.add_argument("--ref-dir", default=os.path.join(HERE, "ref"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    names = list(BUILDERS) if "all" in a.models else a.models
    for name in names:
        if name not in BUILDERS:
            p.error(f"unknown model {name!r}")
        if name == "fp16_cnn" and not a.fp16_src:
            p.error("fp16_cnn needs --fp16-src")
    os.makedirs(a.out_dir, exist_ok=True)
    os.makedirs(a.ref_dir, exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng(a.seed + i)
        args = (rng, a.fp16_src) if name == "fp16_cnn" else (rng,)
        model, feeds, ref = BUILDERS[name](*args)
        path = os.path.join(a.out_dir, name + ".onnx")
        onnx.save_model(model, path)
        np.savez_compressed(os.path.join(a.ref_dir, name + ".npz"), output=ref, **feeds)
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
