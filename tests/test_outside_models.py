"""Valid models the project's own exporters never write, through the real CLI: each one either
refused in one line (exit 2) or optimized into a model that checks and runs; never a traceback,
the input never touched, no file left behind after a failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, digest, run_cli
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.runtime.session import session

W = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)


def _save(tmp: Path, model: onnx.ModelProto, name: str = "in.onnx") -> Path:
    path = tmp / name
    path.write_bytes(model.SerializeToString())
    return path


def _optimized(tmp: Path, model: onnx.ModelProto, *extra: str) -> tuple[onnx.ModelProto, dict]:
    """``optimize --include-first`` through the CLI: exit 0, the input file untouched, the
    output passing the full checker; the written model and the report."""
    src = _save(tmp, model)
    before = digest(src)
    out, rep = tmp / "out.onnx", tmp / "report.json"
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep, *extra)
    assert proc.returncode == 0, proc.stderr
    assert digest(src) == before
    onnx.checker.check_model(str(out), full_check=True)
    return onnx.load(out), json.loads(rep.read_text())


def _unknown_rank_input() -> onnx.ModelProto:
    """x (no shape at all: its rank is unknown) → Conv 8→8 3×3 → y (no shape)."""
    model = conv_model(W, attrs={"pads": [1, 1, 1, 1]})
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.ClearField("shape")
    return model


@pytest.mark.parametrize(
    "extra", [[], ["--precision", "auto", "--objective", "latency", "--threads", "1"]]
)
def test_an_input_of_unknown_rank_asks_for_its_shape(tmp_path, extra):
    src = _save(tmp_path, _unknown_rank_input())
    before = digest(src)
    assert_clean_error(
        run_cli("optimize", src, tmp_path / "out.onnx", "--include-first", *extra),
        "input 'x' has no shape (its rank is unknown): give it with --input-shape x:1x3x224x224",
    )
    assert digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


@pytest.mark.parametrize("extra", [[], ["--precision", "int8"]])
def test_an_input_of_unknown_rank_takes_the_given_shape(tmp_path, extra):
    src = _save(tmp_path, _unknown_rank_input())
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = run_cli(
        "optimize", src, out, "--include-first", "--input-shape", "x:1x8x16x16",
        "--report", rep, *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())
    assert doc["totals"]["replaced"] == 1 and doc["verification"]["checker"] is True
    written = onnx.load(out)
    assert not written.graph.input[0].type.tensor_type.HasField("shape")  # declared as it was
    x = np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)
    assert session(written).run(None, {"x": x})[0].shape == (1, 8, 16, 16)


def _small(tmp: Path) -> Path:
    return _save(tmp, conv_model(W, attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 16, 16)))


@pytest.mark.parametrize(
    "extra",
    [["--precision", "int8", "--calibration"], ["--inputs"]],
    ids=["calibration", "inputs"],
)
def test_float64_arrays_feed_a_float32_model(tmp_path, extra):
    """numpy saves float64 by default: converted, as the streamed --calibration reader does (the
    int8 ranges crashed with ORT's 'Unexpected input data type')."""
    src = _small(tmp_path)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((4, 8, 16, 16)))
    proc = run_cli("optimize", src, tmp_path / "out.onnx", "--include-first", *extra, data)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--calibration", "--inputs"])
def test_integer_arrays_for_a_float_input_are_refused(tmp_path, flag):
    src = _small(tmp_path)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.ones((4, 8, 16, 16), np.int64))
    extra = ["--precision", "int8"] if flag == "--calibration" else []
    assert_clean_error(
        run_cli("optimize", src, tmp_path / "out.onnx", "--include-first", *extra, flag, data),
        f"{flag} {data}: array 'x' is int64, input 'x' takes float32",
    )
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    "extra",
    [[], ["--init", "approx", "--max-error", "0.5"], ["--precision", "int8"]],
    ids=["default", "max-error", "int8"],
)
def test_a_kernel_holding_nan_is_kept_with_its_reason(tmp_path, extra):
    """The fit gave a LinAlgError traceback, int8 a NaN scale (cosine nan, exit 1)."""
    w = W.copy()
    w[0, 0, 0, 0] = np.nan
    src = _save(tmp_path, conv_model(w, attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 8, 8)))
    before = digest(src)
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep, *extra)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(rep.read_text())
    assert [(c["design"], c["reason"]) for c in doc["convs"]] == [
        (None, "weights hold NaN or Inf values: no design can fit them")
    ]
    assert digest(out) == digest(src) == before  # written unchanged


