"""--precision auto in context: conv neighbours, paired whole-model timing, the greedy revision."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.cli.optimize import precision_line
from onnx_sk.graph.neighbours import MAX_HOPS, conv_neighbours
from onnx_sk.graph.qdq import activation_tensors, with_int8_joins
from onnx_sk.passes.int8_context import ALL, MAX_TRIALS, revise, with_qdq
from onnx_sk.passes.quantize import _check
from onnx_sk.runtime.paired import PairedTimer, one_sample
from onnx_sk.runtime.quantize import activation_ranges, optimized_ops
from onnx_sk.runtime.session import session


def _conv(x: str, w: str, y: str, name: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [y], name, pads=[1, 1, 1, 1])


def _chain_model(c: int = 8, hw: int = 16) -> onnx.ModelProto:
    """x → A → Relu → MaxPool → B; Add(B, pool) → C; x → E (another conv) → Relu → D."""
    rng = np.random.default_rng(0)
    names = "ABCDE"
    inits = [
        numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.2).astype(np.float32), n)
        for n in (f"w{k}" for k in names)
    ]
    nodes = [
        _conv("x", "wA", "a", "A"),
        helper.make_node("Relu", ["a"], ["ra"], "relu_a"),
        helper.make_node("MaxPool", ["ra"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        _conv("p", "wB", "b", "B"),
        helper.make_node("Add", ["b", "p"], ["s"], "add"),
        _conv("s", "wC", "y", "C"),
        _conv("x", "wE", "e", "E"),
        helper.make_node("Relu", ["e"], ["re"], "relu_e"),
        _conv("re", "wD", "z", "D"),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_neighbours_through_relu_pool_and_add():
    model = _chain_model()
    units = {"a": ["a"], "b": ["b"], "y": ["y"], "z": ["z"]}  # E is no unit: a barrier
    near = conv_neighbours(model.graph, units)
    assert near == {"a": {"b", "y"}, "b": {"a", "y"}, "y": {"a", "b"}, "z": set()}


def test_neighbours_stop_after_max_hops_and_ignore_their_own_nodes():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32), "w")
    nodes = [_conv("x", "w", "t0", "F")]
    for k in range(MAX_HOPS + 1):
        nodes.append(helper.make_node("Relu", [f"t{k}"], [f"t{k + 1}"], f"relu{k}"))
    nodes.append(_conv(f"t{MAX_HOPS + 1}", "w", "g", "G"))
    # a two-node unit (conv then a Reshape standing for a shuffle) reading the far conv
    nodes += [
        _conv("g", "w", "h0", "H"),
        helper.make_node("Identity", ["h0"], ["h"], "shuffle"),
    ]
    graph = helper.make_graph(
        nodes, "far",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)], [w],
    )  # fmt: skip
    units = {"t0": ["t0"], "g": ["g"], "h": ["h0", "h"]}
    near = conv_neighbours(graph, units)
    assert near == {"t0": set(), "g": {"h"}, "h": {"g"}}
    nodes.insert(1, helper.make_node("Relu", ["t0"], [f"t{MAX_HOPS + 1}"], "short"))
    del graph.node[:]
    graph.node.extend(n for n in nodes if n.name != f"relu{MAX_HOPS}")
    assert conv_neighbours(graph, units)["t0"] == {"g"}


def test_one_sample_cuts_only_a_free_batch():
    model = _chain_model()
    feeds = {"x": np.zeros((4, 8, 16, 16), np.float32)}
    assert one_sample(model, feeds)["x"].shape == (1, 8, 16, 16)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    assert one_sample(model, feeds)["x"].shape == (4, 8, 16, 16)
    assert one_sample(model, {"s": np.float32(2.0)})["s"].shape == ()  # a scalar input


def _ranges(model: onnx.ModelProto, units: dict[str, list[str]], x: np.ndarray):
    nodes = [t for ts in units.values() for t in ts]
    tensors = activation_tensors(model.graph, with_int8_joins(model.graph, nodes))
    return activation_ranges(model, tensors, iter([{"x": x}]))[0]


def test_revise_tries_each_boundary_once_and_keeps_what_it_reports():
    model = _chain_model()
    x = np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)
    units = {"a": ["a"], "b": ["b"], "y": ["y"], "z": ["z"]}
    ranges = _ranges(model, units, x)
    timer = PairedTimer("CPUExecutionProvider", 1, {"x": x}, budget_s=0.05)
    names = {"a": "A", "b": "B", "y": "C", "z": "D"}
    start = {"b"}
    int8, trials = revise(model, units, set(start), ranges, timer, names)
    assert trials[0]["conv"] == ALL and trials[0]["to"] == "int8"  # every conv int8 first
    tried = [t["conv"] for t in trials[1:]]
    assert len(tried) == len(set(tried)) <= MAX_TRIALS
    if not trials[0]["kept"]:
        assert "D" not in tried  # no neighbour of the other precision, ever
        assert tried[0] == "B"  # the most mixed neighbours first (A and C are fp32)
    else:  # all int8: no conv boundary left; only the units at the graph's edges are tried
        assert set(tried) <= {"A", "C", "D"}
    replay = set(units) if trials[0]["kept"] else set(start)
    by_name = {n: c for c, n in names.items()}
    for t in trials[1:]:
        if t["kept"]:
            replay ^= {by_name[t["conv"]]}
    assert int8 == replay
    for t in trials:
        assert t["to"] in ("int8", "fp32") and t["speedup"] > 0
        assert t["kept"] == (t["speedup"] >= 1.03)
    # the revised model is what ORT runs with its int8 kernels: one per int8 conv
    written = with_qdq(model, units, int8, ranges)
    assert optimized_ops(written)["QLinearConv"] == len(int8)
    want = session(model).run(None, {"x": x})
    got = session(written, opt_level="all").run(None, {"x": x})
    for a, b in zip(want, got, strict=True):
        cos = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos > 0.99


def _three_convs():
    """The chain model with A, B, C as units, their ranges, and a quick timer."""
    model = _chain_model()
    x = np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)
    units = {"a": ["a"], "b": ["b"], "y": ["y"]}
    timer = PairedTimer("CPUExecutionProvider", 1, {"x": x}, budget_s=0.05)
    return model, units, _ranges(model, units, x), timer


def test_revise_moves_nothing_to_int8_that_is_not_allowed():
    model, units, ranges, timer = _three_convs()
    start = {"a", "y"}  # B, fp32 between two int8 convs, may be tried: to int8, refused
    int8, trials = revise(model, units, set(start), ranges, timer, {}, allowed=lambda c: False)
    assert int8 <= start
    for t in trials:
        if t["to"] == "int8":
            assert t == {"conv": t["conv"], "to": "int8", "speedup": None, "kept": False,
                         "why": "over --max-error"}  # fmt: skip
    assert any(t["to"] == "int8" for t in trials) or int8 != start  # something was tried


def test_optimize_auto_reports_the_context_trials(tmp_path):
    """End to end: each trial's conv ends in the precision the trial says it kept."""
    model = _chain_model(c=16, hw=24)
    src = tmp_path / "chain.onnx"
    onnx.save(model, src)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(2).standard_normal((8, 16, 24, 24)).astype(np.float32))
    _, report = onnx_sk.optimize(
        src, tmp_path / "out.onnx", objective="latency", precision="auto", calibration=cal,
        lut=tmp_path / "lut.json",
    )  # fmt: skip
    p = report.precision
    assert isinstance(p["context"], list)
    final = {c["name"]: c["precision"] for c in report.convs}
    stages = p.get("int8_stages", {})

    def precision_of(unit: str) -> str:  # a conv, or one stage of an SK conv ("<conv>/sk/…")
        conv = unit if unit in final else unit.split("/sk/")[0]
        if final[conv] == "mixed":
            return "int8" if unit in stages[conv] else "fp32"
        return final[conv]

    for t in p["context"]:
        if t["conv"] != ALL:
            assert (precision_of(t["conv"]) == t["to"]) == t["kept"]
    with_int8 = sorted(n for n, v in final.items() if v in ("int8", "mixed"))
    assert sorted(p["int8_convs"]) == with_int8
    assert sorted(stages) == sorted(n for n, v in final.items() if v == "mixed")


