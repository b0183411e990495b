"""Invalid and malformed models (issue 16, items 1, 2, 5, 9): refused when loaded, in one exact
line with exit code 2, by every command that loads a model; never a traceback, never a wrong
output, the input untouched and nothing left behind. IR-3 models and overridable weights are
handled. Every model is built here with onnx.helper and edited by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, digest, run_cli
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.maths.domain import DomainError
from onnx_sk.maths.search import search
from onnx_sk.runtime.session import session

W = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)


def _base() -> onnx.ModelProto:
    return conv_model(W, attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 8, 8))


def _relu(inp: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Relu", [inp], [out], name="r")


def _dup_init(m):
    m.graph.initializer.insert(0, numpy_helper.from_array(np.zeros_like(W), "w"))


def _init_and_output(m):
    m.graph.node.append(_relu("y", "w"))


def _dup_output(m):
    m.graph.node.append(_relu("x", "y"))


def _dup_node_name(m):
    m.graph.node.append(helper.make_node("Relu", ["y"], ["z"], name="conv"))
    m.graph.output[0].name = "z"


def _unsorted(m):
    m.graph.node[0].input[0] = "x2"
    m.graph.node.append(_relu("x", "x2"))


def _cycle(m):
    m.graph.node[0].input[0] = "z"
    m.graph.node.append(_relu("y", "z"))


def _input_written(m):
    m.graph.node.insert(0, _relu("y", "x"))


def _undefined_read(m):
    m.graph.node[0].input[0] = "nowhere"


def _attr(name, value):
    def edit(m):
        m.graph.node[0].attribute.append(helper.make_attribute(name, value))

    return edit


def _raw_short(m):
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:100]


def _raw_long(m):
    m.graph.initializer[0].raw_data += b"\0" * 8


def _float_data_short(m):
    m.graph.initializer[0].ClearField("raw_data")
    m.graph.initializer[0].float_data.extend([1.0] * 10)


def _no_data(m):
    m.graph.initializer[0].ClearField("raw_data")


def _undefined_type(m):
    m.graph.initializer[0].data_type = TensorProto.UNDEFINED


def _one_input(m):
    del m.graph.node[0].input[1]


def _no_output(m):
    del m.graph.node[0].output[0]


DEFECTS = {
    "duplicate initializer": (_dup_init, "initializer 'w' is listed twice"),
    "initializer and node output": (
        _init_and_output,
        "tensor 'w' is both an initializer and the output of node 'r'",
    ),
    "duplicate node output": (_dup_output, "tensor 'y' is written by two nodes ('conv' and 'r')"),
    "duplicate node name": (_dup_node_name, "node name 'conv' is used twice (a Conv and a Relu)"),
    "unsorted nodes": (
        _unsorted,
        "nodes are not topologically sorted: node 'conv' reads 'x2' before node 'r' writes it",
    ),
    "cycle": (_cycle, "the graph has a cycle (through node 'conv' and 'z')"),
    "graph input written by a node": (_input_written, "graph input 'x' is also the output of node 'r'"),
    "undefined tensor": (
        _undefined_read,
        "node 'conv' reads 'nowhere', which no node, initializer or graph input defines",
    ),
    "unknown attribute": (
        _attr("foo", 3),
        "onnx.checker: Unrecognized attribute: foo for operator Conv",
    ),
    "attribute of the wrong type": (
        _attr("group", 1.5),
        "Conv 'conv': attribute 'group' is FLOAT, expected INT",
    ),
    "group 0": (_attr("group", 0), "Conv 'conv' has group 0: it must be at least 1"),
    "group not dividing the channels": (
        _attr("group", 3),
        "Conv 'conv': group 3 does not divide the 8 output channels of its weight 'w' [8, 8, 3, 3]",
    ),
    "kernel_shape disagreeing with the weight": (
        _attr("kernel_shape", [5, 5]),
        "Conv 'conv': kernel_shape [5, 5] disagrees with its weight 'w' [8, 8, 3, 3]",
    ),
    "negative stride": (_attr("strides", [1, -1]), "Conv 'conv' has strides [1, -1]: each must be at least 1"),
    "raw_data too short": (
        _raw_short,
        "tensor 'w': raw_data has 100 bytes, but dims [8, 8, 3, 3] of FLOAT need 2304",
    ),
    "raw_data too long": (
        _raw_long,
        "tensor 'w': raw_data has 2312 bytes, but dims [8, 8, 3, 3] of FLOAT need 2304",
    ),
    "float_data of the wrong length": (
        _float_data_short,
        "tensor 'w': float_data has 10 values, but dims [8, 8, 3, 3] of FLOAT need 576 in float_data",
    ),
    "dims without data": (_no_data, "tensor 'w' has dims [8, 8, 3, 3] but no data"),
    "data_type UNDEFINED": (_undefined_type, "tensor 'w' has data type UNDEFINED"),
    "Conv with one input": (_one_input, "Conv 'conv' has 1 input(s): it needs X and W"),
    "Conv without output": (_no_output, "Conv 'conv' has no output"),
}  # fmt: skip


def _save(tmp: Path, edit) -> Path:
    model = _base()
    edit(model)
    path = tmp / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("command", ["analyze", "optimize"])
@pytest.mark.parametrize("case", list(DEFECTS))
def test_invalid_model_refused_at_load(tmp_path, case, command):
    edit, defect = DEFECTS[case]
    src = _save(tmp_path, edit)
    before = digest(src)
    args = [command, src] + (
        [tmp_path / "out.onnx", "--include-first"] if command == "optimize" else []
    )
    assert_clean_error(run_cli(*args), f"{src} is not a valid ONNX model: {defect}")
    assert digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "{src}"],
        ["compare", "{src}", "{src}"],
        ["profile-lut", "{src}", "--out", "{tmp}/lut.json"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_that_loads_refuses(tmp_path, args):
    src = _save(tmp_path, _dup_init)
    argv = [a.format(src=src, tmp=tmp_path) for a in args]
    assert_clean_error(
        run_cli(*argv), f"{src} is not a valid ONNX model: initializer 'w' is listed twice"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_library_refuses_an_invalid_model_proto():
    model = _base()
    _dup_init(model)
    with pytest.raises(onnx_sk.UserError) as err:
        onnx_sk.analyze(model)
    assert str(err.value) == "the model is not a valid ONNX model: initializer 'w' is listed twice"


def test_conv_channels_disagreeing_with_its_input(tmp_path):
    """group 2 on a weight [8, 8, 3, 3] needs 16 input channels; x has 8 (analyze exited 0)."""
    src = _save(tmp_path, _attr("group", 2))
    message = "Conv 'conv': its input 'x' has 8 channels, but its weight 'w' [8, 8, 3, 3] with group 2 expects 16"
    assert_clean_error(run_cli("analyze", src), message)
    assert_clean_error(run_cli("optimize", src, tmp_path / "out.onnx", "--include-first"), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def _external(tmp: Path, location: str = "w.bin") -> Path:
    model = _base()
    onnx.save(
        model, tmp / "ext.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )
    if location != "w.bin":
        m = onnx.load(tmp / "ext.onnx", load_external_data=False)
        for e in m.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = location
        (tmp / "ext.onnx").write_bytes(m.SerializeToString())
    return tmp / "ext.onnx"


@pytest.mark.parametrize("command", ["analyze", "optimize"])
def test_external_data_file_shorter_than_its_tensor(tmp_path, command):
    src = _external(tmp_path)
    data = tmp_path / "w.bin"
    data.write_bytes(data.read_bytes()[:1000])
    args = [command, src] + ([tmp_path / "out.onnx"] if command == "optimize" else [])
    assert_clean_error(
        run_cli(*args),
        "external data file 'w.bin' of tensor 'w' has 1000 bytes, shorter than the tensor needs "
        "(offset 0 + 2304 bytes)",
    )
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("command", ["analyze", "optimize"])
def test_nul_byte_in_an_external_data_location(tmp_path, command):
    src = _external(tmp_path, "w\0.bin")
    args = [command, src] + ([tmp_path / "out.onnx"] if command == "optimize" else [])
    assert_clean_error(
        run_cli(*args),
        "external data location 'w\\x00.bin' of tensor 'w' contains a NUL byte: refused",
    )


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seed_out_of_range(tmp_path, seed):
    src = _save(tmp_path, lambda m: None)
    message = f"--seed {seed}: expected an integer from 0 to 2**63 - 1"
    assert_clean_error(run_cli("optimize", src, tmp_path / "out.onnx", "--seed", seed), message)
    assert_clean_error(run_cli("compare", src, src, "--seed", seed), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


# --------------------------------------------------------------------------- item 5: IR 3


def _ir3(tmp: Path, bias: bool = True) -> tuple[onnx.ModelProto, Path]:
    """An opset-9, IR-3 model as old exporters wrote it: every initializer is a graph input."""
    b = np.random.default_rng(1).standard_normal(8).astype(np.float32) if bias else None
    model = conv_model(W, b, attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 8, 8), opset=9)
    model.ir_version = 3
    for init in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )
    onnx.checker.check_model(model, full_check=True)
    path = tmp / "ir3.onnx"
    path.write_bytes(model.SerializeToString())
    return model, path


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "no-verify"])
def test_ir3_model_is_rewritten_and_needs_no_weight_feed(tmp_path, verify):
    model, src = _ir3(tmp_path)
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    extra = [] if verify else ["--no-verify"]
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep, *extra)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())
    assert doc["totals"]["replaced"] == 1
    if verify:
        assert doc["verification"]["fields_checked"] == 1
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert [i.name for i in written.graph.input] == ["x"]  # the weights need no feed
    assert written.ir_version >= 4
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 8)).astype(np.float32)
    y = session(written, opt_level="disabled").run(None, {"x": x})[0]
    assert y.shape == session(model, opt_level="disabled").run(None, {"x": x})[0].shape


def test_ir3_model_widened(tmp_path):
    """Two convs (their middle channel space is free) in an IR-3 model, widened."""
    w2 = np.random.default_rng(3).standard_normal((8, 8, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(W, "w"), numpy_helper.from_array(w2, "w2")]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], name="c1", pads=[1] * 4),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1] * 4),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8]),
            *(
                helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims))
                for i in inits
            ),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    onnx.checker.check_model(model, full_check=True)
    src, out = tmp_path / "ir3.onnx", tmp_path / "out.onnx"
    src.write_bytes(model.SerializeToString())
    proc = run_cli(
        "optimize", src, out, "--include-first", "--mode", "widen", "--width-scale", "1.5"
    )
    assert proc.returncode == 0, proc.stderr
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert [i.name for i in written.graph.input] == ["x"]


def test_ir3_model_analyzed_as_constants(tmp_path):
    _, src = _ir3(tmp_path)
    doc = onnx_sk.analyze(src)
    assert doc["convs"][0]["eligible"] and [i["name"] for i in doc["inputs"]] == ["x"]


def test_overridable_weight_is_kept_with_a_reason(tmp_path):
    """IR >= 4: an initializer also listed as a graph input is a default the caller may feed."""
    model = _base()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8, 3, 3]))
    src = tmp_path / "in.onnx"
    src.write_bytes(model.SerializeToString())
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())
    assert doc["convs"][0]["reason"] == (
        "weights are an initializer also listed as a graph input (a default a caller may override)"
    )
    assert digest(out) == digest(src)


# --------------------------------------------------------------------------- item 9: bounds


def test_efficiency_channels_past_the_limit():
    assert_clean_error(
        run_cli("efficiency", "--c-in", str(10**21), "--c-out", "8"),
        f"--c-in {10**21} is too large (at most 1048576)",
    )


def test_efficiency_budget_past_the_limit():
    assert_clean_error(
        run_cli("efficiency", "--c-in", "8", "--c-out", "8", "--budget", "1e15"),
        "--budget must be a positive number of parameters up to 1e+09, got 1000000000000000.0",
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--channels", "1000000007"], "--channels 1000000007 is too large (at most 1024)"),
        (
            ["--channels", "4096", "--max-length", "8"],
            "--channels 4096 is too large (at most 1024)",
        ),
        (
            ["--channels", "1009"],  # a prime below the limit: refused by its divisors, at once
            "--channels must be a composite number ≥ 4 so that GC and PWG have a group number "
            "1 < M < C, got 1009",
        ),
    ],
)
def test_search_sizes_past_the_limit(args, message):
    assert_clean_error(run_cli("search", *args), message)


def test_search_work_is_bounded():
    """A width with many divisors has many choices per kernel: the search stops past its work
    limit (here a small one, so the test is quick) instead of running on."""
    with pytest.raises(DomainError) as err:
        search(48, 3, max_work=10**9)
    assert str(err.value) == (
        "--channels 48: the search needs more than 1e+09 units of work (field steps × C³): "
        "stopped. A width with many divisors has many group numbers and shuffles per kernel: "
        "try one with fewer divisors, fewer --kernels or a shorter --max-length"
    )
    assert search(16, 6, max_work=10**9).total == sum(4**n for n in range(1, 7))


def test_group_checked_against_a_weight_given_as_graph_input(tmp_path):
    """The weight is a graph input (no initializer): its declared shape is checked instead."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=3)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 8, 8]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8, 3, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    src = tmp_path / "bad.onnx"
    src.write_bytes(helper.make_model(graph).SerializeToString())
    assert_clean_error(
        run_cli("analyze", src),
        f"{src} is not a valid ONNX model: Conv 'conv': group 3 does not divide the 8 output "
        "channels of its weight 'w' [8, 8, 3, 3]",
    )