def _if_reading_a_conv_output(branch_weight: str = "wb") -> onnx.ModelProto:
    """x → c0 → a → c1 → Relu → c2 → y, and an If whose branches read ``a`` and
    ``branch_weight`` by name (outer-scope reads, not inputs of the If) → z."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), n)
        for n in ("w0", "w1", "w2", "wb")
    ]
    conv = lambda x, w, y: helper.make_node("Conv", [x, w], [y], name=y, pads=[1, 1, 1, 1])  # noqa: E731
    then_g = helper.make_graph([conv("a", branch_weight, "t")], "then", [], [_vi("t")])
    else_g = helper.make_graph([helper.make_node("Relu", ["a"], ["e"])], "else", [], [_vi("e")])
    nodes = [
        conv("x", "w0", "a"), conv("a", "w1", "b"), helper.make_node("Relu", ["b"], ["r"]),
        conv("r", "w2", "y"),
        helper.make_node("If", ["cond"], ["z"], name="if", then_branch=then_g, else_branch=else_g),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [_vi("x"), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [_vi("y"), _vi("z")], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, 8, 8])


@pytest.mark.parametrize("branch_weight", ["wb", "w1"], ids=["own weight", "c1's weight"])
def test_widen_keeps_what_a_subgraph_reads(tmp_path, branch_weight):
    """The If branch reads ``a``: its channels stay 8 (they were widened: output 'z' 8 → 144
    channels); the branch's weight stays (it was dropped as unread, or edited in place when c1
    shares it); the space between c1 and c2 still widens."""
    src = _save(tmp_path, _if_reading_a_conv_output(branch_weight))
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = run_cli("optimize", src, out, "--mode", "widen", "--include-first", "--report", rep)
    assert proc.returncode == 0, proc.stderr
    written = onnx.load(out)
    weights = {i.name: list(i.dims) for i in written.graph.initializer}
    conv_w = {
        n.output[0]: weights.get(n.input[1]) for n in written.graph.node if n.op_type == "Conv"
    }
    assert conv_w["a"] is None or conv_w["a"][0] == 8, conv_w
    assert weights[branch_weight] == [8, 8, 3, 3]
    assert json.loads(rep.read_text())["message"].startswith("widened 1 of")


def _trained_chain() -> onnx.ModelProto:
    """x → c0 → Relu → c1 → Relu → c2 → Relu → c3 → y (8 channels, 3×3), whose training_info
    updates c1's weight ``w1`` (an algorithm graph reading it, ``update_binding`` w1 ← w1_new)."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), f"w{k}")
        for k in range(4)
    ]
    nodes = []
    for k, (x, y) in enumerate([("x", "a0"), ("r0", "a1"), ("r1", "a2"), ("r2", "y")]):
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [y], name=f"c{k}", pads=[1, 1, 1, 1]))
        if k < 3:
            nodes.append(helper.make_node("Relu", [y], [f"r{k}"]))
    graph = helper.make_graph(nodes, "g", [_vi("x")], [_vi("y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = model.training_info.add()
    step = helper.make_node("Mul", ["w1", "half"], ["w1_new"])
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    info.algorithm.CopyFrom(
        helper.make_graph([step], "step", [], [_vi("w1_new")], [half])
    )  # fmt: skip
    info.update_binding.add(key="w1", value="w1_new")
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(
    "extra", [[], ["--precision", "int8"], ["--mode", "widen"]], ids=["reduce", "int8", "widen"]
)
def test_weights_that_training_info_updates_are_kept(tmp_path, extra):
    """c1's weight was dropped (replaced by SK stages) though training_info still updates it:
    a dangling binding. c1 is kept with its reason, and w1 stays as it was."""
    model = _trained_chain()
    src = _save(tmp_path, model)
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep, *extra)
    assert proc.returncode == 0, proc.stderr
    written = onnx.load(out)
    w1 = next(i for i in written.graph.initializer if i.name == "w1")
    assert w1 == model.graph.initializer[1]
    c1 = next(n for n in written.graph.node if n.name == "c1")
    assert c1.op_type == "Conv" and c1.input[1] == "w1"
    assert written.training_info == model.training_info
    doc = json.loads(rep.read_text())
    if "--mode" in extra:  # the space between c2 and c3 widens
        assert doc["message"].startswith("widened 1 of"), doc["message"]
    else:
        rows = {c["name"]: c for c in doc["convs"]}
        assert rows["c1"]["reason"] == "weights are updated by the model's training_info"
        assert rows["c2"]["design"] is not None
        if extra:
            assert rows["c1"]["precision"] == "fp32" and rows["c2"]["precision"] == "int8"


def _names_taken_elsewhere(where: str) -> onnx.ModelProto:
    """x → Conv 'c0' → a, and the tensor names onnx-sk writes for c0's stages
    (``c0/sk/0_pw/out`` …) already taken inside an If branch or by stale value_info entries."""
    taken = [f"c0/sk/{stage}/out" for stage in ("0_pw", "1_dw", "0_dw", "1_pw", "0_gc")]
    w = numpy_helper.from_array(W, "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="c0", pads=[1, 1, 1, 1])]
    inputs, outputs, value_info = [_vi("x")], [_vi("a")], []
    if where == "subgraph":
        chain = ["x", *taken]
        body = [helper.make_node("Relu", [i], [o]) for i, o in zip(chain, chain[1:], strict=False)]
        then_g = helper.make_graph(body, "then", [], [_vi(taken[-1])])
        else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [_vi("e")])
        nodes.append(
            helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g)
        )  # fmt: skip
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
        outputs.append(_vi("z"))
    else:
        value_info = [helper.make_tensor_value_info(t, TensorProto.INT64, [3]) for t in taken]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [w], value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("where", ["subgraph", "value_info"])
def test_new_names_avoid_names_taken_in_subgraphs_and_value_info(tmp_path, where):
    """The stages' tensors took those names: SSA broken across the If (checker: 'used as output
    names multiple times'), or the stale value_info gave them type int64; exit 1 both ways."""
    src = _save(tmp_path, _names_taken_elsewhere(where))
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", src, out, "--include-first")
    assert proc.returncode == 0, proc.stderr
    onnx.checker.check_model(str(out), full_check=True)


@pytest.mark.parametrize("design", ["pwg-dw-pwg", "pw-dw-pw", "dw-pw"])
def test_an_all_zero_kernel_is_fitted_exactly(tmp_path, design):
    """The three-stage fit (CP-ALS) of a zero kernel gave NaN weights, written with exit 0 (the
    dense twin held the same NaN, so verification agreed). Zero is exactly representable."""
    bias = np.arange(8, dtype=np.float32)
    model = conv_model(np.zeros_like(W), bias, attrs={"pads": [1, 1, 1, 1]}, dims=(1, None, 8, 8))
    src, out = _save(tmp_path, model), tmp_path / "out.onnx"
    proc = run_cli("optimize", src, out, "--include-first", "--design", design)
    assert proc.returncode == 0, proc.stderr
    written = onnx.load(out)
    assert len(written.graph.node) > 1  # replaced
    assert all(np.isfinite(numpy_helper.to_array(i)).all() for i in written.graph.initializer)
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 8)).astype(np.float32)
    (y,) = session(written).run(None, {"x": x})
    np.testing.assert_allclose(y, np.broadcast_to(bias[None, :, None, None], y.shape), atol=1e-6)


