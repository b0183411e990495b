"""analyze: per-conv rows, totals against the file's own tensors and published figures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import MODELS, ROOT, conv_model, run_cli

from onnx_sk.graph.analyze import analyze
from onnx_sk.graph.index import ConstantIndex


def _conv_tensor_params(model: onnx.ModelProto) -> int:
    consts = ConstantIndex(model.graph)
    names = [name for n in model.graph.node if n.op_type == "Conv" for name in n.input[1:] if name]
    assert all(name in consts for name in names)  # these files' conv weights are all constants
    return sum(consts.size(name) for name in names)


@pytest.mark.parametrize(
    "name",
    ["table1_w16.onnx", "resnet20_cifar.onnx", "const_weights.onnx", "keras_cnn_tf2onnx.onnx"],
)
def test_conv_params_sum_to_the_files_conv_tensors(name):
    path = MODELS / name
    report = analyze(path)
    assert report["totals"]["conv_params"] == _conv_tensor_params(onnx.load(path))
    assert report["totals"]["all_params"] >= report["totals"]["conv_params"]


def test_symbolic_spatial_dims_give_unknown_macs_not_guesses():
    report = analyze(MODELS / "table1_w16.onnx")
    assert all(r["macs"] is None for r in report["convs"])
    assert report["totals"]["conv_macs"] is None and report["totals"]["total_macs"] is None
    fixed = analyze(MODELS / "table1_w16.onnx", ["input:1x3x64x64"])
    assert all(isinstance(r["macs"], int) and r["macs"] > 0 for r in fixed["convs"])


def test_macs_by_hand_for_one_conv(rng):
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    model = conv_model(w, attrs={"strides": [2, 2], "pads": [1, 1, 1, 1]}, dims=(2, None, 20, 30))
    row = analyze(model)["convs"][0]
    assert row["macs"] == 2 * 16 * 8 * 9 * 10 * 15
    assert row["kind"] == "dense" and row["info_field"] == [3, 3, 8]
    assert row["best"]["params"] < row["params"]


def test_kinds_and_reasons(rng):
    cases = {
        "pointwise": (np.ones((8, 8, 1, 1)), {}, "pointwise (1×1) conv"),
        "depthwise": (np.ones((8, 1, 3, 3)), {"group": 8}, "depthwise conv"),
        "grouped": (np.ones((8, 2, 3, 3)), {"group": 4}, "grouped conv (group=4)"),
    }
    for kind, (w, attrs, reason) in cases.items():
        row = analyze(conv_model(w.astype(np.float32), attrs=attrs))["convs"][0]
        assert (row["kind"], row["eligible"], row["reason"]) == (kind, False, reason)


def test_conv_inside_if_branch_is_reported_with_scope():
    report = analyze(MODELS / "loop_conv.onnx")
    scoped = [r for r in report["convs"] if r["scope"]]
    assert scoped and all(r["reason"] == f"inside {r['scope']}" for r in scoped)


def test_quantized_convs_are_listed():
    report = analyze(MODELS / "qlinear_conv.onnx")
    assert report["quantized_convs"]


def test_cli_json_is_one_document():
    proc = run_cli(
        "analyze", MODELS / "resnet20_cifar.onnx", "--json", "--input-shape", "input:1x3x32x32"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"model", "opset", "inputs", "outputs", "convs", "quantized_convs", "totals"}
    assert doc["totals"]["conv_macs"] > 0


def test_cli_table_names_every_conv():
    proc = run_cli("analyze", MODELS / "table1_w16.onnx")
    assert proc.returncode == 0, proc.stderr
    report = analyze(MODELS / "table1_w16.onnx")
    for row in report["convs"]:
        assert row["name"] in proc.stdout


def test_model_proto_input_keeps_constant_node_dtype():
    model = onnx.load(MODELS / "const_weights.onnx")
    assert any(n.op_type == "Constant" for n in model.graph.node)
    report = analyze(model)
    assert report["totals"]["conv_params"] == _conv_tensor_params(model) > 0


@pytest.mark.torch
@pytest.mark.parametrize(
    "arch,macs,params", [("resnet18", 1.814e9, 11_689_512), ("resnet50", 4.089e9, 25_557_032)]
)
def test_torch_resnets_match_published_figures(tmp_path, arch, macs, params):
    """torchvision's table: ResNet-18 1.81 GMACs / 11.69 M params, ResNet-50 4.09 G / 25.56 M."""
    pytest.importorskip("torch")
    out = tmp_path / f"{arch}.onnx"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "models" / "make_torch_models.py"),
            arch,
            "-o",
            str(out),
            "--no-check",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = analyze(out, ["input:1x3x224x224"])
    model = onnx.load(out)
    assert report["totals"]["conv_params"] == _conv_tensor_params(model)
    assert abs(report["totals"]["total_macs"] / macs - 1) < 0.01
    # BN is folded into the convs by the exporter, so the file has 2 fewer tensors per BN
    bn_params = params - report["totals"]["all_params"]
    assert 0 <= bn_params / params < 0.01


def _shufflenet_unit(shuffle: bool) -> onnx.ModelProto:
    """GC(4 groups, 3×3) → [shuffle] → PWG(4 groups, 1×1): ShuffleNet's unit without BN/ReLU."""
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 4, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((16, 4, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([0, 4, 4, -1], np.int64), "split"),
    ]
    nodes = [onnx.helper.make_node("Conv", ["x", "w1"], ["a"], "gc", group=4, pads=[1, 1, 1, 1])]
    src = "a"
    if shuffle:
        nodes += [
            onnx.helper.make_node("Shape", ["a"], ["s"], "shape"),
            onnx.helper.make_node("Reshape", ["a", "split"], ["r"], "r1"),
            onnx.helper.make_node("Transpose", ["r"], ["t"], "tr", perm=[0, 2, 1, 3]),
            onnx.helper.make_node("Reshape", ["t", "s"], ["b"], "r2"),
        ]
        src = "b"
    nodes.append(onnx.helper.make_node("Conv", [src, "w2"], ["y"], "pwg", group=4))
    graph = onnx.helper.make_graph(
        nodes, "unit",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        inits,
    )  # fmt: skip
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_fields_report_a_shufflenet_unit_full_and_a_plain_grouped_chain_not():
    with_shuffle = analyze(_shufflenet_unit(True), fields=True)["units"]
    without = analyze(_shufflenet_unit(False), fields=True)["units"]
    assert [(u["nodes"], u["full"], u["size"]) for u in with_shuffle] == [
        (["gc", "pwg"], True, [3, 3, 16])
    ]
    assert [(u["nodes"], u["full"], u["size"]) for u in without] == [
        (["gc", "pwg"], False, [3, 3, 4])
    ]


def test_cli_fields_table(tmp_path):
    path = tmp_path / "unit.onnx"
    onnx.save(_shufflenet_unit(False), path)
    proc = run_cli("analyze", path, "--fields")
    assert proc.returncode == 0, proc.stderr
    assert "no: an output sees only part of the input channels" in proc.stdout