def test_precision_line_names_the_kept_flips():
    p = {
        "precision": "auto",
        "int8_convs": ["A", "B"],
        "context": [
            {"conv": "A", "to": "int8", "speedup": 1.4, "kept": True},
            {"conv": "C", "to": "int8", "speedup": 0.98, "kept": False},
        ],
    }
    line = precision_line(p)
    assert line == "precision auto: 2 int8 convs; in context: 1 of 2 flips kept (A int8 1.40×)"
    p["plan"] = {"convs_differing": 3, "repairs": [], "speedup": 1.1689, "taken": True}
    assert precision_line(p) == (
        "precision auto: 2 int8 convs; the int8 plan ran 1.17× the fp32-context plan (taken); "
        "in context: 1 of 2 flips kept (A int8 1.40×)"
    )
    p["plan"] = {"convs_differing": 3, "taken": False, "skipped": "P cannot run it: no"}
    assert "; the int8 plan was not timed (P cannot run it: no); in context" in precision_line(p)


def test_revise_keeps_no_int8_flip_that_fails_the_tolerance():
    model, units, ranges, timer = _three_convs()
    int8, trials = revise(model, units, {"b"}, ranges, timer, {}, faithful=lambda sess: False)
    assert int8 <= {"b"}  # only flips to fp32 may have stayed
    assert not any(t["kept"] for t in trials if t["to"] == "int8")


def test_check_counts_convs_onnx_runtime_quantizes_itself():
    """An fp32 conv that reads a DequantizeLinear and writes a QuantizeLinear (between two int8
    convs) is run by ONNX Runtime as an int8 kernel with weights it quantizes itself: the check
    counts it, and the CLI line says so."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), w)
        for w in ("w0", "w1", "w2")
    ]
    nodes = [_conv("x", "w0", "a", "A"), _conv("a", "w1", "b", "B"), _conv("b", "w2", "y", "C")]
    graph = helper.make_graph(
        nodes, "three", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    units = {"a": ["a"], "b": ["b"], "y": ["y"]}
    written = with_qdq(model, units, {"a", "y"}, _ranges(model, units, x))
    want = session(model).run(None, {"x": x})
    check = _check(written, {"x": x}, want, 2, {})
    assert check["int8_kernels"] == 3 and check["ort_int8_unwritten"] == 1
    line = precision_line({"precision": "auto", "int8_convs": ["A", "C"], "check": check})
    assert "runs 3 int8 conv kernels (1 of them written in fp32 between int8 convs" in line