def _symbolic_channels(convs: int = 2) -> onnx.ModelProto:
    """x [N, C, 16, 16] (C symbolic) → c0 → Relu → c1 … → y: 8 channels, 3×3, pads 1."""
    rng = np.random.default_rng(6)
    inits, nodes, t = [], [], "x"
    for k in range(convs):
        name = f"w{k}"
        inits.append(numpy_helper.from_array(rng.standard_normal(W.shape).astype(np.float32), name))
        out = "y" if k == convs - 1 else f"a{k}"
        nodes.append(helper.make_node("Conv", [t, name], [out], name=f"c{k}", pads=[1, 1, 1, 1]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{k}"]))
            t = f"r{k}"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(
    "extra",
    [[], ["--precision", "auto", "--objective", "latency", "--threads", "1"], ["--mode", "widen"]],
    ids=["reduce", "latency", "widen"],
)
def test_a_symbolic_channel_dim_is_the_one_the_first_conv_reads(tmp_path, extra):
    """Verification fed C = 224 (exit 1, 'give --input-shape'); the latency objective asked for
    an --input-shape. c0's weight [8, 8, 3, 3] says C = 8; the written input keeps 'C'."""
    written, doc = _optimized(tmp_path, _symbolic_channels(), *extra)
    assert written.graph.input[0].type.tensor_type.shape.dim[1].dim_param == "C"
    if "--mode" in extra:
        assert doc["message"].startswith("widened 1 of"), doc["message"]
    elif "--objective" not in extra:
        assert doc["totals"]["replaced"] == 2
    x = np.random.default_rng(1).standard_normal((2, 8, 16, 16)).astype(np.float32)
    assert session(written).run(None, {"x": x})[0].shape == (2, 8, 16, 16)


def test_analyze_counts_macs_at_the_implied_channel_count(tmp_path):
    src = _save(tmp_path, _symbolic_channels(1))
    proc = run_cli("analyze", src, "--json")
    assert proc.returncode == 0, proc.stderr
    totals = json.loads(proc.stdout)["totals"]
    assert totals["conv_macs"] == 8 * 8 * 9 * 16 * 16
    assert totals["needs_input_shape"] == [] and totals["per_sample"] == ["x"]


def _float64_conv() -> onnx.ModelProto:
    """x (float64) → Conv 8→8 3×3 (float64 weights) → y: valid ONNX, but ONNX Runtime has no
    float64 Conv kernel."""
    w = numpy_helper.from_array(W.astype(np.float64), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 8, 8, 8])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_model_onnx_runtime_cannot_run_says_so_without_blaming_the_shapes(tmp_path):
    """widen ran the original for its reference: exit 1 with ORT's NOT_IMPLEMENTED and the hint
    '(give --input-shape)', which cannot help: ORT has no kernel for the model."""
    src = _save(tmp_path, _float64_conv())
    before = digest(src)
    assert_clean_error(
        run_cli("optimize", src, tmp_path / "out.onnx", "--include-first", "--mode", "widen"),
        "ONNX Runtime cannot run the original model: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : "
        "Could not find an implementation for Conv(11) node with name 'c'",
    )
    assert digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def _contradicting_value_info() -> onnx.ModelProto:
    """x → c0 → a → Relu → r → c1 → y (8 channels, 8×8), whose value_info says a is [1, 5, 3, 3]
    and r [2, 8, 9, 9]: the checker without shape inference accepts it, ONNX Runtime runs it
    (an element type contradicting it would stop ONNX Runtime loading the file)."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.standard_normal(W.shape).astype(np.float32), n)
        for n in ("w0", "w1")
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="c0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["y"], name="c1", pads=[1, 1, 1, 1]),
    ]
    value_info = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 5, 3, 3]),
        helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 8, 9, 9]),
    ]
    graph = helper.make_graph(nodes, "g", [_vi("x")], [_vi("y")], inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(
    "extra", [[], ["--precision", "int8"], ["--mode", "widen"]], ids=["reduce", "int8", "widen"]
)
def test_value_info_contradicting_the_shapes_is_dropped(tmp_path, extra):
    """The written model failed the full checker ('Inferred shape and existing shape differ'),
    exit 1; widen simulated r at the stale [2, 8, 9, 9] and was refused."""
    written, _ = _optimized(tmp_path, _contradicting_value_info(), *extra)
    assert {"a", "r"}.isdisjoint(vi.name for vi in written.graph.value_info)
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)
    assert session(written).run(None, {"x": x})[0].shape == (1, 8, 8, 8)


def test_the_callers_model_keeps_its_value_info():
    model = _contradicting_value_info()
    before = model.SerializeToString()
    result, _ = onnx_sk.optimize(model, include_first=True)
    assert model.SerializeToString() == before
    assert onnx.checker.check_model(result, full_check=True) is None


def _conv_in_a_local_function() -> onnx.ModelProto:
    """x → Conv c0 → a → MyConv (a model-local function whose body is one Conv) → y."""
    fn = helper.make_function(
        "local", "MyConv", ["X", "Wt"], ["Y"],
        [helper.make_node("Conv", ["X", "Wt"], ["Y"], pads=[1, 1, 1, 1])],
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="c0", pads=[1, 1, 1, 1]),
        helper.make_node("MyConv", ["a", "w2"], ["y"], domain="local", name="fcall"),
    ]
    inits = [numpy_helper.from_array(W, "w"), numpy_helper.from_array(W, "w2")]
    graph = helper.make_graph(nodes, "g", [_vi("x")], [_vi("y")], inits)
    model = helper.make_model(
        graph, functions=[fn],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )  # fmt: skip
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_conv_inside_a_local_function_is_counted_and_kept(tmp_path):
    """The report said 'replaced 1 of 1 convs' on a model with two: the function's conv was
    not listed at all."""
    src = _save(tmp_path, _conv_in_a_local_function())
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())
    assert doc["message"] == "replaced 1 of 2 convs"
    rows = {c["name"]: (c["design"], c["reason"]) for c in doc["convs"]}
    assert rows["Y"] == (None, "inside local function 'MyConv'")
    assert rows["c0"][0] is not None
    written = onnx.load(out)
    assert written.functions[0] == _conv_in_a_local_function().functions[0]
    proc = run_cli("analyze", src, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [c["reason"] for c in json.loads(proc.stdout)["convs"]][1] == (
        "inside local function 'MyConv'"
    )
