"""Checks of the committed reference models in models/ (see models/README.md).

The committed-model tests need only onnx, onnxruntime and numpy: each model is
checked with the full ONNX checker, run in onnxruntime on the input stored in
models/ref/<name>.npz and compared with the stored reference output (computed by
the source framework: torch, Keras, or numpy for the hand-built graphs).
The ``torch``-marked test re-exports the CIFAR ResNet with both torch exporters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"
REF = MODELS / "ref"

# name -> (path relative to models/, atol, rtol)
COMMITTED = {
    "resnet20_cifar": ("resnet20_cifar.onnx", 1e-4, 1e-4),
    "resnet20_cifar_dynamo": ("resnet20_cifar_dynamo.onnx", 1e-4, 1e-4),
    "table1_w16": ("table1_w16.onnx", 1e-4, 1e-4),
    "table1_w16_bn": ("table1_w16_bn.onnx", 1e-4, 1e-4),
    "resnet18_w8_ext": ("resnet18_w8_ext/model.onnx", 1e-4, 1e-4),
    "tiny_cnn": ("tiny_cnn.onnx", 1e-4, 1e-4),
    "const_weights": ("const_weights.onnx", 1e-4, 1e-4),
    "keras_cnn_tf2onnx": ("keras_cnn_tf2onnx.onnx", 1e-4, 1e-4),
    # float16 model vs the float32 source's output
    "fp16_cnn": ("fp16_cnn.onnx", 2e-2, 2e-2),
    "loop_conv": ("loop_conv.onnx", 1e-4, 1e-4),
    # numpy reference of the quantized conv; allow one output quantization step (8/255)
    "qlinear_conv": ("qlinear_conv.onnx", 8 / 255 + 1e-5, 0),
    "qdq_conv": ("qdq_conv.onnx", 8 / 255 + 1e-5, 0),
    "conv_weight_input": ("conv_weight_input.onnx", 1e-4, 1e-4),
}


def _path(name: str) -> str:
    return str(MODELS / COMMITTED[name][0])


def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _ref(name: str) -> dict[str, np.ndarray]:
    with np.load(REF / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _feeds(sess: ort.InferenceSession, ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = sess.get_inputs()
    if len(inputs) == 1:
        return {inputs[0].name: ref["input"]}
    return {i.name: ref[i.name] for i in inputs}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_check_model_full(name):
    onnx.checker.check_model(_path(name), full_check=True)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_ort_matches_reference(name):
    _, atol, rtol = COMMITTED[name]
    sess = _session(_path(name))
    ref = _ref(name)
    (out,) = sess.run(None, _feeds(sess, ref))
    assert out.shape == ref["output"].shape
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.astype(np.float64), ref["output"], atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "name",
    [
        "resnet20_cifar",
        "resnet20_cifar_dynamo",
        "table1_w16",
        "table1_w16_bn",
        "tiny_cnn",
        "const_weights",
        "keras_cnn_tf2onnx",
        "fp16_cnn",
        "loop_conv",
    ],
)
def test_dynamic_batch(name):
    sess = _session(_path(name))
    ref = _ref(name)
    x = ref["input"]
    x3 = np.concatenate([x, np.zeros_like(x), x])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x3})
    (one,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert out.shape[0] == 3 * x.shape[0]
    np.testing.assert_allclose(out[: len(x)], one, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out[-len(x) :], one, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["table1_w16", "table1_w16_bn"])
def test_dynamic_height_width(name):
    sess = _session(_path(name))
    shape = sess.get_inputs()[0].shape
    assert isinstance(shape[2], str) and isinstance(shape[3], str), shape
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 80)).astype(np.float32)
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert out.shape == (2, 10)


def _nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """All nodes, including those in If/Loop subgraphs."""
    out, stack = [], [model.graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            out.append(n)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    stack.append(a.g)
                stack.extend(a.graphs)
    return out


def _ops(name: str) -> list[str]:
    return [n.op_type for n in _nodes(onnx.load(_path(name)))]


def test_features_exercised():
    """Each fixture still has the feature it is in the set for."""
    assert "BatchNormalization" not in _ops("table1_w16")
    assert _ops("table1_w16_bn").count("BatchNormalization") == _ops("table1_w16_bn").count("Conv")
    assert _ops("table1_w16").count("Conv") == 12

    m = onnx.load(_path("const_weights"))
    assert len(m.graph.initializer) == 0
    assert sum(n.op_type == "Constant" for n in m.graph.node) == 10

    m = onnx.load(_path("loop_conv"))
    top = [n.op_type for n in m.graph.node]
    assert top.count("Conv") == 1 and "If" in top and "Loop" in top
    assert _ops("loop_conv").count("Conv") == 3

    assert "QLinearConv" in _ops("qlinear_conv") and "Conv" not in _ops("qlinear_conv")
    assert _ops("qdq_conv").count("DequantizeLinear") == 4

    m = onnx.load(_path("conv_weight_input"))
    assert [i.name for i in m.graph.input] == ["input", "W"]
    assert m.graph.node[0].op_type == "Conv" and m.graph.node[0].input[1] == "W"

    m = onnx.load(_path("fp16_cnn"))
    f16 = onnx.TensorProto.FLOAT16
    assert m.graph.input[0].type.tensor_type.elem_type == f16
    assert m.graph.output[0].type.tensor_type.elem_type == f16
    assert all(t.data_type == f16 for t in m.graph.initializer)

    m = onnx.load(_path("keras_cnn_tf2onnx"))
    assert m.producer_name == "tf2onnx"
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][1:] == [32, 32, 3]
    # the BN after the depthwise conv stays as Mul+Add; one conv is depthwise
    assert any(
        n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
        for n in m.graph.node
    )

    m = onnx.load(_path("resnet20_cifar_dynamo"))
    assert m.opset_import[0].version == 20
    assert any(
        n.op_type == "Reshape" and any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
        for n in m.graph.node
    )
    assert onnx.load(_path("resnet20_cifar")).opset_import[0].version == 17


def test_external_data():
    path = _path("resnet18_w8_ext")
    data = Path(path).with_name("model.onnx.data")
    assert data.is_file()
    m = onnx.load(path, load_external_data=False)
    ext = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(ext) >= 20
    assert {e.value for t in ext for e in t.external_data if e.key == "location"} == {
        "model.onnx.data"
    }
    full = onnx.load(path)
    assert sum(t.ByteSize() for t in full.graph.initializer) > data.stat().st_size * 0.99
    assert os.path.getsize(path) < 64 * 1024


def test_committed_size_budget():
    # the fixtures; the trained teachers of issue 13's recovery benchmarks (three models, each
    # from both torch exporters) have a budget of their own
    fixtures = sum(
        p.stat().st_size
        for p in MODELS.rglob("*")
        if p.is_file() and not {"big", "trained"} & set(p.relative_to(MODELS).parts)
    )
    assert fixtures < 6.5 * 2**20, fixtures
    trained = sum(p.stat().st_size for p in (MODELS / "trained").rglob("*") if p.is_file())
    assert trained < 8 * 2**20, trained


@pytest.mark.torch
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_make_torch_models_cifar(tmp_path, exporter):
    pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    out = tmp_path / f"r20_{exporter}.onnx"
    cmd = [
        sys.executable,
        str(MODELS / "make_torch_models.py"),
        "resnet20_cifar",
        "--exporter",
        exporter,
        "--dynamic",
        "batch",
        "--batch",
        "2",
        "--ref",
        "-o",
        str(out),
    ]
    if exporter == "torchscript":
        cmd += ["--opset", "17"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    onnx.checker.check_model(str(out), full_check=True)
    ref = np.load(str(out) + ".ref.npz")
    sess = _session(str(out))
    (got,) = sess.run(None, {sess.get_inputs()[0].name: ref["input"]})
    assert got.shape == (2, 10)
    np.testing.assert_allclose(got, ref["output"], atol=1e-4, rtol=1e-4)
    # the committed model is the same export (same seed, same weights)
    committed = _ref("resnet20_cifar")["output"]
    (got1,) = sess.run(None, {sess.get_inputs()[0].name: _ref("resnet20_cifar")["input"]})
    np.testing.assert_allclose(got1, committed, atol=1e-4, rtol=1e-4)


@pytest.mark.torch
def test_make_torch_models_keep_bn(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "t1_bn.onnx"
    subprocess.run(
        [
            sys.executable,
            str(MODELS / "make_torch_models.py"),
            "table1",
            "--width",
            "8",
            "--blocks",
            "1",
            "--num-classes",
            "10",
            "--input-size",
            "32",
            "--dynamic",
            "--keep-bn",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("BatchNormalization") == ops.count("Conv") == 12
